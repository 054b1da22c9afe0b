"""The VAE's encoder output: a distribution q(z|x) = N(mu, diag sigma^2), not a point.

This is the one place where z = mu + sigma * eps is written, and where the KL to the prior
N(0, I) is computed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)


class DiagonalGaussian:
    """q(z|x) = N(mu, diag(exp(logvar))) for a batch: mu and logvar have shape (B, D)."""

    def __init__(self, mu: Tensor, logvar: Tensor, logvar_min: float = -30.0, logvar_max: float = 20.0):
        self.mu = mu
        # Clamped so that exp(logvar) neither underflows to 0 (log_prob = inf) nor overflows.
        self.logvar = logvar.clamp(logvar_min, logvar_max)
        self.sigma = torch.exp(0.5 * self.logvar)

    @classmethod
    def from_params(cls, params: Tensor, **clamp: float) -> DiagonalGaussian:
        """Split an encoder output of width 2D into (mu, logvar)."""
        mu, logvar = params.chunk(2, dim=-1)
        return cls(mu, logvar, **clamp)

    @property
    def mean(self) -> Tensor:
        return self.mu

    def sample(self, n: int | None = None) -> Tensor:
        """Reparameterized draw z = mu + sigma * eps, eps ~ N(0, I): the randomness sits in eps,
        so gradients flow to mu and sigma. With `n`, returns n draws per row: shape (n, B, D)."""
        shape = self.mu.shape if n is None else (n, *self.mu.shape)
        eps = torch.randn(shape, dtype=self.mu.dtype, device=self.mu.device)
        return self.mu + self.sigma * eps

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z|x) summed over latent dimensions; z may carry leading sample dimensions."""
        return -0.5 * (((z - self.mu) / self.sigma) ** 2 + self.logvar + LOG_2PI).sum(-1)

    def kl_per_dim(self) -> Tensor:
        """KL(q || N(0, I)) per latent dimension, closed form: 0.5 (mu^2 + sigma^2 - 1 - log sigma^2)."""
        return 0.5 * (self.mu.pow(2) + self.logvar.exp() - 1.0 - self.logvar)

    def kl(self) -> Tensor:
        """KL(q(z|x) || N(0, I)) in nats, one value per row."""
        return self.kl_per_dim().sum(-1)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log p(z) under the prior N(0, I), summed over the last dimension."""
    return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)
