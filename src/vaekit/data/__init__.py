"""Data: image sets (in memory or on disk), their splits, and float batches for training."""

from vaekit.data.loader import Batches, epoch_batches, map_batches
from vaekit.data.sets import Dataset, FileImages, ImageSet, TensorImages, evaluation_view
from vaekit.data.sources import SOURCES, data_paths, load_dataset

__all__ = ["Batches", "Dataset", "FileImages", "ImageSet", "TensorImages", "SOURCES", "data_paths",
           "epoch_batches", "evaluation_view", "load_dataset", "map_batches"]
