"""Encoder and decoder networks, built from the data's shape (C, H, W).

Two families: an MLP (the pytorch/examples VAE is 784-400-20) and a small convolutional net of
stride-2 convolutions. The AE and the VAE use the very same networks; only the width of the
encoder's last layer differs (D codes for the AE, D means + D log-variances for the VAE).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from vaekit.config import ModelConfig

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


def conv_encoder(shape: Shape, channels: tuple[int, ...], out_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    c_in = shape[0]
    for c in channels:
        layers += [nn.Conv2d(c_in, c, 4, stride=2, padding=1), nn.ReLU()]
        c_in = c
    h, w = conv_sizes(shape, len(channels))[-1]
    layers += [nn.Flatten(), nn.Linear(c_in * h * w, out_dim)]
    return nn.Sequential(*layers).to(memory_format=CONV_LAYOUT)


def conv_decoder(latent_dim: int, channels: tuple[int, ...], shape: Shape) -> nn.Sequential:
    """Mirror of `conv_encoder`; output_padding restores odd sizes exactly (7 -> 14 -> 28, 3 -> 7)."""
    sizes = conv_sizes(shape, len(channels))
    h, w = sizes[-1]
    layers: list[nn.Module] = [nn.Linear(latent_dim, channels[-1] * h * w), nn.ReLU(),
                               nn.Unflatten(1, (channels[-1], h, w))]
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


# Each family as (make_encoder(config, input shape, outputs), make_decoder(config, inputs, output shape)): the
# conditioning part (conditioning.py) may widen the encoder's input by a channel and the decoder's by the one-hot
# label; the likelihood says how many numbers per pixel the decoder gives (likelihoods.py: params_per_pixel).
ARCHS = {
    "mlp": (lambda cfg, shape, out: mlp_encoder(shape, cfg.hidden, out),
            lambda cfg, inputs, shape: mlp_decoder(inputs, cfg.hidden, shape)),
    "conv": (lambda cfg, shape, out: conv_encoder(shape, cfg.channels, out),
             lambda cfg, inputs, shape: conv_decoder(inputs, cfg.channels, shape)),
}


def with_defaults(config: ModelConfig) -> ModelConfig:
    """Fill the "auto"/empty fields with sensible choices for the image size.

    Small grey images get the classic MLP (784-400-20 on 28x28); colour or larger images a conv net
    that halves the resolution until it is about 4x4."""
    c, h, w = config.image_shape
    dims = c * h * w
    arch = config.arch
    if arch == "auto":
        arch = "mlp" if c == 1 and h * w <= 32 * 32 else "conv"
    latent = config.latent_dim or (8 if dims <= 256 else 20 if dims <= 1024 else 64)
    hidden = config.hidden or ((128,) if dims <= 256 else (400,) if dims <= 1024 else (1024, 512))
    channels = config.channels
    if not channels:
        n_down = 0
        while min(h, w) >> n_down >= 8 and n_down < 5:
            n_down += 1
        channels = (32, 64, 128, 256, 256)[: max(n_down, 1)]
    return dataclasses.replace(config, arch=arch, latent_dim=latent, hidden=tuple(hidden), channels=tuple(channels))
