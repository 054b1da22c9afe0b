"""The encoder's output: a posterior q(z|x) over codes, never a bare tensor.

Two families, one contract (mean, sample, log_prob, kl):
  DiagonalGaussian  q(z|x) = N(mu, diag sigma^2): the VAE's. This is the one place where
                    z = mu + sigma * eps is written.
  PointMass         q(z|x) = delta(z - E(x)): the plain AE's. Its mean and its samples are the code
                    itself, its KL term is zero (it is not part of the AE's objective), and it has no
                    density, so no likelihood bound exists for it.

The KL takes the prior as an argument: closed form against N(0, I), Monte Carlo against any other prior.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from vaekit.models.priors import Prior

LOG_2PI = math.log(2 * math.pi)


def drawn_by(generator: torch.Generator | None) -> dict[str, torch.Generator]:
    """`generator=` for torch.randn and kin, left out when None: torch.compile refuses generator=None."""
    return {"generator": generator} if generator is not None else {}


class DiagonalGaussian:
    """q(z|x) = N(mu, diag(exp(logvar))) for a batch: mu and logvar have shape (B, D)."""

    has_density = True
    params_per_dim = 2  # the encoder outputs mu and log sigma^2 for each latent dimension

    def __init__(self, mu: Tensor, logvar: Tensor, logvar_min: float = -30.0, logvar_max: float = 20.0):
        self.mu = mu
        # Clamped so that exp(logvar) neither underflows to 0 (log_prob = inf) nor overflows.
        self.logvar = logvar.clamp(logvar_min, logvar_max)
        self.sigma = torch.exp(0.5 * self.logvar)

    @classmethod
    def from_params(cls, params: Tensor, logvar_min: float = -30.0, logvar_max: float = 20.0) -> DiagonalGaussian:
        """Split an encoder output of width 2D into (mu, logvar)."""
        mu, logvar = params.chunk(2, dim=-1)
        return cls(mu, logvar, logvar_min, logvar_max)

    @property
    def mean(self) -> Tensor:
        return self.mu

    def sample(self, n: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Reparameterized draw z = mu + sigma * eps, eps ~ N(0, I): the randomness sits in eps,
        so gradients flow to mu and sigma. With `n`, returns n draws per row: shape (n, B, D)."""
        shape = self.mu.shape if n is None else (n, *self.mu.shape)
        eps = torch.randn(shape, dtype=self.mu.dtype, device=self.mu.device, **drawn_by(generator))
        return self.mu + self.sigma * eps

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z|x) summed over latent dimensions; z may carry leading sample dimensions."""
        return -0.5 * (((z - self.mu) / self.sigma) ** 2 + self.logvar + LOG_2PI).sum(-1)

    def kl_per_dim(self) -> Tensor:
        """KL(q || N(0, I)) per latent dimension, closed form: 0.5 (mu^2 + sigma^2 - 1 - log sigma^2)."""
        return 0.5 * (self.mu.pow(2) + self.logvar.exp() - 1.0 - self.logvar)

    def kl(self, prior: Prior | None = None, z: Tensor | None = None) -> Tensor:
        """KL(q(z|x) || p(z)) in nats, one value per row (per draw, if `z` carries sample dimensions): in closed
        form where the prior has one (N(0, I), also when `prior` is None), otherwise the Monte Carlo estimate
        log q(z|x) - log p(z) at `z` (draws from q; one fresh draw if None)."""
        closed = self.kl_per_dim() if prior is None else prior.closed_form_kl(self)
        if closed is not None:
            return closed.sum(-1)
        z = self.sample() if z is None else z
        return self.log_prob(z) - prior.log_prob(z)


class PointMass:
    """q(z|x) = delta(z - code): the plain autoencoder's deterministic code, shape (B, D)."""

    has_density = False
    params_per_dim = 1

    def __init__(self, code: Tensor):
        self.code = code

    @classmethod
    def from_params(cls, params: Tensor, **_: float) -> PointMass:
        return cls(params)

    @property
    def mean(self) -> Tensor:
        return self.code

    def sample(self, n: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """The code itself (n copies with `n`): a point mass has nothing to draw."""
        return self.code if n is None else self.code.expand(n, *self.code.shape)

    def log_prob(self, z: Tensor) -> Tensor:
        raise ValueError("a point mass has no density: the plain AE defines no likelihood bound")

    def kl_per_dim(self) -> Tensor:
        """Zero: the AE's objective has no KL term (its true KL to any density would be infinite)."""
        return torch.zeros_like(self.code)

    def kl(self, prior: Prior | None = None, z: Tensor | None = None) -> Tensor:
        return torch.zeros(self.code.shape[:-1], dtype=self.code.dtype, device=self.code.device)

