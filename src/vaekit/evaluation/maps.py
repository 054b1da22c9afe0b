"""Where in an image the model sees the anomaly: one number per pixel, higher meaning more anomalous, for every map.

  error     the squared difference between the image and its reconstruction (the likelihood's mean image decoded
            from the mean of q(z|x)), summed over the channels: every model
  nll       -log p(x|z) of each pixel under the model's own likelihood at that code, summed over the channels
            (nats): the per-pixel share of the `recon` image score, which it sums to
  gradient  |d(-ELBO)/dx| summed over the channels: how strongly each pixel pulls the bound (one draw of q(z|x)),
            for models with a density

A map may be smoothed by a Gaussian blur (`smooth`: its sigma in pixels), as the inspection literature does: a
defect is a region, and single pixels are noisy. An image's score from its map (`IMAGE_SCORES`): its largest value,
or the mean of its top share of pixels (`top`), which one hot pixel cannot fool.

A conditional model is read under the class that reconstructs each image best (an anomaly has no label).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaekit.errors import VaekitError
from vaekit.models import Autoencoder
from vaekit.models.objectives import elbo

MAPS = {
    "error": "squared reconstruction error per pixel",
    "nll": "-log p(x|z) per pixel under the model's likelihood (nats)",
    "gradient": "|d(-ELBO)/dx| per pixel",
}
IMAGE_SCORES = {
    "max": "the map's largest value",
    "top": "the mean of the map's top share of pixels",
    "mean": "the mean of the whole map (for the nll map, the recon score per pixel)",
}


@dataclass(frozen=True)
class MapSettings:
    smooth: float = 0.0  # sigma of the Gaussian blur, in pixels (0: none)
    top: float = 0.01  # share of the pixels whose mean is the "top" image score


def maps_available(model: Autoencoder) -> list[str]:
    """The maps this model gives, in the order of MAPS."""
    return ["error", "nll", *(["gradient"] if model.has_density else [])]


def best_labels(model: Autoencoder, x: Tensor) -> Tensor | None:
    """A conditional model's label for each image: the class whose reconstruction explains it best (None for an
    unconditional model)."""
    if not model.classes:
        return None
    errors = torch.stack([model.likelihood.nll(x, model.decode(model.encode(x, y).mean, y)) for y in
                          (model.conditioning.fill(c, len(x), x.device) for c in range(model.classes))])
    return errors.argmin(0)


def gradient_map(model: Autoencoder, x: Tensor, y: Tensor | None) -> Tensor:
    """|d(-ELBO)/dx| per pixel value (one draw of q(z|x) for the batch)."""
    with torch.enable_grad():
        inputs = x.detach().clone().requires_grad_(True)
        loss = elbo(model, inputs, y=y)
        (grad,) = torch.autograd.grad((loss.recon + loss.kl).sum(), inputs)
    return grad.abs()


def decoded_maps(model: Autoencoder, x: Tensor, y: Tensor | None) -> dict[str, Tensor]:
    """The maps read off the reconstruction (error, nll) per pixel value, (B, C, H, W)."""
    out = model.decode(model.encode(x, y).mean, y)
    return {"error": (x - model.likelihood.mean(out)).pow(2), "nll": model.likelihood.nll_pixels(x, out)}


@torch.no_grad()
def anomaly_maps(model: Autoencoder, x: Tensor, s: MapSettings = MapSettings()) -> dict[str, Tensor]:
    """Every map of `maps_available` for a batch of images (floats in [0, 1] on the model's device), each (B, H, W)
    float32 on the CPU, smoothed by `s.smooth`."""
    y = best_labels(model, x)
    maps = decoded_maps(model, x, y)
    if model.has_density:
        maps["gradient"] = gradient_map(model, x, y)
    return {name: blur(m.sum(1).float(), s.smooth).cpu() for name, m in maps.items()}


def gaussian_kernel(sigma: float) -> Tensor:
    """A normalised 1-D Gaussian of standard deviation `sigma`, cut at 3 sigma."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    return kernel / kernel.sum()


def blur(maps: Tensor, sigma: float) -> Tensor:
    """(B, H, W) maps blurred by a Gaussian of `sigma` pixels (separable; edges reflected, or repeated where the
    image is narrower than the kernel); unchanged for sigma 0."""
    if sigma <= 0:
        return maps
    kernel = gaussian_kernel(sigma).to(maps)
    r = len(kernel) // 2
    out = maps[:, None]
    for weight in (kernel.reshape(1, 1, 1, -1), kernel.reshape(1, 1, -1, 1)):
        pad = (r, r, 0, 0) if weight.shape[-1] > 1 else (0, 0, r, r)
        side = out.shape[-1] if weight.shape[-1] > 1 else out.shape[-2]
        out = F.conv2d(F.pad(out, pad, mode="reflect" if r < side else "replicate"), weight)
    return out[:, 0]


def image_scores(maps: Tensor, top: float) -> dict[str, Tensor]:
    """Each image's score from its map (B, H, W): `max`; `top`, the mean of its `top` share of pixels (at least one
    pixel); `mean`."""
    flat = maps.flatten(1)
    k = max(1, round(top * flat.shape[1]))
    return {"max": flat.max(1).values, "top": flat.topk(k, dim=1).values.mean(1), "mean": flat.mean(1)}


class Scoring(nn.Module):
    """image (N, C, H, W) in [0, 1] -> map (N, H, W), score (N,), p_value (N,), flag (N,): one map read off the
    reconstruction (error or nll), smoothed, one image score of it, its split-conformal p-value against the held-out
    normal images' scores, and whether it lies above the threshold. Everything a decision needs is inside (what
    `vaekit export --scoring` writes as an ONNX graph); the gradient map, which needs a backward pass, is not."""

    def __init__(self, model: Autoencoder, score: str, s: MapSettings, held_out: Tensor, threshold: float):
        super().__init__()
        self.model, self.settings = model, s
        self.map, self.kind = score.rsplit("_", 1)
        if self.map not in ("error", "nll") or self.kind not in IMAGE_SCORES:
            raise VaekitError(f"{score}: a scoring graph takes the error or nll map (the gradient map needs a "
                              "backward pass) and one of the image scores " + ", ".join(IMAGE_SCORES))
        self.register_buffer("held_out", held_out.float().reshape(1, -1))
        self.register_buffer("threshold", torch.tensor(float(threshold)))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        m = blur(decoded_maps(self.model, x, best_labels(self.model, x))[self.map].sum(1), self.settings.smooth)
        score = image_scores(m, self.settings.top)[self.kind]
        at_or_above = (self.held_out >= score[:, None]).float().sum(1)
        p_value = (1.0 + at_or_above) / (self.held_out.shape[1] + 1.0)
        return m, score, p_value, (score > self.threshold) | torch.isnan(score)  # NaN: most anomalous
