"""The latent part: what a preset's encoder output becomes, the posterior q(z|x). One protocol, each member an entry
of LATENTS; the model holds its latent as a module (so a member may own parameters and state, a codebook say) and
never asks which one it is:

  params_per_dim   how many numbers the encoder gives per code dimension (the encoder is built that wide)
  has_density      whether q(z|x) has a density (then a likelihood bound, the IS-NLL and the KL exist)
  discrete         whether each token of a code is one of `codebook_size` values (then `random_codes` draws codes
                   uniformly, `codes_from_indices` builds them, and the posterior carries each token's index)
  compiles_whole   whether torch.compile traces it as one graph (no data-dependent branches)
  grid             the code's layout as (C, h, w): h * w tokens of C numbers (networks.code_grid)
  outputs          the names of what an exported encoder emits (the posterior's `exported()`, in that order)
  forward(params)  the posterior for a batch: sample, mean, log_prob (where it has a density), kl against a prior
                   (`posterior.divergence`), scale (its spread per dimension, or None), exported

  gaussian   q(z|x) = N(mu, diag sigma^2), log sigma^2 clamped to the config's range: the VAE's
  point      q(z|x) = delta(z - E(x)): the plain AE's, no density
  codebook   each token replaced by the nearest of `codebook_size` learned codes (VQ-VAE, van den Oord et al.,
             2017): exponential-moving-average codebook, k-means initialisation, dead codes revived, gradients
             passed straight through, a commitment loss; vector-quantize-pytorch's VectorQuantize
  scalar     each token's numbers rounded to a few levels each (FSQ, Mentzer et al., 2023): an implicit codebook,
             no codebook loss; vector-quantize-pytorch's FSQ

A quantizer's codes are exact codebook entries outside training (the straight-through sum, x + (q - x), is not), so
equal codes compare equal (what the code prior's vocabulary relies on).

To add a latent: a posterior (posterior.py's contract), a module here, an entry in LATENTS; a preset names it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vaekit.config import ModelConfig
from vaekit.models.conditioning import exporting
from vaekit.models.networks import code_grid
from vaekit.models.posterior import DiagonalGaussian, PointMass, Quantized, drawn_by


class Latent(nn.Module):
    """The protocol's defaults: one number per dimension, no density, continuous, traced whole, the code exported."""

    params_per_dim = 1
    has_density = False
    discrete = False
    compiles_whole = True
    outputs: tuple[str, ...] = ("code",)

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.grid = code_grid(config)


class GaussianLatent(Latent):
    """The encoder gives mu and log sigma^2 per dimension; nothing learned here."""

    params_per_dim = 2
    has_density = True
    outputs = ("mean", "logvar")

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.logvar_min, self.logvar_max = config.logvar_min, config.logvar_max

    def forward(self, params: Tensor) -> DiagonalGaussian:
        return DiagonalGaussian.from_params(params, logvar_min=self.logvar_min, logvar_max=self.logvar_max)


class PointLatent(Latent):
    """The encoder gives the code itself."""

    def forward(self, params: Tensor) -> PointMass:
        return PointMass(params)


