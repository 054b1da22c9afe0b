"""Encoder and decoder networks, built from the data's shape (C, H, W).

Three families: an MLP (the pytorch/examples VAE is 784-400-20), a small convolutional net of stride-2
convolutions, and a residual net (GroupNorm, SiLU, residual blocks at each resolution, optional attention at the
lowest) on the same resolutions, for real images. The AE and the VAE use the very same networks; only the width of the
encoder's last layer differs (D codes for the AE, D means + D log-variances for the VAE).

Codes are flat vectors of latent_dim numbers outside the networks, whatever their layout inside: a conv net given
`latent_channels` C keeps its code spatial, a C x h x w grid at its lowest resolution (a 3x3 convolution in, one
out; no dense layer), flattened channel by channel; `code_grid` says the layout of any code as (C, h, w) tokens.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from vaekit.config import MAX_LATENT, ModelConfig
from vaekit.errors import VaekitError

Shape = tuple[int, int, int]

# Convolution weights are kept channels-last (NHWC), the layout oneDNN (CPU) and cuDNN run fastest: the
# default conv net's training step is about 20% faster than in NCHW on 2 CPU cores (bench/README.md).
# Activations follow the weights; checkpoints store plain contiguous tensors either way.
CONV_LAYOUT = torch.channels_last


def mlp_encoder(shape: Shape, hidden: tuple[int, ...], out_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(shape)
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


def mlp_decoder(latent_dim: int, hidden: tuple[int, ...], shape: Shape) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = latent_dim
    for h in reversed(hidden):
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers += [nn.Linear(width, math.prod(shape)), nn.Unflatten(1, shape)]
    return nn.Sequential(*layers)


def conv_sizes(shape: Shape, n_down: int) -> list[tuple[int, int]]:
    """Spatial sizes along the encoder: each 4x4 stride-2 convolution maps n to floor(n / 2)."""
    sizes = [shape[1:]]
    for _ in range(n_down):
        h, w = sizes[-1]
        sizes.append((h // 2, w // 2))
    return sizes


def conv_encoder(shape: Shape, channels: tuple[int, ...], out_dim: int, spatial: bool = False) -> nn.Sequential:
    """Stride-2 convolutions down to about 4x4, then a dense layer to `out_dim` numbers, or, `spatial`, a 3x3
    convolution to out_dim / (h * w) channels at that resolution (flattened channel by channel)."""
    layers: list[nn.Module] = []
    c_in = shape[0]
    for c in channels:
        layers += [nn.Conv2d(c_in, c, 4, stride=2, padding=1), nn.ReLU()]
        c_in = c
    h, w = conv_sizes(shape, len(channels))[-1]
    layers += ([nn.Conv2d(c_in, out_dim // (h * w), 3, padding=1), nn.Flatten()] if spatial else
               [nn.Flatten(), nn.Linear(c_in * h * w, out_dim)])
    return nn.Sequential(*layers).to(memory_format=CONV_LAYOUT)


class GridInput(nn.Module):
    """A spatial decoder's first layer: the flat code back to its C x h x w grid, any numbers after it (a
    conditional model's one-hot label) as constant planes beside it, and a 3x3 convolution to `width` channels."""

    def __init__(self, grid: Shape, extra: int, width: int):
        super().__init__()
        self.grid, self.size = grid, math.prod(grid)
        self.conv = nn.Conv2d(grid[0] + extra, width, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        code, extra = z[:, :self.size].reshape(-1, *self.grid), z[:, self.size:]
        planes = extra[:, :, None, None].expand(-1, -1, *self.grid[1:])
        return self.conv(torch.cat([code, planes], 1).contiguous(memory_format=CONV_LAYOUT))


def conv_decoder(latent_dim: int, channels: tuple[int, ...], shape: Shape, grid: Shape | None = None
                 ) -> nn.Sequential:
    """Mirror of `conv_encoder` (its first layer a `GridInput` for a spatial code of layout `grid`, whose first
    latent_dim numbers are the code); output_padding restores odd sizes exactly (7 -> 14 -> 28, 3 -> 7)."""
    sizes = conv_sizes(shape, len(channels))
    h, w = sizes[-1]
    layers: list[nn.Module] = ([GridInput(grid, latent_dim - math.prod(grid), channels[-1]), nn.ReLU()] if grid else
                               [nn.Linear(latent_dim, channels[-1] * h * w), nn.ReLU(),
                                nn.Unflatten(1, (channels[-1], h, w))])
    outs = list(reversed(channels[:-1])) + [shape[0]]
    c_in = channels[-1]
    for i, c_out in enumerate(outs):
        (h_in, w_in), (h_out, w_out) = sizes[-1 - i], sizes[-2 - i]
        pad = (h_out - 2 * h_in, w_out - 2 * w_in)
        layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, output_padding=pad))
        if i < len(outs) - 1:
            layers.append(nn.ReLU())
        c_in = c_out
    return nn.Sequential(*layers).to(memory_format=CONV_LAYOUT)


def norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, c), c)


class ResBlock(nn.Module):
    """x + f(x), f = (GroupNorm, SiLU, 3x3 convolution) twice, its last convolution starting at zero: each block
    begins as the identity, so a deep net trains like a shallow one at first."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(norm(c), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1),
                                  norm(c), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1))
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Attention(nn.Module):
    """x + self-attention of one head over the positions (written out: exported to ONNX as plain matmuls)."""

    def __init__(self, c: int):
        super().__init__()
        self.norm, self.qkv, self.out = norm(c), nn.Conv2d(c, 3 * c, 1), nn.Conv2d(c, c, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        weights = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c), dim=-1)  # (b, positions, positions)
        return x + self.out((v @ weights.transpose(1, 2)).reshape(b, c, h, w))


def middle(c: int, blocks: int, attention: bool) -> list[nn.Module]:
    """The lowest resolution's blocks: residual blocks around an attention layer, where asked for."""
    return [ResBlock(c), *([Attention(c)] if attention else []), *(ResBlock(c) for _ in range(blocks - 1))]


def resnet_encoder(shape: Shape, cfg: ModelConfig, out_dim: int, spatial: bool) -> nn.Sequential:
    """A 3x3 stem, then per resolution `res_blocks` residual blocks and a 4x4 stride-2 convolution to the next
    width (the conv net's sizes), the middle blocks, GroupNorm and SiLU; then a dense layer to `out_dim`, or, for a
    spatial code, a 3x3 convolution to out_dim / (h * w) channels."""
    channels = cfg.channels
    layers: list[nn.Module] = [nn.Conv2d(shape[0], channels[0], 3, padding=1)]
    c_in = channels[0]
    for c in channels:
        layers += [*(ResBlock(c_in) for _ in range(cfg.res_blocks)), nn.Conv2d(c_in, c, 4, stride=2, padding=1)]
        c_in = c
    h, w = conv_sizes(shape, len(channels))[-1]
    layers += [*middle(c_in, cfg.res_blocks, cfg.attention), norm(c_in), nn.SiLU()]
    layers += ([nn.Conv2d(c_in, out_dim // (h * w), 3, padding=1), nn.Flatten()] if spatial else
               [nn.Flatten(), nn.Linear(c_in * h * w, out_dim)])
    return nn.Sequential(*layers).to(memory_format=CONV_LAYOUT)


def resnet_decoder(latent_dim: int, cfg: ModelConfig, shape: Shape, grid: Shape | None) -> nn.Sequential:
    """Mirror of `resnet_encoder`: the code to the lowest resolution (a dense layer, or a `GridInput`), the middle
    blocks, then per resolution a 4x4 stride-2 transposed convolution and residual blocks, GroupNorm, SiLU and a 3x3
    convolution to the likelihood's numbers per pixel."""
    channels, sizes = cfg.channels, conv_sizes(shape, len(cfg.channels))
    top, (h, w) = channels[-1], sizes[-1]
    layers: list[nn.Module] = ([GridInput(grid, latent_dim - math.prod(grid), top)] if grid else
                               [nn.Linear(latent_dim, top * h * w), nn.Unflatten(1, (top, h, w))])
    layers += middle(top, cfg.res_blocks, cfg.attention)
    c_in = top
    for i, c_out in enumerate([*reversed(channels[:-1]), channels[0]]):
        (h_in, w_in), (h_out, w_out) = sizes[-1 - i], sizes[-2 - i]
        layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, output_padding=(h_out - 2 * h_in,
                                                                                           w_out - 2 * w_in)),
                   *(ResBlock(c_out) for _ in range(cfg.res_blocks))]
        c_in = c_out
    layers += [norm(c_in), nn.SiLU(), nn.Conv2d(c_in, shape[0], 3, padding=1)]
    return nn.Sequential(*layers).to(memory_format=CONV_LAYOUT)


