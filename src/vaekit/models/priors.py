"""Priors p(z): where codes are drawn from to generate, and what log p(z) is.

The seed's question, "how do we know where the codes are, so we can sample?", has several answers, and
each is a prior object with one contract: `sample(n, generator)` and `log_prob(z)`.
  StandardNormal   N(0, I): the prior of both presets; the VAE's KL pulls its codes towards it
  GaussianMixture  a mixture fitted to the training codes after training (Ghosh et al., 2020): an answer
                   that works for the plain AE too. Saved beside the weights, so a checkpoint can sample
                   from it without the training data.

A model holds its priors by name ("prior": its own, what generation draws from; "gmm": fitted ex post).
Their tensors are non-persistent buffers: they move with the model but live in their own file
(`priors.safetensors`), so fitting one later never rewrites the weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor, nn

from vaekit.models.posterior import LOG_2PI

if TYPE_CHECKING:
    from vaekit.models.posterior import DiagonalGaussian


class Prior(Protocol):
    """What every prior offers."""

    is_standard_normal: bool  # N(0, I): what the chi-square ball of the diagnostics refers to
    words: str  # what it is, for people

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor: ...
    def log_prob(self, z: Tensor) -> Tensor: ...
    def closed_form_kl(self, q: DiagonalGaussian) -> Tensor | None: ...


class StandardNormal(nn.Module):
    """p(z) = N(0, I) in `dim` dimensions."""

    is_standard_normal = True
    words = "N(0, I)"

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("loc", torch.zeros(dim), persistent=False)  # carries the device and the size

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, len(self.loc), generator=generator, device=self.loc.device)

    def log_prob(self, z: Tensor) -> Tensor:
        """log N(z; 0, I), summed over the last dimension."""
        return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)

    def closed_form_kl(self, q: DiagonalGaussian) -> Tensor:
        """KL(q || N(0, I)) per latent dimension, (B, D): the one prior with a closed form."""
        return q.kl_per_dim()


class GaussianMixture(nn.Module):
    """p(z) = sum_k w_k N(z; m_k, L_k L_k^T), full covariances held by their Cholesky factors L_k."""

    is_standard_normal = False

    def __init__(self, weights: Tensor, means: Tensor, scale_tril: Tensor):
        super().__init__()
        self.register_buffer("weights", weights.float(), persistent=False)  # (K,)
        self.register_buffer("means", means.float(), persistent=False)  # (K, D)
        self.register_buffer("scale_tril", scale_tril.float(), persistent=False)  # (K, D, D)

    @property
    def words(self) -> str:
        return f"a {len(self.weights)}-component Gaussian mixture fitted to the training codes"

    def closed_form_kl(self, q: DiagonalGaussian) -> None:
        """None: the KL from a Gaussian to a mixture has no closed form (the ELBO uses Monte Carlo)."""
        return None

    def tensors(self) -> dict[str, Tensor]:
        return {"weights": self.weights, "means": self.means, "scale_tril": self.scale_tril}

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Component k ~ Categorical(w), then z = m_k + L_k eps, eps ~ N(0, I); drawn in random order."""
        device = self.means.device
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.means.shape[1], 1, generator=generator, device=device)
        return self.means[k] + (self.scale_tril[k] @ eps).squeeze(-1)

    def log_prob(self, z: Tensor) -> Tensor:
        """log sum_k w_k N(z; m_k, S_k) over the last dimension of z (any leading shape)."""
        diff = (z.unsqueeze(-2) - self.means).unsqueeze(-1)  # (..., K, D, 1)
        white = torch.linalg.solve_triangular(self.scale_tril.expand(*diff.shape[:-2], -1, -1), diff,
                                              upper=False).squeeze(-1)  # L_k^-1 (z - m_k)
        log_det = self.scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # log |L_k| = 0.5 log |S_k|
        log_n = -0.5 * (white.pow(2).sum(-1) + self.means.shape[1] * LOG_2PI) - log_det
        return torch.logsumexp(log_n + self.weights.log(), dim=-1)

    @classmethod
    def fit(cls, codes: Tensor, components: int = 10, seed: int = 0) -> GaussianMixture:
        """EM on the codes (scikit-learn, full covariances), on the CPU; components are capped by the number of
        codes. Raises ValueError for codes it cannot fit (fewer than two, or not finite)."""
        from sklearn.mixture import GaussianMixture as SklearnMixture

        codes64 = codes.detach().double().cpu().numpy()
        if len(codes64) < 2 or not torch.isfinite(codes.detach()).all():
            raise ValueError(f"cannot fit a mixture to {len(codes64)} codes that are not all finite numbers")
        gmm = SklearnMixture(n_components=max(1, min(components, len(codes64))), covariance_type="full",
                             random_state=seed, reg_covar=1e-5).fit(codes64)
        tril = torch.linalg.cholesky(torch.from_numpy(gmm.covariances_))
        return cls(torch.from_numpy(gmm.weights_), torch.from_numpy(gmm.means_), tril)


MAX_COMPONENTS = 10_000
GMM_FIT_CODES = 20_000  # training codes an ex-post mixture is fitted to


def mixture_from_tensors(t: dict[str, Tensor], dim: int, where: str) -> GaussianMixture:
    """A mixture read back from a file, after checking its shapes and values in the float32 it will be used in
    (never trusted blindly: a float64 1e300 would become inf, a 1e-300 scale zero)."""
    w, m, s = (t.get(key) for key in ("weights", "means", "scale_tril"))
    if any(v is None or not v.is_floating_point() for v in (w, m, s)):
        raise ValueError(f"{where}: the Gaussian mixture needs floating-point weights, means and scale_tril")
    w, m, s = (v.float() for v in (w, m, s))
    k = len(w) if w.ndim == 1 else -1
    if not 1 <= k <= MAX_COMPONENTS or m.shape != (k, dim) or s.shape != (k, dim, dim):
        raise ValueError(f"{where}: the Gaussian mixture's tensors do not fit a {dim}-dimensional code")
    diagonal = s.diagonal(dim1=-2, dim2=-1)
    if not all(torch.isfinite(v).all() for v in (w, m, s)) or (w < 0).any() or not 0.999 < float(w.sum()) < 1.001 \
            or not (diagonal > 1e-12).all() or not torch.isfinite(diagonal.log().sum(-1)).all():
        raise ValueError(f"{where}: the Gaussian mixture holds invalid weights or covariances")
    return GaussianMixture(w / w.sum(), m, torch.tril(s))
