"""The encoder's output: a posterior q(z|x) over codes, never a bare tensor.

Two families, one contract (mean, sample, log_prob, kl), and a point mass on quantized codes:
  DiagonalGaussian  q(z|x) = N(mu, diag sigma^2): the VAE's. This is the one place where
                    z = mu + sigma * eps is written.
  PointMass         q(z|x) = delta(z - E(x)): the plain AE's. Its mean and its samples are the code
                    itself, its KL term is zero (it is not part of the AE's objective), and it has no
                    density, so no likelihood bound exists for it.

The KL takes the prior as an argument: closed form against N(0, I), Monte Carlo against any other prior; the
choice between them is made in one place, `divergence`. Each posterior also says what an exported encoder emits
(`exported`, named by its latent part, latents.py) and its spread per dimension where it has one (`scale`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

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
        """KL(q(z|x) || p(z)) in nats, one value per row: against N(0, I) when `prior` is None; see `divergence`."""
        return self.kl_per_dim().sum(-1) if prior is None else divergence(self, prior, z)[0]

    @property
    def scale(self) -> Tensor:
        """sigma per dimension: how far a draw goes from the mean."""
        return self.sigma

    def exported(self) -> tuple[Tensor, ...]:
        """What an exported encoder emits: the mean and the log-variance (latents.py names them)."""
        return self.mu, self.logvar


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

    scale = None  # a point mass does not spread: there is nothing to draw

    def exported(self) -> tuple[Tensor, ...]:
        """What an exported encoder emits: the code."""
        return (self.code,)


class Quantized(PointMass):
    """q(z|x) = delta(z - z_q(x)): a code quantized to one of finitely many values per token (vqvae, fsq), with the
    index of each token's code, (B, tokens), and the quantizer's own training loss (a commitment loss; zero where it
    has none) as `penalty`, a scalar the objective adds."""

    def __init__(self, code: Tensor, indices: Tensor, penalty: Tensor):
        super().__init__(code)
        self.indices, self.penalty = indices, penalty


def divergence(q: Any, prior: Prior, z: Tensor | None = None, estimate: Tensor | None = None
               ) -> tuple[Tensor, Tensor | None]:
    """KL(q(z|x) || p(z)) in nats per image, and per latent dimension where the prior has a closed form (the terms
    free bits floors; None otherwise). The one place that chooses: the closed form where there is one (N(0, I)),
    else a Monte Carlo estimate: `estimate` where the caller has one (IWAE's, from its k draws), else
    log q(z|x) - log p(z) at `z` (draws from q; one fresh draw if None)."""
    per_dim = prior.closed_form_kl(q)
    if per_dim is not None:
        return per_dim.sum(-1), per_dim
    if estimate is not None:
        return estimate, None
    z = q.sample() if z is None else z
    return q.log_prob(z) - prior.log_prob(z), None

