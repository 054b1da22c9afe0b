"""Data: image sets (in memory or on disk), their splits, and float batches for training."""

from vaekit.data.loader import Batches, epoch_batches
from vaekit.data.sets import Dataset, FileImages, ImageSet, TensorImages
from vaekit.data.sources import SOURCES, load_dataset

__all__ = ["Batches", "Dataset", "FileImages", "ImageSet", "TensorImages", "SOURCES", "epoch_batches",
           "load_dataset"]
