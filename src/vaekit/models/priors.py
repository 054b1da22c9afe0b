"""Priors p(z): where codes are drawn from to generate, and what log p(z) is.

The seed's question, "how do we know where the codes are, so we can sample?", has several answers, and
each is a prior object with one contract: `sample(n, generator)` and `log_prob(z)`.
  StandardNormal   N(0, I): the VAE's KL (or the WAE's MMD) pulls its codes towards it
  VampPrior        (1/K) sum_k q(z | u_k): the encoder's own posteriors at K learned pseudo-inputs u_k
                   (Tomczak & Welling, 2018), trained with the model
  GaussianMixture  a mixture fitted to the training codes after training (Ghosh et al., 2020): an answer
                   that works for the plain AE too
  UniformCodes     for discrete codes (VQ-VAE, FSQ): each token one of the codebook's codes, uniformly
  TwoStage         the decoder of a second, small VAE fitted to the training codes after training (Dai & Wipf,
                   2019): z = D2(u), u ~ N(0, I); it has no density here, only samples

A model holds its priors by name ("prior": its own, what generation draws from; "gmm" and "two-stage": fitted
ex post). The fitted ones keep their tensors in non-persistent buffers: they move with the model but live in
their own file (`priors.safetensors`), so fitting one later never rewrites the weights, and a checkpoint can
sample from them without the training data.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaekit.devices import free_bytes
from vaekit.models.posterior import LOG_2PI, DiagonalGaussian, drawn_by

if TYPE_CHECKING:
    from collections.abc import Callable


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
        return torch.randn(n, len(self.loc), device=self.loc.device, **drawn_by(generator))

    def log_prob(self, z: Tensor) -> Tensor:
        """log N(z; 0, I), summed over the last dimension."""
        return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)

    def closed_form_kl(self, q: DiagonalGaussian) -> Tensor:
        """KL(q || N(0, I)) per latent dimension, (B, D): the one prior with a closed form."""
        return q.kl_per_dim()


class VampPrior(nn.Module):
    """p(z) = (1/K) sum_k q(z | u_k), u_k = sigmoid(a_k): the model's encoder at K pseudo-inputs, images whose
    pixels a_k are parameters trained with the model. The encoder is held by reference, not as a submodule, so
    its weights are stored once (as the encoder's)."""

    is_standard_normal = False

    def __init__(self, encode: Callable[[Tensor], DiagonalGaussian], count: int, image_shape: tuple[int, ...]):
        super().__init__()
        self.encode = encode
        self.pseudo_inputs = nn.Parameter(0.5 * torch.randn(count, *image_shape))  # pixels before the sigmoid

    @property
    def words(self) -> str:
        return f"a VampPrior: the mixture of q(z|u) at {len(self.pseudo_inputs)} learned pseudo-inputs u"

    def components(self) -> DiagonalGaussian:
        """q(z | u_k) for every pseudo-input: K Gaussians, (K, D)."""
        return self.encode(torch.sigmoid(self.pseudo_inputs))

    def closed_form_kl(self, q: DiagonalGaussian) -> None:
        """None: KL(q || a mixture) has no closed form (the ELBO uses Monte Carlo)."""
        return None

    def log_prob(self, z: Tensor) -> Tensor:
        """log (1/K) sum_k q(z | u_k) over the last dimension of z (any leading shape), in chunks of rows whose
        (rows, K, D) temporaries stay near 2^22 values each (a training batch is one chunk)."""
        q, count = self.components(), len(self.pseudo_inputs)
        rows = z.reshape(-1, z.shape[-1])
        per_chunk = max(1, 2**22 // (count * z.shape[-1]))
        parts = [torch.logsumexp(q.log_prob(chunk.unsqueeze(-2)), dim=-1) for chunk in rows.split(per_chunk)]
        return (torch.cat(parts) - math.log(count)).reshape(z.shape[:-1])

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """A pseudo-input k uniformly, then z ~ q(z | u_k)."""
        q = self.components()
        k = torch.randint(len(self.pseudo_inputs), (n,), device=q.mu.device, **drawn_by(generator))
        eps = torch.randn(n, q.mu.shape[1], device=q.mu.device, **drawn_by(generator))
        return q.mean[k] + q.scale[k] * eps


class UniformCodes(nn.Module):
    """p(z) for a model with discrete codes: every token one of the codebook's codes, uniformly and independently (the
    prior a VQ-VAE is trained under; the baseline a learned code prior must beat). It draws through the latent part,
    held by reference (its codebook is stored once, as the latent's); over z it has no density."""

    is_standard_normal = False

    def __init__(self, latent: nn.Module):
        super().__init__()
        self.draw = latent.random_codes
        self.words = (f"uniformly random codes: each of the {latent.tokens} tokens one of the {latent.codebook_size} "
                      "codes")

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.draw(n, generator)

    def log_prob(self, z: Tensor) -> Tensor:
        raise ValueError("uniformly random codes have no density over z: the codes are discrete")

    def closed_form_kl(self, q: DiagonalGaussian) -> None:
        return None


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
        k, (n, dim) = max(1, min(components, len(codes64))), codes64.shape
        if dim > MAX_MIXTURE_DIM:  # EM factors k covariances of dim^2 at every step: hours past a few hundred
            raise ValueError(f"a mixture of full-covariance components over {dim}-dimensional codes is not fitted "
                             f"(at most {MAX_MIXTURE_DIM} dimensions: EM would take hours); sample through the "
                             "two-stage VAE instead")
        needed = 8 * (4 * k * dim * dim + 3 * n * max(k, dim))  # covariances, their factors, EM's temporaries
        free = free_bytes(torch.device("cpu"))
        if free is not None and needed > free:
            raise ValueError(f"a mixture of {k} full-covariance components over {dim}-dimensional codes needs about "
                             f"{needed / 2**30:.1f} GiB, more than the {free / 2**30:.1f} GiB free")
        gmm = SklearnMixture(n_components=k, covariance_type="full", random_state=seed, reg_covar=1e-5).fit(codes64)
        tril = torch.linalg.cholesky(torch.from_numpy(gmm.covariances_))
        return cls(torch.from_numpy(gmm.weights_), torch.from_numpy(gmm.means_), tril)


class TwoStage(nn.Module):
    """p(z) = integral N(z; D2(u), diag(scale^2)) N(u; 0, I) du: the generative model of a second VAE fitted to the
    first model's training codes (Dai & Wipf, 2019; samplers.py fits it). D2 is held as its linear layers'
    tensors (ReLU between them, none after the last), `scale` is its Gaussian decoder's learned sigma in code units.
    Dai & Wipf decode the mean alone; the scale is kept because on codes that fill their space the second VAE explains
    part of them by that noise, and the mean alone would then draw too narrow a cloud."""

    is_standard_normal = False

    def __init__(self, layers: list[tuple[Tensor, Tensor]], scale: Tensor):
        super().__init__()
        self.depth = len(layers)
        for i, (weight, bias) in enumerate(layers):
            self.register_buffer(f"weight{i}", weight.float(), persistent=False)  # (out, in)
            self.register_buffer(f"bias{i}", bias.float(), persistent=False)
        self.register_buffer("scale", scale.float(), persistent=False)  # (D,)

    @property
    def words(self) -> str:
        return f"a two-stage VAE: a second VAE ({self.depth} decoder layers) fitted to the training codes"

    def tensors(self) -> dict[str, Tensor]:
        layers = {f"{kind}{i}": getattr(self, f"{kind}{i}") for i in range(self.depth) for kind in ("weight", "bias")}
        return {**layers, "scale": self.scale}

    def closed_form_kl(self, q: DiagonalGaussian) -> None:
        return None

    def log_prob(self, z: Tensor) -> Tensor:
        raise ValueError("the two-stage sampler has no density here; it draws codes, it does not score them")

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        device = self.weight0.device
        h = torch.randn(n, self.weight0.shape[1], device=device, **drawn_by(generator))
        for i in range(self.depth):
            h = F.linear(h, getattr(self, f"weight{i}"), getattr(self, f"bias{i}"))
            h = torch.relu(h) if i < self.depth - 1 else h
        return h + self.scale * torch.randn(h.shape, device=device, **drawn_by(generator))


MAX_COMPONENTS = 10_000
MAX_MIXTURE_DIM = 512  # code dimensions a full-covariance mixture is fitted to (the default latents: 8 to 64)


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


MAX_LAYERS, MAX_WIDTH, MAX_VALUE = 16, 4096, 1e6


def two_stage_from_tensors(t: dict[str, Tensor], dim: int, where: str) -> TwoStage:
    """A two-stage sampler read back from a file: a chain of layers from `dim` to `dim`, each at most MAX_WIDTH wide
    and every value finite and below MAX_VALUE in size, and a non-negative scale per code dimension; its draws of a
    fixed probe must be finite (a sampler that overflows to NaN images is refused, not written out)."""
    depth = (len(t) - 1) // 2
    names = {f"{kind}{i}" for i in range(depth) for kind in ("weight", "bias")} | {"scale"}
    if not 1 <= depth <= MAX_LAYERS or set(t) != names or not all(v.is_floating_point() for v in t.values()):
        raise ValueError(f"{where}: the two-stage sampler needs weight0, bias0, ..., scale as floating-point tensors")
    layers = [(t[f"weight{i}"].float(), t[f"bias{i}"].float()) for i in range(depth)]
    width = dim
    for weight, bias in layers:
        if weight.ndim != 2 or weight.shape[1] != width or bias.shape != weight.shape[:1] \
                or not 1 <= weight.shape[0] <= MAX_WIDTH:
            raise ValueError(f"{where}: the two-stage sampler's layers do not chain from {dim} to {dim} dimensions "
                             f"within {MAX_WIDTH} units")
        width = weight.shape[0]
    scale = t["scale"].float()
    values = (scale, *(v for pair in layers for v in pair))
    bounded = all(torch.isfinite(v).all() and v.abs().max() < MAX_VALUE for v in values)
    if width != dim or scale.shape != (dim,) or not bounded or (scale < 0).any():
        raise ValueError(f"{where}: the two-stage sampler does not give finite {dim}-dimensional codes")
    sampler = TwoStage(layers, scale)
    if not torch.isfinite(sampler.sample(256, torch.Generator().manual_seed(0))).all():
        raise ValueError(f"{where}: the two-stage sampler's draws overflow")
    return sampler


