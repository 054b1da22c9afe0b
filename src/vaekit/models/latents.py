"""The latent part: what a preset's encoder output becomes, the posterior q(z|x). One protocol, each member an entry
of LATENTS; the model holds its latent as a module (so a member may own parameters and state, a codebook say) and
never asks which one it is:

  params_per_dim   how many numbers the encoder gives per code dimension (the encoder is built that wide)
  has_density      whether q(z|x) has a density (then a likelihood bound, the IS-NLL and the KL exist)
  outputs          the names of what an exported encoder emits (the posterior's `exported()`, in that order)
  forward(params)  the posterior for a batch: sample, mean, log_prob (where it has a density), kl against a prior
                   (`posterior.divergence`), scale (its spread per dimension, or None), exported

  gaussian   q(z|x) = N(mu, diag sigma^2), log sigma^2 clamped to the config's range: the VAE's
  point      q(z|x) = delta(z - E(x)): the plain AE's, no density

To add a latent: a posterior (posterior.py's contract), a module here, an entry in LATENTS; a preset names it.
"""

from __future__ import annotations

from torch import Tensor, nn

from vaekit.config import ModelConfig
from vaekit.models.posterior import DiagonalGaussian, PointMass


class GaussianLatent(nn.Module):
    """The encoder gives mu and log sigma^2 per dimension; nothing learned here."""

    params_per_dim = 2
    has_density = True
    outputs = ("mean", "logvar")

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.logvar_min, self.logvar_max = config.logvar_min, config.logvar_max

    def forward(self, params: Tensor) -> DiagonalGaussian:
        return DiagonalGaussian.from_params(params, logvar_min=self.logvar_min, logvar_max=self.logvar_max)


class PointLatent(nn.Module):
    """The encoder gives the code itself."""

    params_per_dim = 1
    has_density = False
    outputs = ("code",)

    def __init__(self, config: ModelConfig):
        super().__init__()

    def forward(self, params: Tensor) -> PointMass:
        return PointMass(params)


LATENTS: dict[str, type[nn.Module]] = {"gaussian": GaussianLatent, "point": PointLatent}
