"""Models: networks, the posterior q(z|x), decoder likelihoods, and the AE / VAE built from them."""

from vaekit.models.autoencoder import AE, MODELS, VAE, Loss, build_model
from vaekit.models.posterior import DiagonalGaussian

__all__ = ["AE", "VAE", "Loss", "DiagonalGaussian", "MODELS", "build_model"]
