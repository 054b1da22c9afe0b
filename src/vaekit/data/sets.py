"""Image sets and their train / validation / test splits.

Every set hands out uint8 images shaped (N, C, H, W); conversion to floats in [0, 1] happens
per batch (`vaekit.data.loader`). Small sets live in memory as one tensor; large image folders
stay on disk and are decoded by DataLoader workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vaekit.config import DataConfig
from vaekit.errors import VaekitError


class ImageSet:
    """A sized collection of uint8 images (C, H, W) with optional integer labels."""

    shape: tuple[int, int, int]
    labels: Tensor | None

    def __len__(self) -> int:
        raise NotImplementedError

    def subset(self, indices: Tensor) -> ImageSet:
        raise NotImplementedError


class TensorImages(ImageSet):
    """All images in one uint8 tensor; a batch is one indexing operation, no per-sample Python."""

    def __init__(self, images: Tensor, labels: Tensor | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError("TensorImages wants a uint8 tensor shaped (N, C, H, W)")
        self.images = images
        self.labels = labels
        self.shape = tuple(images.shape[1:])

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: Tensor) -> TensorImages:
        return TensorImages(self.images[indices], None if self.labels is None else self.labels[indices])

    def to(self, device: torch.device | str) -> TensorImages:
        """Keep the uint8 data on the training device: batches are then sliced there, no copies per step."""
        return TensorImages(self.images.to(device), None if self.labels is None else self.labels.to(device))


class FileImages(ImageSet, torch.utils.data.Dataset):
    """Image files decoded on demand (folders too large for memory), for a DataLoader with workers.

    A file that fails to decode comes back as its VaekitError rather than raising inside a worker process;
    `collate` (which runs in the worker) passes the errors on beside the good images, and the main process
    stops with that one line or skips the image with a warning (`skip_bad`)."""

    def __init__(self, files: list[Path], labels: Tensor | None, shape: tuple[int, int, int], resize: str = "crop",
                 background: str = "white", skip_bad: bool = False):
        self.files, self.labels, self.shape = files, labels, shape
        self.resize, self.background, self.skip_bad = resize, background, skip_bad

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Tensor | VaekitError:
        from vaekit.data.folder import load_image

        try:
            return load_image(self.files[i], self.shape, self.resize, self.background)
        except VaekitError as e:
            return e

    def collate(self, items: list[Tensor | VaekitError]) -> tuple[Tensor, list[VaekitError]]:
        good = [item for item in items if isinstance(item, Tensor)]
        batch = torch.stack(good) if good else torch.empty(0, *self.shape, dtype=torch.uint8)
        return batch, [item for item in items if isinstance(item, VaekitError)]

    def subset(self, indices: Tensor) -> FileImages:
        files = [self.files[i] for i in indices.tolist()]
        return FileImages(files, None if self.labels is None else self.labels[indices], self.shape, self.resize,
                          self.background, self.skip_bad)


@dataclass
class Dataset:
    """A named data set split three ways; `spec` says how to load it again (stored in checkpoints)."""

    spec: str
    train: ImageSet
    val: ImageSet
    test: ImageSet
    classes: list[str] = field(default_factory=list)
    label_source: str = "none"  # what the labels are, in words (for logs and reports)
    notes: list[str] = field(default_factory=list)  # what loading did to the images, in words

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.train.shape

    def split(self, name: str) -> ImageSet:
        if name not in ("train", "val", "test"):
            raise VaekitError(f"unknown split {name!r} (choose from train, val, test)")
        return getattr(self, name)

    def describe(self) -> str:
        c, h, w = self.shape
        return (f"{self.spec}: {len(self.train)} train / {len(self.val)} val / {len(self.test)} test images, "
                f"{c}x{h}x{w}")


def evaluation_view(data: Dataset, config: DataConfig) -> Dataset:
    """The data as a model trained with `config` is evaluated. With `binarize`, training draws fresh binary
    images every time, while the validation and test images are binarized once with a fixed seed (the
    literature's protocol), so every evaluation of every model sees the same binary images."""
    if not config.binarize or not isinstance(data.test, TensorImages) or not isinstance(data.val, TensorImages):
        return data
    note = "validation and test images binarized once with a fixed seed (the model was trained with --binarize)"
    return replace(data, val=binarize_once(data.val, seed=1), test=binarize_once(data.test, seed=2),
                   notes=[*data.notes, note])


def binarize_once(images: TensorImages, seed: int) -> TensorImages:
    g = torch.Generator().manual_seed(seed)
    binary = torch.bernoulli(images.images.float() / 255.0, generator=g).to(torch.uint8) * 255
    return TensorImages(binary, images.labels)


def split_indices(n: int, fractions: tuple[float, ...], seed: int = 0) -> list[Tensor]:
    """A fixed seeded permutation of range(n) cut into len(fractions) + 1 parts (the rest first).

    The split seed is independent of the training seed, so runs with different seeds are evaluated
    on the same held-out images."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    sizes = [int(round(f * n)) for f in fractions]
    rest = n - sum(sizes)
    if rest < 1 or any(s < 1 for s in sizes):
        raise VaekitError(f"{n} images are too few to split into train/val/test")
    return list(torch.split(perm, [rest, *sizes]))


def from_arrays(images: np.ndarray, labels: np.ndarray | None) -> TensorImages:
    return TensorImages(torch.from_numpy(np.ascontiguousarray(images)),
                        None if labels is None else torch.from_numpy(labels.astype(np.int64)))
