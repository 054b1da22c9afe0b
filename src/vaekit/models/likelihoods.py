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


class Likelihood(nn.Module):
    """The protocol: `params_per_pixel`, `code_length`, `nll_pixels` (-log p of each pixel value, (..., C, H, W)),
    `mean`; -log p(x|z) of an image is the sum of its pixel values' (the anomaly maps read them one by one)."""

    params_per_pixel = 1
    code_length = False

    def nll_pixels(self, x: Tensor, out: Tensor) -> Tensor:
        raise NotImplementedError

    def nll(self, x: Tensor, out: Tensor) -> Tensor:
        return self.nll_pixels(x, out).sum(IMAGE_DIMS)


class BernoulliLikelihood(Likelihood):
    """p(x|z) = Bernoulli(sigmoid(logits)) per pixel, for grey levels in [0, 1], in the stable form of BCE-with-logits
    (sigmoid + log would give log(0))."""

    params_per_pixel = 1  # the logit
    code_length = False  # a density of grey levels in [0, 1], not a code length for 8-bit values

    @classmethod
    def from_config(cls, config: ModelConfig) -> BernoulliLikelihood:
        return cls()

    def nll_pixels(self, x: Tensor, logits: Tensor) -> Tensor:
        """softplus(l) - x l, binary cross-entropy with logits: stable at any logit, and so in an ONNX graph too
        (the exporter's own BCE-with-logits gives inf below a logit of about -88)."""
        return F.softplus(logits) - x * logits

    def mean(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits)


class GaussianLikelihood(Likelihood):
    """p(x|z) = N(decoder output, sigma^2) per pixel, sigma fixed or learned (one shared scale).

    A learned shared sigma balances reconstruction against the KL by itself (Rybkin et al., 2021)."""

    params_per_pixel = 1  # the mean (sigma is shared, not per pixel)
    code_length = False

    def __init__(self, scale: float = 0.0):
        super().__init__()
        if scale > 0:
            self.register_buffer("log_scale", torch.tensor(math.log(scale)))
        else:
            self.log_scale = nn.Parameter(torch.zeros(()))

    @classmethod
    def from_config(cls, config: ModelConfig) -> GaussianLikelihood:
        return cls(config.gaussian_scale)

    def nll_pixels(self, x: Tensor, mean: Tensor) -> Tensor:
        log_scale = self.log_scale.clamp(min=-7.0)  # sigma >= 1e-3: no infinite density on flat pixels
        z = (x - mean) * torch.exp(-log_scale)
        return 0.5 * z.pow(2) + log_scale + 0.5 * math.log(2 * math.pi)

    def mean(self, mean: Tensor) -> Tensor:
        return mean


class OptimalGaussianLikelihood(Likelihood):
    """p(x|z) = N(decoder output, sigma^2) per pixel with each image's own optimal sigma: sigma^2 = its mean squared
    error, so -log p(x|z) = D/2 (1 + log(2 pi MSE)) (the sigma-VAE's analytic scale, Rybkin et al., 2021). Nothing to
    tune or learn, and the reconstruction is weighed against the KL as a learned sigma would."""

    params_per_pixel = 1
    code_length = False
    normalised = False  # sigma is chosen from the image itself: no normalised density of x

    @classmethod
    def from_config(cls, config: ModelConfig) -> OptimalGaussianLikelihood:
        return cls()

    def nll_pixels(self, x: Tensor, mean: Tensor) -> Tensor:
        """Each pixel value's share: (log(2 pi sigma^2) + (x - mean)^2 / sigma^2) / 2, which sums to
        D/2 (1 + log(2 pi MSE))."""
        squared = (x - mean).pow(2)
        mse = squared.mean(IMAGE_DIMS, keepdim=True).clamp(min=1e-6)  # sigma >= 1e-3, as the Gaussian's
        return 0.5 * (torch.log(2 * math.pi * mse) + squared / mse)

    def mean(self, mean: Tensor) -> Tensor:
        return mean


LEVELS = 256  # the values of an 8-bit pixel


class CategoricalLikelihood(Likelihood):
    """p(x|z) = a 256-way categorical per pixel value (its logits from the decoder): exact for 8-bit images, and the
    most flexible per-pixel law, at 256 decoder outputs per pixel value (for small grey images)."""

    params_per_pixel = LEVELS
    code_length = True

    @classmethod
    def from_config(cls, config: ModelConfig) -> CategoricalLikelihood:
        return cls()

    def log_probs(self, out: Tensor) -> Tensor:
        """(..., C * 256, H, W) -> (..., C, 256, H, W), normalised over the 256 values."""
        *lead, _, h, w = out.shape
        return out.reshape(*lead, -1, LEVELS, h, w).log_softmax(-3)

    def nll_pixels(self, x: Tensor, out: Tensor) -> Tensor:
        log_p = self.log_probs(out)
        value = (x * (LEVELS - 1)).round().long().unsqueeze(-3)  # (..., C, 1, H, W)
        picked = log_p.gather(-3, value.expand(*log_p.shape[:-3], 1, *log_p.shape[-2:]))
        return -picked.squeeze(-3)

    def mean(self, out: Tensor) -> Tensor:
        levels = torch.linspace(0, 1, LEVELS, device=out.device, dtype=out.dtype).reshape(LEVELS, 1, 1)
        return (self.log_probs(out).exp() * levels).sum(-3)


