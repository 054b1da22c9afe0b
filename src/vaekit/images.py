"""Writing images: PNG grids and single files, each written atomically."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vaekit.files import atomic_write


def to_uint8(images: Tensor) -> np.ndarray:
    """Float images (N, C, H, W) in [0, 1] (values outside are clipped) -> uint8 (N, H, W, C)."""
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def grid(images: Tensor, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile images into one uint8 array (H, W, C) with `nrow` images per row and a white border."""
    pixels = to_uint8(images)
    n, h, w, c = pixels.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    canvas = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        canvas[top:top + h, left:left + w] = pixels[i]
    return canvas


def to_image(array: np.ndarray, scale: int = 1):
    """(H, W, C) uint8 -> a grey or RGB PIL image, enlarged `scale` times by nearest neighbour (pixels stay crisp)."""
    from PIL import Image

    img = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    return img


def scale_for(images: Tensor, height: int) -> int:
    """The whole-number enlargement that brings small images (8x8, 28x28) to about `height` pixels."""
    return max(1, height // images.shape[-2])


def png_bytes(images: Tensor, nrow: int | None = None, pad: int = 2, height: int = 64) -> bytes:
    """Images as the bytes of one PNG: a grid, enlarged to about `height` pixels per image."""
    buf = io.BytesIO()
    to_image(grid(images, nrow, pad), scale_for(images, height)).save(buf, format="PNG")
    return buf.getvalue()


def save_png(array: np.ndarray, path: str | Path, scale: int = 1) -> Path:
    """Save (H, W, C) uint8 as PNG; written to a temporary name and renamed, so no half-written file."""
    with atomic_write(path) as tmp:
        to_image(array, scale).save(tmp, format="PNG")
    return Path(path)


def save_grid(images: Tensor, path: str | Path, nrow: int | None = None, row_labels: list[str] | None = None) -> Path:
    """A PNG grid of images, enlarged so that small (8x8, 28x28) images are visible; `row_labels` written left of
    the rows (a class per row)."""
    img = to_image(grid(images, nrow), scale_for(images, 64))
    if row_labels:
        img = labelled_rows(img, row_labels)
    with atomic_write(path) as tmp:
        img.save(tmp, format="PNG")
    return Path(path)


def labelled_rows(img, labels: list[str]):
    """A grid image with a white margin on its left holding one label per row, centred on the row."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=14)
    width = 10 + max(int(ImageDraw.Draw(img).textlength(label, font=font)) for label in labels)
    white, black = (255, 0) if img.mode == "L" else ((255, 255, 255), (0, 0, 0))
    out = Image.new(img.mode, (img.width + width, img.height), white)
    out.paste(img, (width, 0))
    draw, row = ImageDraw.Draw(out), img.height / len(labels)
    for i, label in enumerate(labels):
        draw.text((4, (i + 0.5) * row), label, fill=black, font=font, anchor="lm")
    return out


def save_files(images: Tensor, folder: str | Path, start: int = 0) -> None:
    """One PNG per image, numbered from `start`."""
    for i, pixels in enumerate(to_uint8(images)):
        save_png(pixels, Path(folder) / f"{start + i:06d}.png")
