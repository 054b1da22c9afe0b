"""vaekit: train, evaluate and compare Variational AutoEncoders and plain AutoEncoders on images."""

from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaekit.errors import VaekitError
from vaekit.models import AE, VAE, DiagonalGaussian, Loss, build_model

__version__ = "0.1.0"


def load(path: str, map_location: str = "cpu") -> AE:
    """Load a saved model or a run folder's best checkpoint (an AE or a VAE)."""
    return AE.from_pretrained(path, map_location=map_location)


__all__ = ["AE", "VAE", "DiagonalGaussian", "Loss", "build_model", "load", "ModelConfig", "DataConfig",
           "TrainConfig", "RunConfig", "VaekitError", "__version__"]
