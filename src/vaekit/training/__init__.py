"""Training: the loop, checkpoints that resume exactly, and DDP under torchrun."""

from vaekit.training.trainer import evaluate_loss, train

__all__ = ["train", "evaluate_loss"]