# Each family as (make_encoder(config, input shape, outputs), make_decoder(config, inputs, output shape)): the
# conditioning part (conditioning.py) may widen the encoder's input by a channel and the decoder's by the one-hot
# label; the likelihood says how many numbers per pixel the decoder gives (likelihoods.py: params_per_pixel).
ARCHS = {
    "mlp": (lambda cfg, shape, out: mlp_encoder(shape, cfg.hidden, out),
            lambda cfg, inputs, shape: mlp_decoder(inputs, cfg.hidden, shape)),
    "conv": (lambda cfg, shape, out: conv_encoder(shape, cfg.channels, out, spatial=bool(cfg.latent_channels)),
             lambda cfg, inputs, shape: conv_decoder(inputs, cfg.channels, shape,
                                                     code_grid(cfg) if cfg.latent_channels else None)),
    "resnet": (lambda cfg, shape, out: resnet_encoder(shape, cfg, out, spatial=bool(cfg.latent_channels)),
               lambda cfg, inputs, shape: resnet_decoder(inputs, cfg, shape,
                                                         code_grid(cfg) if cfg.latent_channels else None)),
}
SPATIAL = ("conv", "resnet")  # the families that keep a code of tokens spatial


def code_grid(config: ModelConfig) -> Shape:
    """The layout of a code as (C, h, w) tokens of C numbers: the conv net's C x h x w grid given latent_channels
    C, latent_dim / C tokens in a row for an MLP, else one token of latent_dim numbers."""
    c = config.latent_channels or 0
    if c and config.arch in SPATIAL:
        return (c, *conv_sizes(config.image_shape, len(config.channels))[-1])
    return (c, 1, config.latent_dim // c) if c else (config.latent_dim, 1, 1)


def with_defaults(config: ModelConfig) -> ModelConfig:
    """Fill the "auto"/empty fields with sensible choices for the image size.

    Small grey images get the classic MLP (784-400-20 on 28x28); colour images the residual net, and larger grey
    images and codes of tokens a conv net, each halving the resolution until it is about 4x4 (7x7 on 28x28)."""
    c, h, w = config.image_shape
    dims = c * h * w
    tokens = config.latent_channels or 0
    arch = config.arch
    if arch == "auto":  # colour: the residual net; a code of tokens: a net that keeps it spatial
        arch = "resnet" if c == 3 else "mlp" if h * w <= 32 * 32 and not tokens else "conv"
    latent = config.latent_dim or (8 if dims <= 256 else 20 if dims <= 1024 else 64)
    hidden = config.hidden or ((128,) if dims <= 256 else (400,) if dims <= 1024 else (1024, 512))
    channels = config.channels
    if not channels:
        n_down = 0
        while min(h, w) >> n_down >= 8 and n_down < 5:
            n_down += 1
        channels = (32, 64, 128, 256, 256)[: max(n_down, 1)]
    if tokens and arch == "mlp" and not config.latent_dim:  # an MLP's tokens: 16 of them unless the size is given
        latent = 16 * tokens
        if latent > MAX_LATENT:
            raise VaekitError(f"16 tokens of --latent-channels {tokens} make {latent:,} numbers, more than "
                              f"{MAX_LATENT:,}; give fewer channels or a --latent-dim")
    filled = dataclasses.replace(config, arch=arch, latent_dim=latent, hidden=tuple(hidden), channels=tuple(channels),
                                 latent_channels=tokens)
    if tokens and arch in SPATIAL:  # the grid sets the size
        grid = code_grid(filled)
        if 0 in grid:
            raise VaekitError(f"a {h}x{w} image is too small for {len(channels)} stride-2 convolutions")
        if math.prod(grid) > MAX_LATENT:
            raise VaekitError(f"the spatial code of {'x'.join(map(str, grid))} = {math.prod(grid):,} numbers is more "
                              f"than {MAX_LATENT:,}; use fewer --latent-channels or more --conv-channels layers")
        if config.latent_dim not in (0, math.prod(grid)):
            raise VaekitError(f"--latent-dim {config.latent_dim} does not match the spatial code of "
                              f"{'x'.join(map(str, grid))} = {math.prod(grid)} numbers; leave it out")
        filled = dataclasses.replace(filled, latent_dim=math.prod(grid))
    return filled


def network_words(c: ModelConfig) -> str:
    """A model's network in a few words: the MLP's hidden widths, the conv and residual nets' channels."""
    if c.arch == "mlp":
        return f"hidden {','.join(map(str, c.hidden))}"
    blocks = f", {c.res_blocks} blocks a resolution{', attention' if c.attention else ''}" if c.arch == "resnet" else ""
    return f"channels {','.join(map(str, c.channels))}{blocks}"
