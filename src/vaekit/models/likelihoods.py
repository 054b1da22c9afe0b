"""Decoder likelihoods p(x|z): the reconstruction term of both the AE and the VAE.

The decoder network outputs one tensor of `params_per_pixel` numbers per pixel value (its channels times the image's:
the decoder is built that wide); a likelihood turns it into a negative log-likelihood in nats per image (summed over
pixels) and into a mean image. A likelihood that needs more per pixel (a mixture's weights, means and scales) says
so, and the decoder follows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaekit.config import ModelConfig

IMAGE_DIMS = (-3, -2, -1)


class BernoulliLikelihood(nn.Module):
    """p(x|z) = Bernoulli(sigmoid(logits)) per pixel, for grey levels in [0, 1].

    Uses BCE-with-logits, which is stable where sigmoid + log would give log(0)."""

    params_per_pixel = 1  # the logit

    @classmethod
    def from_config(cls, config: ModelConfig) -> BernoulliLikelihood:
        return cls()

    def nll(self, x: Tensor, logits: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(IMAGE_DIMS)

    def mean(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits)


class GaussianLikelihood(nn.Module):
    """p(x|z) = N(decoder output, sigma^2) per pixel, sigma fixed or learned (one shared scale).

    A learned shared sigma balances reconstruction against the KL by itself (Rybkin et al., 2021)."""

    params_per_pixel = 1  # the mean (sigma is shared, not per pixel)

    def __init__(self, scale: float = 0.0):
        super().__init__()
        if scale > 0:
            self.register_buffer("log_scale", torch.tensor(math.log(scale)))
        else:
            self.log_scale = nn.Parameter(torch.zeros(()))

    @classmethod
    def from_config(cls, config: ModelConfig) -> GaussianLikelihood:
        return cls(config.gaussian_scale)

    def nll(self, x: Tensor, mean: Tensor) -> Tensor:
        log_scale = self.log_scale.clamp(min=-7.0)  # sigma >= 1e-3: no infinite density on flat pixels
        z = (x - mean) * torch.exp(-log_scale)
        return (0.5 * z.pow(2) + log_scale + 0.5 * math.log(2 * math.pi)).sum(IMAGE_DIMS)

    def mean(self, mean: Tensor) -> Tensor:
        return mean


LIKELIHOODS: dict[str, type[BernoulliLikelihood] | type[GaussianLikelihood]] = {
    "bernoulli": BernoulliLikelihood,
    "gaussian": GaussianLikelihood,
}
