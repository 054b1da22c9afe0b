"""Per-image anomaly scores: how badly a trained model explains each image. Higher means more anomalous, for all.

  recon       -log p(x|z) at the code z = the mean of q(z|x): the reconstruction error (nats), every model
  nelbo       -ELBO = -log p(x|z), z ~ q(z|x) (one draw), + KL(q(z|x) || p(z))  (nats), where q has a density
  is_nll      -log p(x) importance-sampled with K draws of q(z|x), as `evaluate`'s IS-NLL (nats)
  bpd         is_nll in bits per dimension (ranks images exactly as is_nll does)
  code_nll    -log density of the code under the Gaussian mixture fitted to the training codes (nats): how far
              the image's code lies from where the training codes are, for the AE as well
  png_bits    the image's length as a losslessly compressed PNG (bits): its complexity, no model involved
  complexity  Serra et al. (2020): the likelihood score in bits minus png_bits. Deep generative models can give
              simple out-of-distribution images a higher likelihood than their own data (Nalisnick et al., 2019),
              because simple images are likely under any model; subtracting a general-purpose compressor's code
              length keeps what is specific to the model. Uses is_nll (nelbo when K = 0; recon without a density).
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from vaekit.data import Batches, ImageSet
from vaekit.errors import VaekitError
from vaekit.evaluation.metrics import importance_sampled_nll
from vaekit.models import Autoencoder
from vaekit.models.objectives import elbo
from vaekit.progress import bar

SCORES = {
    "recon": "reconstruction error -log p(x|z) at the code (nats)",
    "nelbo": "-ELBO, one draw of q(z|x) (nats)",
    "is_nll": "importance-sampled -log p(x) (nats)",
    "bpd": "importance-sampled -log p(x) in bits per dimension",
    "code_nll": "-log density of the code under the mixture fitted to the training codes (nats)",
    "png_bits": "PNG length of the image (bits; no model)",
    "complexity": "complexity-corrected: likelihood score in bits minus the PNG length (Serra et al., 2020)",
}
SAME_RANKING = {"bpd": "is_nll"}  # scores that order images exactly as another one does


@dataclass
class ScoreSettings:
    k: int = 100  # importance samples per image for is_nll (0: no IS-NLL)
    batch_size: int = 500
    seed: int = 0


def png_bits(x: Tensor) -> Tensor:
    """Bits of each image (floats in [0, 1], (B, C, H, W)) losslessly compressed as a PNG at the highest level."""
    from PIL import Image

    pixels = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    sizes = []
    for image in pixels:
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, "PNG", compress_level=9)
        sizes.append(8 * buffer.tell())
    return torch.tensor(sizes, dtype=torch.float64)


def unconditional(classes: int) -> None:
    """Anomaly scores need p(x); a conditional model gives p(x|y), and scoring each image under its own label would
    leak it (an out-of-distribution image has none): refused in one line."""
    if classes:
        raise VaekitError("anomaly scores need p(x), and this model is conditional (it gives p(x|y)): scoring each "
                          "image under its own label would leak the label; score an unconditional model")


def scores_available(model: Autoencoder, k: int, mixture: bool) -> list[str]:
    """The scores this model gives, in the order of SCORES."""
    density = ["nelbo", *(["is_nll", "bpd"] if k else [])] if model.has_density else []
    return ["recon", *density, *(["code_nll"] if mixture else []), "png_bits", "complexity"]


@torch.no_grad()
def score_batch(model: Autoencoder, x: Tensor, k: int, mixture: torch.nn.Module | None = None,
                y: Tensor | None = None) -> dict[str, Tensor]:
    """Every score of `scores_available` for a batch of images (floats in [0, 1] on the model's device), (B,) each,
    as float64 on the CPU; a conditional model scores each image under its label y."""
    q = model.encode(x, y)
    out = {"recon": model.likelihood.nll(x, model.decode(q.mean, y))}
    if model.has_density:
        loss = elbo(model, x, y=y)
        out["nelbo"] = loss.recon + loss.kl
        if k:
            out["is_nll"] = importance_sampled_nll(model, x, k, y=y)
            out["bpd"] = out["is_nll"] / (math.prod(x.shape[1:]) * math.log(2))
    if mixture is not None:
        out["code_nll"] = -mixture.log_prob(q.mean)
    out = {name: v.double().cpu() for name, v in out.items()}
    out["png_bits"] = png_bits(x)
    likelihood = out.get("is_nll", out.get("nelbo", out["recon"]))
    out["complexity"] = likelihood / math.log(2) - out["png_bits"]
    return out


def score_images(model: Autoencoder, images: ImageSet, s: ScoreSettings, mixture: torch.nn.Module | None = None,
                 desc: str = "scoring", quiet: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """The scores of `images`, a batch at a time (memory stays at one batch for any number of images); the draws
    are seeded by `s.seed`."""
    unconditional(model.classes)
    model.eval()
    torch.manual_seed(s.seed)
    for x, y in bar(Batches(images, s.batch_size, model.device), desc=desc, disable=quiet):
        yield {name: v.numpy() for name, v in score_batch(model, x, s.k, mixture, y).items()}


def score_all(model: Autoencoder, images: ImageSet, s: ScoreSettings, mixture: torch.nn.Module | None = None,
              desc: str = "scoring", quiet: bool = False) -> dict[str, np.ndarray]:
    """`score_images` gathered: each score for every image."""
    parts = list(score_images(model, images, s, mixture, desc, quiet))
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]} if parts else {}


def fingerprint(model: Autoencoder) -> str:
    """SHA-1 of the model's weights: a threshold file names the very model it was chosen for."""
    digest = hashlib.sha1(usedforsecurity=False)
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
