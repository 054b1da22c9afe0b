"""Models: networks, posteriors q(z|x), priors p(z), objectives and likelihoods, composed into one autoencoder."""

from vaekit.models.autoencoder import Autoencoder, build_model
from vaekit.models.objectives import Loss
from vaekit.models.posterior import DiagonalGaussian, PointMass
from vaekit.models.presets import PRESETS
from vaekit.models.priors import GaussianMixture, StandardNormal
from vaekit.models.saving import load_model

__all__ = ["Autoencoder", "build_model", "load_model", "Loss", "DiagonalGaussian", "PointMass", "PRESETS",
           "GaussianMixture", "StandardNormal"]
