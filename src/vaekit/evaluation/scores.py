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

A conditional model gives p(x|y), and scoring an image under its own label would leak the label (an anomaly has
none). Its scores take the label out, with p(x) = (1/C) sum_y p(x|y) over its C classes (a uniform p(y)), one pass
per class:
  is_nll      -log of the mean over y of the importance-sampled p(x|y): one importance sampler with K draws per
              class; its estimate of p(x) is unbiased, so -log of it is an upper bound in expectation, as before
  nelbo       the -ELBO with y as one more latent variable, q(y|x) = softmax_y(-recon_y) (fixed by the deterministic
              reconstructions, not by the noisy draws): -sum_y q(y|x) [ELBO_y - log C - log q(y|x)], an upper bound
              on -log p(x) in expectation. (A log-mean-exp of one-draw ELBOs would not be: lucky draws win.)
  recon       the error under the class that reconstructs the image best
code_nll, which needs a label for the code, is left out.
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
from vaekit.models.footprint import check_batch
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
MAX_SUMMED_CLASSES = 100  # a conditional model is scored once per class


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


def check_scorable(classes: int) -> None:
    """A conditional model is scored once per class: refused, in one line, past MAX_SUMMED_CLASSES of them."""
    if classes > MAX_SUMMED_CLASSES:
        raise VaekitError(f"this model is conditional on {classes} classes, and its anomaly scores take one pass "
                          f"per class: at most {MAX_SUMMED_CLASSES} are summed (score an unconditional model of the "
                          "same data instead)")


def scores_available(model: Autoencoder, k: int, mixture: bool) -> list[str]:
    """The scores this model gives, in the order of SCORES."""
    density = ["nelbo", *(["is_nll", "bpd"] if k else [])] if model.has_density else []
    code = ["code_nll"] if mixture and not model.classes else []
    return ["recon", *density, *code, "png_bits", "complexity"]


def model_scores(model: Autoencoder, x: Tensor, k: int, y: Tensor | None) -> tuple[dict[str, Tensor], Tensor]:
    """recon, nelbo and is_nll (those the model gives) of a batch under labels y (None: unconditional), and the
    codes (the posterior means)."""
    q = model.encode(x, y)
    out = {"recon": model.likelihood.nll(x, model.decode(q.mean, y))}
    if model.has_density:
        loss = elbo(model, x, y=y)
        out["nelbo"] = loss.recon + loss.kl
        if k:
            out["is_nll"] = importance_sampled_nll(model, x, k, y=y)
    return out, q.mean


def summed_over_labels(model: Autoencoder, x: Tensor, k: int) -> dict[str, Tensor]:
    """A conditional model's scores with the label summed out (the module's docstring says how)."""
    per_class = [model_scores(model, x, k, model.conditioning.fill(c, len(x), x.device))[0]
                 for c in range(model.classes)]
    stacked = {name: torch.stack([s[name].double() for s in per_class]) for name in per_class[0]}
    out = {"recon": stacked["recon"].min(0).values}
    if "nelbo" in stacked:
        log_q = torch.log_softmax(-stacked["recon"], 0)  # q(y|x), (C, B)
        out["nelbo"] = (log_q.exp() * (stacked["nelbo"] + math.log(model.classes) + log_q)).sum(0)
    if "is_nll" in stacked:
        out["is_nll"] = math.log(model.classes) - torch.logsumexp(-stacked["is_nll"], 0)
    return out


@torch.no_grad()
def score_batch(model: Autoencoder, x: Tensor, k: int, mixture: torch.nn.Module | None = None) -> dict[str, Tensor]:
    """Every score of `scores_available` for a batch of images (floats in [0, 1] on the model's device), (B,) each,
    as float64 on the CPU; a conditional model's with the label summed out."""
    if model.classes:
        out = summed_over_labels(model, x, k)
    else:
        out, codes = model_scores(model, x, k, None)
        if mixture is not None:
            out["code_nll"] = -mixture.log_prob(codes)
    if "is_nll" in out:
        out["bpd"] = out["is_nll"] / (math.prod(x.shape[1:]) * math.log(2))
    out = {name: v.double().cpu() for name, v in out.items()}
    out["png_bits"] = png_bits(x)
    likelihood = out.get("is_nll", out.get("nelbo", out["recon"]))
    out["complexity"] = likelihood / math.log(2) - out["png_bits"]
    return out


def score_images(model: Autoencoder, images: ImageSet, s: ScoreSettings, mixture: torch.nn.Module | None = None,
                 desc: str = "scoring", quiet: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """The scores of `images`, a batch at a time (memory stays at one batch for any number of images); the draws
    are seeded by `s.seed`."""
    check_scorable(model.classes)
    check_batch(model.config, min(s.batch_size, len(images)), "--batch-size", device=model.device)
    model.eval()
    torch.manual_seed(s.seed)
    for x, _ in bar(Batches(images, s.batch_size, model.device), desc=desc, disable=quiet):
        yield {name: v.numpy() for name, v in score_batch(model, x, s.k, mixture).items()}


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