class Quantizer(Latent):
    """What the two quantizers share: the code as tokens (B, h*w, C) in and out, codes from indices, uniform draws.
    A member sets `quantizer` and `codebook_size`, and says how to `quantize` in a training step (tokens -> quantized
    tokens, indices, its loss), find the `nearest` code's index otherwise, and give the `entries` of indices (exact
    codes, (..., C))."""

    discrete = True

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.tokens = self.grid[1] * self.grid[2]

    def forward(self, params: Tensor) -> Quantized:
        c, n = self.grid[0], self.tokens
        tokens = params.reshape(-1, c, n).transpose(1, 2)
        # A codebook moves in training steps only, never when codes are read under no_grad (validation, sampler fits).
        # Otherwise the codes are exact entries, not the straight-through sum. On the meta device (a step's memory
        # traced, footprint.py) the nearest-code search of the whole batch stands for the step, whose library code
        # reads numbers back; an export, whose batch is symbolic, searches the whole batch too.
        if self.training and torch.is_grad_enabled() and not params.is_meta:
            quantized, indices, penalty = self.quantize(tokens)
        else:
            indices = self.nearest(tokens, whole=params.is_meta or exporting())
            quantized, penalty = self.entries(indices), tokens.new_zeros(())
        return Quantized(quantized.transpose(1, 2).reshape(params.shape), indices, penalty)

    def codes_from_indices(self, indices: Tensor) -> Tensor:
        """Codes (B, latent_dim) of the given token indices (B, h*w)."""
        return self.entries(indices).transpose(-1, -2).reshape(len(indices), -1)

    def random_codes(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n codes whose tokens are drawn uniformly from the codebook, independently."""
        device = next(self.quantizer.buffers()).device
        indices = torch.randint(self.codebook_size, (n, self.tokens), device=device, **drawn_by(generator))
        return self.codes_from_indices(indices)


class CodebookLatent(Quantizer):
    """VQ-VAE's latent: a learned codebook of `codebook_size` entries of C numbers (VectorQuantize)."""

    compiles_whole = False  # its training step runs outside torch.compile's graph (see `quantize`)

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        from vector_quantize_pytorch import VectorQuantize  # imported here: a few seconds, only for these models

        quiet_library()
        self.codebook_size = config.codebook_size
        self.quantizer = VectorQuantize(dim=self.grid[0], codebook_size=config.codebook_size, kmeans_init=True,
                                        decay=config.codebook_decay, commitment_weight=config.commitment,
                                        threshold_ema_dead_code=config.dead_code)

    @torch.compiler.disable  # its branches on the codebook's state (k-means, dead codes) would break the graph
    def quantize(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # anyway, and retrace per batch size
        return self.quantizer(tokens)

    def nearest(self, tokens: Tensor, whole: bool = False) -> Tensor:
        """The index of each token's nearest code (Euclidean), written out so that an exported encoder holds no
        branch on the codebook's state; the distances of about 2^22 token-code pairs at a time (`whole`: all)."""
        codebook = self.quantizer.codebook

        def closest(rows: Tensor) -> Tensor:
            return (rows.pow(2).sum(-1, keepdim=True) - 2 * rows @ codebook.T + codebook.pow(2).sum(-1)).argmin(-1)

        if whole:  # no split: an export's batch stays symbolic
            return closest(tokens)
        rows = tokens.reshape(-1, tokens.shape[-1])
        found = [closest(chunk) for chunk in rows.split(max(1, 2**22 // len(codebook)))]
        return torch.cat(found).reshape(tokens.shape[:-1])

    def entries(self, indices: Tensor) -> Tensor:
        return self.quantizer.codebook[indices]


class ScalarLatent(Quantizer):
    """FSQ's latent: each number of a token rounded to one of its levels, the product of the levels its codes (FSQ)."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        from vector_quantize_pytorch import FSQ

        quiet_library()
        self.codebook_size = math.prod(config.fsq_levels)
        here = torch.empty(0).device  # the device being built on: the meta one where parameters are counted
        with torch.device("cpu"):  # it reads its levels back as a number, which the meta device cannot (a few kB)
            self.quantizer = FSQ(levels=list(config.fsq_levels), dim=self.grid[0]).to(here)

    def quantize(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        quantized, indices = self.quantizer(tokens)
        return quantized, indices, quantized.new_zeros(())

    def nearest(self, tokens: Tensor, whole: bool = False) -> Tensor:
        return self.quantizer(tokens)[1]

    def entries(self, indices: Tensor) -> Tensor:
        return self.quantizer.indices_to_codes(indices)


def codebook_use(counts: Tensor) -> tuple[int, float]:
    """From how often each code was used: the codes used at least once, and the perplexity exp(H) of their frequencies
    (the codebook's size when all are used equally, 1 for one code)."""
    p = counts[counts > 0].double() / counts.sum().clamp(min=1)
    return len(p), float((-(p * p.log()).sum()).exp())


def quiet_library() -> None:
    """vector-quantize-pytorch logs through loguru (a k-means initialisation from a batch smaller than the codebook
    warns once per run); the codebook's usage is what vaekit reports instead."""
    from loguru import logger

    logger.disable("vector_quantize_pytorch")


LATENTS: dict[str, type[nn.Module]] = {"gaussian": GaussianLatent, "point": PointLatent, "codebook": CodebookLatent,
                                       "scalar": ScalarLatent}
