"""Honest numbers: the importance-sampled likelihood, distances between feature sets, latent diagnostics.

log p(x) = log E_{q(z|x)}[p(x|z) p(z) / q(z|x)]  >=  E_q[log p(x|z)] - KL(q || p)  (the ELBO).
The IS estimate with K samples is itself a lower bound that tightens as K grows (Burda et al., 2016),
so the importance-sampled NLL never exceeds the negative ELBO by more than Monte-Carlo noise.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from vaekit.models import Autoencoder
from vaekit.models.latents import codebook_use
from vaekit.models.objectives import log_weight_chunks


@torch.no_grad()
def importance_sampled_nll(model: Autoencoder, x: Tensor, k: int = 1000, rows: int | None = None,
                           y: Tensor | None = None) -> Tensor:
    """-log p(x) per image from K samples of q(z|x): -logmeanexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)],
    with the weights of `log_weights` (models/objectives.py), summed a chunk of draws at a time: memory stays at one
    chunk for any K. Needs a model whose posterior has a density."""
    total = None
    for fit, ratio in log_weight_chunks(model, x, k, rows, y=y):
        chunk = torch.logsumexp((fit + ratio).double(), dim=0)
        total = chunk if total is None else torch.logaddexp(total, chunk)
    return -(total - math.log(k))


def frechet_distance(a: np.ndarray | Tensor, b: np.ndarray | Tensor) -> float:
    """Frechet distance between Gaussians fitted to two sets of feature vectors (rows):
    |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)); the formula behind FID."""
    a, b = (np.asarray(v, dtype=np.float64) for v in (a, b))
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr((S_a S_b)^(1/2)) = sum of sqrt(eigenvalues of S_a^(1/2) S_b S_a^(1/2)), a symmetric PSD matrix
    w, v = np.linalg.eigh(s_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = np.linalg.eigvalsh(root_a @ s_b @ root_a)
    trace_sqrt = np.sqrt(np.clip(middle, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * trace_sqrt)


def kernel_distance(real: np.ndarray | Tensor, fake: np.ndarray | Tensor, subsets: int = 100, size: int = 1000,
                    seed: int = 0) -> dict[str, float]:
    """KID (Binkowski et al., 2018): the unbiased MMD^2 between two feature sets under the cubic polynomial kernel
    k(a, b) = (a.b / d + 1)^3, averaged over `subsets` random subsets of `size` rows of each (fewer where a set is
    smaller); returns its mean and standard deviation over the subsets. Unbiased: it can be slightly negative."""
    real, fake = (np.asarray(v, dtype=np.float64) for v in (real, fake))
    m = min(size, len(real), len(fake))
    if m < 2:
        raise ValueError("the kernel distance needs at least 2 feature rows in each set")
    rng, d = np.random.default_rng(seed), real.shape[1]
    values = []
    for _ in range(subsets):
        a, b = real[rng.choice(len(real), m, replace=False)], fake[rng.choice(len(fake), m, replace=False)]
        k_aa, k_bb, k_ab = (cubed(x @ y.T / d + 1) for x, y in ((a, a), (b, b), (a, b)))
        within = (k_aa.sum() - np.trace(k_aa) + k_bb.sum() - np.trace(k_bb)) / (m * (m - 1))
        values.append(within - 2 * k_ab.mean())
    return {"kid": float(np.mean(values)), "kid_std": float(np.std(values)), "kid_subsets": subsets, "kid_size": m}


def cubed(k: np.ndarray) -> np.ndarray:
    """k ** 3 in place, by two multiplications (numpy's power of a float array calls pow() per element: five times
    slower, and the kernel distance's largest cost)."""
    square = k * k
    return np.multiply(square, k, out=square)


def precision_recall_density_coverage(real: np.ndarray | Tensor, fake: np.ndarray | Tensor, k: int = 5,
                                      n: int = 5000) -> dict[str, float]:
    """Precision and recall of the k-NN manifolds (Kynkaanniemi et al., 2019), density and coverage (Naeem et al.,
    2020), by NAVER's `prdc` package, on the first `n` rows of each set (the pairwise distances take O(n^2) memory).
    Precision: share of samples inside the real manifold; recall: share of real images inside the samples'."""
    import contextlib
    import io

    from prdc import compute_prdc

    real, fake = (np.asarray(v, dtype=np.float32)[:n] for v in (real, fake))
    if min(len(real), len(fake)) < k + 2:
        raise ValueError(f"precision and recall with k = {k} need at least {k + 2} feature rows in each set")
    with contextlib.redirect_stdout(io.StringIO()):  # it prints the set sizes
        scores = compute_prdc(real, fake, nearest_k=k)
    return {**{key: float(value) for key, value in scores.items()}, "prdc_k": k, "prdc_images": len(fake)}


def spread(real: Tensor, fake: Tensor, n: int = 1000) -> float:
    """How varied samples are against real images: the median distance between two samples' features over the
    median distance between two real images' (on the first n of each). About 1 for a set as varied as the real
    images, near 0 for near-identical samples, which precision alone cannot tell (a set of one realistic image has
    precision 1)."""
    within = torch.pdist(torch.as_tensor(fake[:n], dtype=torch.float64)).median()
    real_within = torch.pdist(torch.as_tensor(real[:n], dtype=torch.float64)).median()
    return float(within / real_within) if real_within > 0 else float("nan")


def active_units(means: Tensor, threshold: float = 0.01) -> tuple[int, Tensor]:
    """Burda et al.'s activity A_u = Cov_x(E_q[z_u]) of each latent dimension over the data; active if > threshold."""
    activity = means.double().var(0)
    return int((activity > threshold).sum()), activity.float()


def codebook_usage(indices: Tensor, size: int) -> dict[str, float]:
    """How much of a codebook of `size` codes the token indices use: codes used at least once, those never used
    (dead), and the perplexity exp(H) of the codes' frequencies (size when all are used equally, 1 for one code)."""
    used, perplexity = codebook_use(torch.bincount(indices.flatten(), minlength=size))
    return {"size": size, "used": used, "dead": size - used, "perplexity": perplexity}


def code_statistics(codes: Tensor) -> dict[str, list[float]]:
    """Per-dimension mean and std of the codes, to hold against the prior's 0 and 1."""
    return {"mean": codes.mean(0).tolist(), "std": codes.std(0).tolist()}


SSIM_SIDE = 6  # the least image side SSIM's 11x11 Gaussian window (sigma 1.5) can be reflected around


def psnr(images: Tensor, references: Tensor) -> Tensor:
    """Peak signal-to-noise ratio per image, in dB, for values in [0, 1]: 10 log10(1 / MSE); an exact copy gets
    100 dB (its MSE floored at 1e-10)."""
    mse = (images.double() - references.double()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse.clamp(min=1e-10))


def ssim(images: Tensor, references: Tensor) -> Tensor | None:
    """Structural similarity per image (Wang et al., 2004) by torchmetrics: an 11x11 Gaussian window of sigma 1.5,
    values in [0, 1], the map averaged over the whole image (reflected at the borders) and over the channels. None
    for images with a side under SSIM_SIDE pixels."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    if min(images.shape[-2:]) < SSIM_SIDE:
        return None
    return structural_similarity_index_measure(images.double(), references.double(), data_range=1.0,
                                               reduction="none")
