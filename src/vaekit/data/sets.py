"""Image sets and their train / validation / test splits.

Every set hands out uint8 images shaped (N, C, H, W), a batch at a time (`uint8_batches`); conversion to floats
in [0, 1] happens per batch (`vaekit.data.loader`). Three kinds of set, one interface:

- `TensorImages`: all images in one tensor, in memory or on the GPU (small sets, and folders that fit);
- `DiskImages`: one raw uint8 file on disk, memory-mapped and read a batch at a time (folders larger than memory,
  decoded once by `vaekit.data.cache`);
- `FileImages`: image files decoded on demand by DataLoader workers (large folders with the cache turned off).
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vaekit.config import DataConfig
from vaekit.errors import VaekitError, path_text, warn

Batch = tuple[Tensor, Tensor]  # uint8 images (B, C, H, W) and their indices in the set

DEVICE_SHARE = 0.5  # image sets up to this share of a GPU's free memory live on it; larger ones stay pinned on the host


class ImageSet:
    """A sized collection of uint8 images (C, H, W) with optional integer labels and file names."""

    shape: tuple[int, int, int]
    labels: Tensor | None
    names: np.ndarray | None = None  # where each image came from (a folder's files), where known
    masks: Tensor | None = None  # bool (N, H, W): each image's defective pixels, where known (inspection data)
    in_memory: bool = False  # every image one index away (the feature classifier needs that)

    def __len__(self) -> int:
        raise NotImplementedError

    def subset(self, indices: Tensor) -> ImageSet:
        raise NotImplementedError

    def placed(self, device: torch.device) -> ImageSet:
        """This set as batches for `device` are best cut from it (the same set unless it can move there)."""
        return self

    def uint8_batches(self, batches: list[Tensor], device: torch.device, workers: int = 0) -> Iterator[Batch]:
        """The images of each index batch, as uint8 (B, C, H, W) on `device`, with the indices they came from (the
        whole batch, unless unreadable files were skipped)."""
        raise NotImplementedError


class TensorImages(ImageSet):
    """All images in one uint8 tensor; a batch is one indexing operation, no per-sample Python."""

    in_memory = True

    def __init__(self, images: Tensor, labels: Tensor | None = None, names: np.ndarray | None = None,
                 masks: Tensor | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError("TensorImages wants a uint8 tensor shaped (N, C, H, W)")
        if masks is not None and (masks.dtype != torch.bool or masks.shape != (len(images), *images.shape[2:])):
            raise ValueError("TensorImages' masks are bool, shaped (N, H, W) as its images")
        self.images = images
        self.labels, self.names, self.masks = labels, names, masks
        self.shape = tuple(images.shape[1:])

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: Tensor) -> TensorImages:
        return TensorImages(self.images[indices], pick(self.labels, indices), pick(self.names, indices),
                            pick(self.masks, indices))

    def to(self, device: torch.device | str) -> TensorImages:
        return TensorImages(self.images.to(device), None if self.labels is None else self.labels.to(device),
                            self.names, self.masks)

    def placed(self, device: torch.device) -> TensorImages:
        """On the training device when it fits there (batches are then sliced on it, no copy per step); on a GPU
        too small for it, left on the host, each batch gathered into pinned memory and copied asynchronously."""
        if device.type != "cuda" or on(self.images, device):
            return self.to(device)
        free, _ = torch.cuda.mem_get_info(device)
        return self.to(device) if self.images.numel() <= DEVICE_SHARE * free else self

    def uint8_batches(self, batches: list[Tensor], device: torch.device, workers: int = 0) -> Iterator[Batch]:
        images = self.images
        if on(images, device):
            if not batches:
                return
            order = torch.cat(batches).to(device)  # one copy of the epoch's order, not one per step
            for idx in order.split([len(b) for b in batches]):
                yield images.index_select(0, idx), idx
            return
        for idx in batches:
            out = torch.empty((len(idx), *self.shape), dtype=torch.uint8, pin_memory=device.type == "cuda")
            yield torch.index_select(images, 0, idx, out=out).to(device, non_blocking=True), idx


def pick(values: Tensor | np.ndarray | None, indices: Tensor) -> Tensor | np.ndarray | None:
    """The entries of a per-image column (labels, names) at `indices`, or None where the column is absent."""
    if values is None:
        return None
    return values[indices] if isinstance(values, Tensor) else values[indices.cpu().numpy()]


def on(tensor: Tensor, device: torch.device) -> bool:
    """Whether `tensor` lives on `device` ("cuda" means the current GPU, as PyTorch reads it)."""
    return tensor.device.type == device.type and device.index in (None, tensor.device.index)


class DiskImages(ImageSet):
    """Images in one raw uint8 file, (N, C, H, W) in C order, read a batch at a time.

    The file is memory-mapped for fast gathers, and the pages a batch touched are released from the process
    right after (`madvise(DONTNEED)`): the process holds the batches in flight, not the file, whatever its size
    (the operating system's page cache keeps what fits in memory). The mapping is made at the start, so a newer
    run that replaces the file (the folder changed) does not pull it from under this one."""

    def __init__(self, file: Path | Mapped, shape: tuple[int, int, int], rows: Tensor,
                 labels: Tensor | None = None, names: np.ndarray | None = None):
        self.file = Mapped.open(file, shape) if isinstance(file, Path) else file
        self.shape, self.rows, self.labels, self.names = shape, rows, labels, names

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, indices: Tensor) -> DiskImages:
        return DiskImages(self.file, self.shape, self.rows[indices], pick(self.labels, indices),
                          pick(self.names, indices))

    def read(self, idx: Tensor, pin: bool = False) -> Tensor:
        rows = self.rows[idx].numpy()
        order = np.argsort(rows, kind="stable")  # in file order: neighbouring rows share pages
        out = torch.empty((len(rows), *self.shape), dtype=torch.uint8, pin_memory=pin)
        out.numpy().reshape(len(rows), -1)[order] = self.file.rows[rows[order]]
        self.file.release()
        return out

    def uint8_batches(self, batches: list[Tensor], device: torch.device, workers: int = 0) -> Iterator[Batch]:
        """Read on the host, into pinned memory for a GPU: the copy is asynchronous, and since the training step
        never waits for the GPU, the next batch is read while the GPU still works on this one."""
        for idx in batches:
            yield self.read(idx, pin=device.type == "cuda").to(device, non_blocking=True), idx


@dataclass
class Mapped:
    """A raw uint8 file mapped read-only as rows of images; the mapping outlives the file's name."""

    view: mmap.mmap
    rows: np.ndarray  # (N, C*H*W), a view of `view`

    @classmethod
    def open(cls, file: Path, shape: tuple[int, int, int]) -> Mapped:
        with open(file, "rb") as f:
            view = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        if len(view) % math.prod(shape):
            raise VaekitError(f"{file}: the decoded copy is not a whole number of images (remove it with `vaekit "
                              "cache clear`)")
        return cls(view, np.frombuffer(view, dtype=np.uint8).reshape(-1, math.prod(shape)))

    def release(self) -> None:
        """Drop the mapped pages from this process (they stay in the page cache; a later read maps them again).
        Where madvise is missing (Windows), the mapping keeps what it touched."""
        if hasattr(self.view, "madvise"):
            self.view.madvise(mmap.MADV_DONTNEED)


def stack_decoded(items: list[Tensor | VaekitError], shape: tuple[int, int, int]) -> tuple[Tensor, list[int],
                                                                                          list[VaekitError]]:
    """Decoded images and decoding errors, as a DataLoader worker hands them on: the good images stacked, their
    positions in `items`, and the errors of the others."""
    kept = [k for k, item in enumerate(items) if isinstance(item, Tensor)]
    batch = torch.stack([items[k] for k in kept]) if kept else torch.empty(0, *shape, dtype=torch.uint8)
    return batch, kept, [item for item in items if isinstance(item, VaekitError)]


class FileImages(ImageSet, torch.utils.data.Dataset):
    """Image files decoded on demand (folders too large for memory, the cache turned off), by DataLoader workers.

    A file that fails to decode comes back as its VaekitError rather than raising inside a worker process;
    `collate` (which runs in the worker) passes the errors on beside the good images, and the main process
    stops with that one line or skips the image with a warning (`skip_bad`)."""

    def __init__(self, files: list[Path], labels: Tensor | None, shape: tuple[int, int, int], resize: str = "crop",
                 background: str = "white", skip_bad: bool = False):
        self.files, self.labels, self.shape = files, labels, shape
        self.resize, self.background, self.skip_bad = resize, background, skip_bad
        self.names = np.array([path_text(f) for f in files], dtype=object)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Tensor | VaekitError:
        from vaekit.data.decode import load_image

        try:
            return load_image(self.files[i], self.shape, self.resize, self.background)
        except VaekitError as e:
            return e

    def collate(self, items: list[Tensor | VaekitError]) -> tuple[Tensor, list[int], list[VaekitError]]:
        return stack_decoded(items, self.shape)

    def subset(self, indices: Tensor) -> FileImages:
        files = [self.files[i] for i in indices.tolist()]
        return FileImages(files, None if self.labels is None else self.labels[indices], self.shape, self.resize,
                          self.background, self.skip_bad)

    def uint8_batches(self, batches: list[Tensor], device: torch.device, workers: int = 0) -> Iterator[Batch]:
        from vaekit.data.decode import bad_image

        loader = torch.utils.data.DataLoader(self, batch_sampler=[b.tolist() for b in batches], num_workers=workers,
                                             pin_memory=device.type == "cuda", collate_fn=self.collate)
        for idx, (raw, kept, errors) in zip(batches, loader):
            for error in errors:
                bad_image(error, skip=self.skip_bad)
            if len(raw):  # a batch whose every image was skipped as unreadable
                yield raw.to(device, non_blocking=True), idx[kept]


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
    fingerprint: str = ""  # a hash of what was read: the same one means the same images in the same order, so the
    # same split ("": not known)
    revised: list[str] = field(default_factory=list)  # what this vaekit reads otherwise than vaekit 0.2.0 did

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.train.shape

    def split(self, name: str) -> ImageSet:
        if name not in ("train", "val", "test"):
            raise VaekitError(f"unknown split {name!r} (choose from train, val, test)")
        return getattr(self, name)

    def label_count(self, why: str) -> int:
        """How many classes the labels name (their largest index + 1, or the class names), for `why`, which needs
        labels; refused in one line on a set without them."""
        if self.train.labels is None or not len(self.train.labels):
            raise VaekitError(f"{why} needs labelled data, and {self.spec} has no labels ({self.label_source})")
        top = max(int(s.labels.max()) for s in (self.train, self.val, self.test) if s.labels is not None
                  and len(s.labels))
        return max(top + 1, len(self.classes))

    def split_record(self) -> dict[str, str | int]:
        """What a checkpoint keeps of the data it was trained on, to tell later whether the data changed."""
        return {"fingerprint": self.fingerprint, "train": len(self.train), "val": len(self.val), "test": len(self.test)}

    def check_unchanged(self, recorded: dict | None, what: str) -> None:
        """Say in one line when this data differs from what `what` was trained on (`recorded`: its
        `split_record`): the split is then drawn anew, and its test images are not the ones it was measured on."""
        if not recorded and self.revised:  # trained by vaekit 0.2.0 or before, which kept no fingerprint
            warn(f"{what} was trained by an earlier vaekit, which read {self.spec} otherwise: "
                 f"{'; '.join(self.revised)}")
        if not recorded or not recorded.get("fingerprint") or not self.fingerprint \
                or recorded["fingerprint"] == self.fingerprint:
            return
        then = " / ".join(str(recorded.get(k, "?")) for k in ("train", "val", "test"))
        now = " / ".join(str(len(s)) for s in (self.train, self.val, self.test))
        warn(f"{self.spec} has changed since {what} was trained (train / val / test images then {then}, now {now}): "
             "the split is drawn anew, so its test images are not the ones it was measured on")

    def describe(self) -> str:
        c, h, w = self.shape
        return (f"{self.spec}: {len(self.train)} train / {len(self.val)} val / {len(self.test)} test images, "
                f"{c}x{h}x{w}")


def evaluation_view(data: Dataset, config: DataConfig) -> Dataset:
    """The data as a model trained with `config` is evaluated. With `binarize`, training draws fresh binary
    images every time, while the validation and test images are binarized once with a fixed seed (the
    literature's protocol), so every evaluation of every model sees the same binary images."""
    if not config.binarize or not isinstance(data.test, TensorImages) or not isinstance(data.val, TensorImages):
        return data  # binarized once in memory; a folder on disk keeps dynamic binarization everywhere
    note = "validation and test images binarized once with a fixed seed (the model was trained with --binarize)"
    return replace(data, val=binarize_once(data.val, seed=1), test=binarize_once(data.test, seed=2),
                   notes=[*data.notes, note])


def binarize_once(images: TensorImages, seed: int) -> TensorImages:
    g = torch.Generator().manual_seed(seed)
    binary = torch.bernoulli(images.images.float() / 255.0, generator=g).to(torch.uint8) * 255
    return TensorImages(binary, images.labels, images.names, images.masks)


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
