"""vaekit: train, evaluate and compare Variational AutoEncoders and plain AutoEncoders on images."""

from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaekit.errors import VaekitError
from vaekit.models import PRESETS, Autoencoder, DiagonalGaussian, Loss, PointMass, build_model, load_model

__version__ = "0.2.0"


def load(path: str, map_location: str = "cpu") -> Autoencoder:
    """Load a saved model or a run folder's best checkpoint (any preset: AE, VAE, ...)."""
    return load_model(path, map_location=map_location)


__all__ = ["Autoencoder", "PRESETS", "DiagonalGaussian", "PointMass", "Loss", "build_model", "load", "load_model",
           "ModelConfig", "DataConfig", "TrainConfig", "RunConfig", "VaekitError", "__version__"]
