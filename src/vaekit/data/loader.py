"""Batches of float images in [0, 1] and their labels, drawn from uint8 image sets.

The order of an epoch is a permutation seeded by (seed, epoch), so it needs no saved state: a
resumed run, or every rank of a distributed run, computes the same order and takes its own part.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from vaekit.data.sets import ImageSet


def epoch_batches(n: int, batch_size: int, *, shuffle: bool, seed: int = 0, epoch: int = 0, rank: int = 0,
                  world: int = 1, lockstep: bool = True) -> list[Tensor]:
    """Index batches of one epoch for this rank.

    lockstep (training under DDP): each step takes `batch_size * world` images, rank r its own
    `batch_size`, and the ragged end is dropped so that every rank takes the same number of steps.
    Otherwise (evaluation): rank r takes every world-th image, so each image is seen exactly once."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)) if shuffle \
        else torch.arange(n)
    if world == 1 or not lockstep:
        return list(torch.split(order[rank::world], batch_size))
    step = batch_size * world
    return [order[i * step + rank * batch_size: i * step + (rank + 1) * batch_size] for i in range(n // step)]


class Batches:
    """Iterate an image set in batches (x, y) on `device`: float32 images in [0, 1] and their integer labels (None
    for a set without labels)."""

    def __init__(self, images: ImageSet, batch_size: int, device: torch.device | str = "cpu", *,
                 shuffle: bool = False, seed: int = 0, binarize: bool = False, rank: int = 0, world: int = 1,
                 lockstep: bool = False, workers: int = 0):
        self.device = torch.device(device)
        self.images = images.placed(self.device)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.binarize, self.rank, self.world, self.lockstep, self.workers = binarize, rank, world, lockstep, workers

    def __len__(self) -> int:
        return len(self.indices(0))

    def indices(self, epoch: int) -> list[Tensor]:
        return epoch_batches(len(self.images), self.batch_size, shuffle=self.shuffle, seed=self.seed, epoch=epoch,
                             rank=self.rank, world=self.world, lockstep=self.lockstep)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor | None]]:
        return self.epoch(0)

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[tuple[Tensor, Tensor | None]]:
        """The batches of `epoch`, leaving out the first `skip` (already seen before a resume)."""
        labels = self.images.labels
        for raw, rows in self.images.uint8_batches(self.indices(epoch)[skip:], self.device, self.workers):
            y = None if labels is None else labels[rows.to(labels.device)].to(self.device, non_blocking=True)
            yield self.to_float(raw), y

    def to_float(self, raw: Tensor) -> Tensor:
        x = torch.div(raw, 255.0)  # uint8 -> float32 in one pass
        if self.binarize:  # dynamic binarization: a fresh binary image each time x is drawn
            x = torch.bernoulli(x)
        return x


@torch.no_grad()
def map_batches(fn: Callable[[Tensor, Tensor | None], Tensor], images: ImageSet, batch_size: int,
                device: torch.device | str = "cpu", limit: int | None = None) -> Tensor:
    """fn(x, y) applied to the images and their labels batch by batch (the first `limit` only, if given), results
    concatenated on the CPU: e.g. the codes of a split, `map_batches(model.embed, images, 1000, model.device)`."""
    if limit is not None and limit < len(images):
        images = images.subset(torch.arange(limit))
    return torch.cat([fn(x, y).cpu() for x, y in Batches(images, batch_size, device)])