class LogisticMixtureLikelihood(Likelihood):
    """p(x|z) = a discretized mixture of logistics per pixel value (PixelCNN++, Salimans et al., 2017; VDVAE), the
    channels of a pixel independent given z: each 8-bit value owns the mass of its bin of width 2/255 on [-1, 1], the
    two end bins the tails. Exact for 8-bit images: -log p(x|z) in bits is a code length."""

    code_length = True

    def __init__(self, components: int = 10):
        super().__init__()
        self.components = components
        self.params_per_pixel = 3 * components  # per component: a weight's logit, a mean, a log scale

    @classmethod
    def from_config(cls, config: ModelConfig) -> LogisticMixtureLikelihood:
        return cls(config.mixture_components)

    def parts(self, out: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(..., C * 3K, H, W) -> each (..., K, C, H, W): the weights' logits, the means, the log scales (at least
        -7: a bin is never much sharper than its width)."""
        *lead, _, h, w = out.shape
        grouped = out.reshape(*lead, -1, 3, self.components, h, w).transpose(-5, -3)  # (..., K, 3, C, H, W)
        logits, means, log_scales = grouped.unbind(-4)
        return logits, means, log_scales.clamp(min=-7.0)

    def log_prob_bins(self, x: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
        """log P(x's bin) under each logistic component; x in [0, 1] with a component axis."""
        v = 2 * x - 1
        inv = torch.exp(-log_scales)
        upper, lower = inv * (v - means + 1 / (LEVELS - 1)), inv * (v - means - 1 / (LEVELS - 1))
        below_top = upper - F.softplus(upper)  # log sigmoid(upper): the mass under the bin's top (the first bin's)
        above_bottom = -F.softplus(lower)  # log (1 - sigmoid(lower)): the mass over its bottom (the last bin's)
        gap = torch.sigmoid(upper) - torch.sigmoid(lower)
        centre = inv * (v - means)  # where the difference underflows: the density at the centre times the width
        density = centre - log_scales - 2 * F.softplus(centre) + math.log(2 / (LEVELS - 1))
        interior = torch.where(gap > 1e-5, torch.log(gap.clamp(min=1e-12)), density)
        return torch.where(v < -0.999, below_top, torch.where(v > 0.999, above_bottom, interior))

    def nll_pixels(self, x: Tensor, out: Tensor) -> Tensor:
        logits, means, log_scales = self.parts(out)
        log_bins = self.log_prob_bins(x.unsqueeze(-4), means, log_scales)
        return -torch.logsumexp(log_bins + logits.log_softmax(-4), dim=-4)

    def mean(self, out: Tensor) -> Tensor:
        logits, means, _ = self.parts(out)
        return ((logits.softmax(-4) * means).sum(-4).clamp(-1, 1) + 1) / 2


LIKELIHOODS: dict[str, type[Likelihood]] = {
    "bernoulli": BernoulliLikelihood,
    "gaussian": GaussianLikelihood,
    "optimal-gaussian": OptimalGaussianLikelihood,
    "categorical": CategoricalLikelihood,
    "logistic-mixture": LogisticMixtureLikelihood,
}


def is_code_length(name: str) -> bool:
    """Whether -log p(x|z) under the likelihood `name` is a code length for 8-bit pixel values."""
    return getattr(LIKELIHOODS.get(name), "code_length", False)


def bits_note(name: str) -> str:
    """What bits/dim means under the likelihood `name`: a code length for 8-bit pixels (comparable with published
    bits/dim), or a continuous density's, which is not one."""
    if is_code_length(name):
        return f"under the {name} likelihood, bits/dim is a code length for the 8-bit pixel values"
    if not getattr(LIKELIHOODS.get(name), "normalised", True):
        return (f"under the {name} likelihood, whose sigma is chosen from each image itself, -log p(x|z) is no "
                "normalised likelihood and bits/dim no code length (a training objective, comparable between such "
                "models only)")
    return (f"under the {name} likelihood, a density on grey levels in [0, 1], bits/dim is not a code length for 8-bit "
            "pixels (not comparable with published bits/dim; --likelihood logistic-mixture gives one)")
