"""Choosing classes: a data set cut down to some of its labels (`--classes`), and the rest of it.

The one-class protocol of anomaly detection trains a model on some classes of a labelled set and scores the
test images of the others as anomalies. Labels keep their original indices, so class names and the feature
classifier's outputs still mean the same class.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from vaekit.config import class_index, class_word, short
from vaekit.data.sets import Dataset, ImageSet
from vaekit.errors import VaekitError


def class_indices(spec: str, data: Dataset) -> list[int]:
    """The label indices named by `spec`: comma-separated indices or class names (case and surrounding spaces
    ignored)."""
    if data.train.labels is None:
        raise VaekitError(f"{data.spec}: has no labels, so --classes cannot choose among them")
    n = max((int(s.labels.max()) for s in (data.train, data.test) if s.labels is not None and len(s.labels)),
            default=-1) + 1
    chosen = []
    for item in (part.strip() for part in spec.split(",")):
        index = class_index(item, data.classes)
        if index is None or index >= max(n, len(data.classes)):
            valid = ", ".join(f"{i} ({c})" for i, c in enumerate(data.classes)) or f"0 to {n - 1}"
            raise VaekitError(f"--classes: no class {short(item)} in {data.spec} (its classes: {valid})")
        chosen.append(index)
    if not chosen or len(set(chosen)) != len(chosen):
        raise VaekitError(f"--classes: {short(spec)} must name each class once")
    return sorted(chosen)


def class_words(indices: list[int], data: Dataset) -> str:
    """'7 (Sneaker)', '0 (T-shirt/top), 1 (Trouser)': indices with their names where the set has them."""
    return ", ".join(class_word(i, data.classes) for i in indices)


def _where(images: ImageSet, indices: list[int], keep: bool) -> ImageSet:
    inside = torch.isin(images.labels.cpu(), torch.tensor(indices))
    return images.subset(torch.nonzero(inside if keep else ~inside).flatten())


def keep_classes(data: Dataset, spec: str) -> Dataset:
    """Only the images whose label is one of `spec`'s classes, in every split."""
    indices = class_indices(spec, data)
    kept = replace(data, train=_where(data.train, indices, True), val=_where(data.val, indices, True),
                   test=_where(data.test, indices, True))
    if min(len(kept.train), len(kept.test)) == 0:
        raise VaekitError(f"--classes {short(spec)}: {data.spec} has no training or test images of those classes")
    kept.notes = [*data.notes, f"only classes {class_words(indices, data)}: {len(kept.train)} train / {len(kept.val)} "
                  f"val / {len(kept.test)} test images"]
    return kept


def other_classes(data: Dataset, spec: str) -> ImageSet:
    """The test images of every class `spec` leaves out: the anomalies of a model trained on `spec`."""
    rest = _where(data.test, class_indices(spec, data), False)
    if len(rest) == 0:
        raise VaekitError(f"{data.spec}: no test images outside classes {short(spec)}")
    return rest
