"""vaekit: train, evaluate and compare Variational AutoEncoders and plain AutoEncoders on images.

The names below load on first use (PEP 562), so `import vaekit` and `vaekit --help` do not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_WHERE = {
    "DataConfig": "vaekit.config", "ModelConfig": "vaekit.config", "RunConfig": "vaekit.config",
    "TrainConfig": "vaekit.config", "VaekitError": "vaekit.errors",
    **dict.fromkeys(("Autoencoder", "PRESETS", "DiagonalGaussian", "PointMass", "Loss", "build_model", "load_model"),
                    "vaekit.models"),
}


def load(path: str, map_location: str = "cpu") -> Any:
    """Load a saved model or a run folder's best checkpoint (any preset: AE, VAE, ...) as an Autoencoder."""
    from vaekit.models import load_model

    return load_model(path, map_location=map_location)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'vaekit' has no attribute {name!r}")


__all__ = [*_WHERE, "load", "__version__"]
