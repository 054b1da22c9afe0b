"""Honest numbers: the importance-sampled likelihood, the Frechet distance, latent diagnostics.

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
from vaekit.models.objectives import log_weights


@torch.no_grad()
def importance_sampled_nll(model: Autoencoder, x: Tensor, k: int = 1000, rows: int | None = None) -> Tensor:
    """-log p(x) per image from K samples of q(z|x): -logmeanexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)],
    with the weights of `log_weights` (models/objectives.py). Needs a model whose posterior has a density."""
    return -(torch.logsumexp(log_weights(model, x, k, rows).double(), dim=0) - math.log(k))


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


def active_units(means: Tensor, threshold: float = 0.01) -> tuple[int, Tensor]:
    """Burda et al.'s activity A_u = Cov_x(E_q[z_u]) of each latent dimension over the data; active if > threshold."""
    activity = means.double().var(0)
    return int((activity > threshold).sum()), activity.float()


def code_statistics(codes: Tensor) -> dict[str, list[float]]:
    """Per-dimension mean and std of the codes, to hold against the prior's 0 and 1."""
    return {"mean": codes.mean(0).tolist(), "std": codes.std(0).tolist()}
