"""Images a model was not trained on, for out-of-distribution tests (`vaekit ood --ood NAME`).

  held-out              the test images of the classes a model trained with --classes left out
  noise, invert,        the model's own test images corrupted: Gaussian noise (sigma 0.2 of the pixel range,
  hflip, vflip          clipped), inverted (1 - x: dark ink on light, for Fashion-MNIST), mirrored, upside down
  any data set name     fashion-mnist, mnist, digits, folder:PATH, npz:PATH, npy:PATH: all its images (test first),
                        read with the model's own settings (image size, channels, binarization), and brought to the
                        model's shape where they differ (the 8x8 digits are upscaled to 28x28 bilinearly; RGB
                        becomes grey by luminance, grey becomes RGB by repetition)
Each set is gathered in memory, at most `limit` images.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vaekit.config import DataConfig, short
from vaekit.data.classes import class_words, other_classes
from vaekit.data.loader import map_batches
from vaekit.data.sets import Dataset, ImageSet, TensorImages, evaluation_view, pick
from vaekit.errors import VaekitError

CORRUPTIONS = {
    "noise": "its test images with Gaussian noise (sigma 0.2 of the pixel range, clipped)",
    "invert": "its test images inverted (1 - x)",
    "hflip": "its test images mirrored left to right",
    "vflip": "its test images upside down",
}


def corrupt(x: Tensor, kind: str, seed: int = 0) -> Tensor:
    """A corruption of float images in [0, 1] (B, C, H, W)."""
    if kind == "noise":
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)).to(x.device)
        return (x + 0.2 * noise).clamp(0, 1)
    if kind == "invert":
        return 1 - x
    return x.flip(-1 if kind == "hflip" else -2)


def to_uint8(x: Tensor) -> Tensor:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def gather(images: ImageSet, limit: int) -> TensorImages:
    """The first `limit` images of a set, in memory as uint8, with their labels and names."""
    n = min(limit, len(images))
    first = torch.arange(n)
    pixels = map_batches(lambda x, _: to_uint8(x), images, 1000, limit=n) if n else \
        torch.empty(0, *images.shape, dtype=torch.uint8)
    return TensorImages(pixels, pick(images.labels, first), pick(images.names, first))


def fit_shape(images: TensorImages, shape: tuple[int, int, int]) -> tuple[TensorImages, str | None]:
    """Images brought to (C, H, W): channels converted, size resized bilinearly (antialiased when shrinking)."""
    if images.shape == tuple(shape):
        return images, None
    c, h, w = shape
    x = images.images.float() / 255
    if x.shape[1] == 3 and c == 1:
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    elif x.shape[1] == 1 and c == 3:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    note = f"brought from {'x'.join(map(str, images.shape))} to the model's {'x'.join(map(str, shape))}"
    return TensorImages(to_uint8(x), images.labels, images.names), note


def all_images(data: Dataset, limit: int) -> TensorImages:
    """Up to `limit` images of a data set, the test split first, then validation, then training."""
    parts, left = [], limit
    for split in (data.test, data.val, data.train):
        if left > 0 and len(split):
            parts.append(gather(split, left))
            left -= len(parts[-1])
    names = [p.names for p in parts]
    return TensorImages(torch.cat([p.images for p in parts]),
                        torch.cat([p.labels for p in parts]) if all(p.labels is not None for p in parts) else None,
                        None if any(n is None for n in names) else np.concatenate(names))


def other_data_config(config: DataConfig, name: str, shape: tuple[int, int, int]) -> DataConfig:
    """How the data set `name` is read for a model trained with `config` on images of `shape` (every command alike):
    all of its classes, with the model's reading settings, and folders brought to the model's size and channels
    (grey + alpha for an RGB model becomes RGB, as any image of another size is fitted)."""
    size = config.image_size or (shape[1] if shape[1] == shape[2] else 0)
    return replace(config, name=name, classes="", image_size=size, channels=shape[0])


def ood_set(name: str, config: DataConfig, own: Dataset, shape: tuple[int, int, int], limit: int,
            seed: int = 0) -> tuple[TensorImages, str]:
    """The images `name` stands for (see the module's docstring) and what they are, in words. `config` is the
    data config the model was trained with and `own` its data as evaluated."""
    from vaekit.data.sources import load_dataset

    if name in CORRUPTIONS:
        test = gather(own.test, limit)
        x = corrupt(test.images.float() / 255, name, seed)
        return TensorImages(to_uint8(x), test.labels, test.names), f"{own.spec}: {CORRUPTIONS[name]}"
    if name == "held-out":
        if not config.classes:
            raise VaekitError("--ood held-out: the model was trained on every class (train with --classes to hold "
                              "some out)")
        full = load_dataset(replace(config, classes=""))
        rest = gather(other_classes(evaluation_view(full, config), config.classes), limit)
        return rest, f"{full.spec}: the test images of the classes the model never saw (it was trained on " \
                     f"{class_words(sorted(set(own.train.labels.tolist())), full)})"
    try:
        other = evaluation_view(load_dataset(other_data_config(config, name, shape), whole=True), config)  # unsplit
    except VaekitError as e:
        raise VaekitError(f"--ood {short(name)}: {e} (or one of: held-out, {', '.join(CORRUPTIONS)})") from None
    images, note = fit_shape(all_images(other, limit), shape)
    return images, f"{other.spec}: {len(images)} images" + (f", {note}" if note else "")
