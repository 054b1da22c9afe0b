"""The latent space seen by a person: a 2-D projection of the codes, and straight lines between codes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class Projection:
    """Codes seen in 2-D: the codes themselves for a 2-D latent, else their first two principal components.

    The basis is orthonormal, so the prior N(0, I) projects to N(0, I_2) around the origin, and a point
    (u, v) of the map goes back to the latent vector offset + u * basis[:, 0] + v * basis[:, 1]."""

    xy: np.ndarray  # (N, 2)
    basis: np.ndarray  # (D, 2)
    offset: np.ndarray  # (D,): the codes' mean, less its part inside the plane
    axes: str

    @classmethod
    def fit(cls, codes: Tensor) -> Projection:
        z = codes.double().numpy()
        if z.shape[1] == 2:
            return cls(z, np.eye(2), np.zeros(2), "z1, z2")
        mean = z.mean(0)
        basis = np.linalg.svd(z - mean, full_matrices=False)[2][:2].T
        return cls(z @ basis, basis, mean - basis @ (basis.T @ mean), "PC1, PC2")


def radius_99(dim: int) -> float:
    """The radius of the ball about 0 holding 99% of N(0, I)'s mass in `dim` dimensions (|z|^2 is chi-square)."""
    from scipy.stats import chi2

    return float(np.sqrt(chi2.ppf(0.99, dim)))


def interpolate(z0: Tensor, z1: Tensor, steps: int) -> Tensor:
    """`steps` codes evenly spaced on the segment from z0 to z1, both included."""
    t = torch.linspace(0, 1, steps).unsqueeze(1)
    return (1 - t) * z0 + t * z1
