"""A learned prior over discrete codes: a small PixelCNN (van den Oord et al., 2016) over the grid of a code's token
indices, fitted after training to the training codes of a model whose latent is discrete (vqvae, fsq), as the
VQ-VAE paper does. It draws one token at a time, each given the ones above and to its left.

Its vocabulary is read off the codes themselves (the distinct tokens they hold, exact codebook entries), so the
prior needs nothing from the model but its codes and their layout, and lives in priors.safetensors like any sampler.
Over z it has no density (the codes are discrete); its probabilities are over code indices.

  first layer   a 5x5 convolution masked to the tokens strictly before each one (mask A)
  then          residual 3x3 convolutions masked to those and the token itself (mask B), and a 1x1 to the logits
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAX_VOCAB = 65_536  # distinct tokens a code prior is fitted over (the largest codebook a config allows)
MAX_WIDTH, MAX_DEPTH, MAX_KERNEL, MAX_TOKENS = 1024, 32, 15, 65_536
LOGITS = 2**24  # logits held at once (64 MB): the codes per batch of a fit or a draw shrink to keep under it


def rows_within(vocab: int, width: int, grid: tuple[int, int, int], wanted: int) -> int:
    """How many codes a batch may hold so that its logits (rows, vocab, h, w) and activations (rows, width, h, w)
    stay within LOGITS numbers each."""
    return max(1, min(wanted, LOGITS // (max(vocab, width) * grid[1] * grid[2])))


def vocabulary(codes: Tensor, grid: tuple[int, int, int]) -> tuple[Tensor, Tensor]:
    """The distinct tokens of `codes` (N, C*h*w) laid out as `grid` (C, h, w), (V, C), and each code's token indices
    into them, (N, h, w). Raises ValueError for codes that are not discrete (more than MAX_VOCAB distinct tokens)."""
    c, h, w = grid
    tokens = codes.reshape(len(codes), c, h * w).transpose(1, 2).reshape(-1, c)
    vocab, inverse = torch.unique(tokens, dim=0, return_inverse=True)
    if len(vocab) > MAX_VOCAB or not torch.isfinite(vocab).all():
        raise ValueError(f"the codes hold {len(vocab):,} distinct tokens (at most {MAX_VOCAB:,} finite ones for a "
                         "code prior): they are not discrete")
    return vocab, inverse.reshape(len(codes), h, w)


def causal_mask(kernel: int, first: bool, device: torch.device) -> Tensor:
    """1 where a kernel may look: the rows above and, in the middle row, the left (and the centre unless `first`)."""
    mask = torch.ones(kernel, kernel, device=device)
    mask[kernel // 2, kernel // 2 + (0 if first else 1):] = 0
    mask[kernel // 2 + 1:] = 0
    return mask


def pixelcnn_logits(t: dict[str, Tensor], depth: int, indices: Tensor) -> Tensor:
    """The logits of every token given the ones before it, (B, V, h, w), from token indices (B, h, w)."""
    h = t["embed"][indices].permute(0, 3, 1, 2)
    for i in range(depth):
        weight = t[f"weight{i}"]
        k = weight.shape[-1]
        out = F.conv2d(h if i == 0 else F.relu(h), weight * causal_mask(k, i == 0, weight.device), t[f"bias{i}"],
                       padding=k // 2)
        h = out if i in (0, depth - 1) else h + out
    return h


class CodePrior(nn.Module):
    """p(indices) = prod_t p(index_t | indices before t), a PixelCNN held as tensors (non-persistent buffers, saved in
    priors.safetensors); z is its vocabulary's tokens at the drawn indices."""

    is_standard_normal = False

    def __init__(self, tensors: dict[str, Tensor], grid: tuple[int, int, int]):
        super().__init__()
        self.grid, self.depth = grid, sum(1 for name in tensors if name.startswith("weight"))
        for name, value in tensors.items():
            self.register_buffer(name, value, persistent=False)

    @property
    def words(self) -> str:
        c, h, w = self.grid
        return (f"a PixelCNN ({self.depth} masked convolutions) fitted to the training codes' {h}x{w} grid of indices "
                f"into {len(self.vocab)} distinct codes")

    def tensors(self) -> dict[str, Tensor]:
        return {name: buffer for name, buffer in self.named_buffers()}

    def logits(self, indices: Tensor) -> Tensor:
        return pixelcnn_logits(self.tensors(), self.depth, indices)

    def closed_form_kl(self, q: object) -> None:
        return None

    def log_prob(self, z: Tensor) -> Tensor:
        raise ValueError("the code prior has no density over z: its probabilities are over discrete code indices")

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Token by token in raster order, each drawn from its conditional given those before it; at most 4096 codes
        at a time (fewer where the vocabulary is large: `rows_within`)."""
        chunk = rows_within(len(self.vocab), self.embed.shape[1], self.grid, 4096)
        parts = [self.draw(len(rows), generator) for rows in torch.arange(n).split(chunk)]
        return torch.cat(parts) if parts else self.vocab.new_zeros(0, math.prod(self.grid))

    def draw(self, n: int, generator: torch.Generator | None) -> Tensor:
        c, h, w = self.grid
        indices = torch.zeros(n, h, w, dtype=torch.long, device=self.vocab.device)
        for i in range(h):
            for j in range(w):
                probs = torch.softmax(self.logits(indices)[:, :, i, j].float(), dim=1)
                indices[:, i, j] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        return self.vocab[indices].permute(0, 3, 1, 2).reshape(n, c * h * w)


def fit_code_prior(codes: Tensor, epochs: int, seed: int, grid: tuple[int, int, int], width: int = 32,
                   residual: int = 3, batch: int = 128, lr: float = 1e-3) -> CodePrior:
    """Train the PixelCNN on the codes' token indices (cross-entropy, Adam) and keep its tensors. Raises ValueError
    for codes that are not discrete or are too few."""
    if len(codes) < 2:
        raise ValueError(f"cannot fit a code prior to {len(codes)} codes")
    vocab, indices = vocabulary(codes.detach().float(), grid)
    batch = rows_within(len(vocab), width, grid, batch)
    devices = [codes.device] if codes.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.enable_grad():  # the caller's RNG and no_grad stay as they were
        torch.manual_seed(seed)
        layers = [nn.Conv2d(width, width, 5), *(nn.Conv2d(width, width, 3) for _ in range(residual)),
                  nn.Conv2d(width, len(vocab), 1)]
        params = {"embed": nn.Parameter(torch.randn(len(vocab), width))}
        params |= {f"{kind}{i}": getattr(layer, kind) for i, layer in enumerate(layers) for kind in ("weight", "bias")}
        params = {name: p.detach().to(codes.device).requires_grad_() for name, p in params.items()}
        optimizer = torch.optim.Adam(params.values(), lr=lr)
        order = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            for rows in torch.randperm(len(indices), generator=order).split(batch):
                target = indices[rows.to(indices.device)]
                loss = F.cross_entropy(pixelcnn_logits(params, len(layers), target), target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    tensors = {name: p.detach() for name, p in params.items()}
    if not all(torch.isfinite(t).all() for t in tensors.values()):
        raise ValueError("the code prior diverged (its weights are not finite)")
    return CodePrior({"vocab": vocab, **tensors}, grid)


def code_prior_from_tensors(t: dict[str, Tensor], grid: tuple[int, int, int], where: str) -> CodePrior:
    """A code prior read back from a file, after checking that its tensors chain (embedding, masked convolutions, the
    logits over its vocabulary), fit the model's code layout `grid` and hold finite values."""
    depth = sum(1 for name in t if name.startswith("weight"))
    names = {"vocab", "embed"} | {f"{kind}{i}" for i in range(depth) for kind in ("weight", "bias")}
    if not 2 <= depth <= MAX_DEPTH or set(t) != names or not all(v.is_floating_point() for v in t.values()):
        raise ValueError(f"{where}: the code prior needs vocab, embed, weight0, bias0, ... as floating-point tensors")
    t = {name: v.float() for name, v in t.items()}
    vocab, embed = t["vocab"], t["embed"]
    v = len(vocab)
    chained = vocab.ndim == 2 and vocab.shape[1] == grid[0] and 1 <= v <= MAX_VOCAB and embed.ndim == 2 \
        and len(embed) == v and 1 <= embed.shape[1] <= MAX_WIDTH and grid[1] * grid[2] <= MAX_TOKENS
    width = embed.shape[1] if embed.ndim == 2 else -1
    for i in range(depth):
        weight, bias = t[f"weight{i}"], t[f"bias{i}"]
        out = v if i == depth - 1 else width
        k = weight.shape[-1] if weight.ndim == 4 else 0
        chained = chained and weight.shape == (out, width, k, k) and k % 2 == 1 and k <= MAX_KERNEL \
            and bias.shape == (out,)
    if not chained or not all(torch.isfinite(value).all() for value in t.values()):
        raise ValueError(f"{where}: the code prior's tensors do not chain to logits over its vocabulary for "
                         f"{'x'.join(map(str, grid))} codes, or hold values that are not finite")
    return CodePrior(t, grid)
