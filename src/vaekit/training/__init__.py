"""Training: the step, the loop, checkpoints that resume exactly, and DDP under torchrun."""

from vaekit.training.step import train_step
from vaekit.training.trainer import train

__all__ = ["train", "train_step"]
