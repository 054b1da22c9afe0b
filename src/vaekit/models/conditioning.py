"""Conditioning: the label y as a second input to the encoder and the decoder (the conditional VAE of Sohn et al.,
2015). Any preset can be conditioned; a CVAE is `vae --conditional`.

  q(z | x, y):  the encoder sees y as one more image plane, a learned map of the one-hot label (so the MLP and the
                conv net take it alike, through their first layer)
  p(x | z, y):  the decoder sees the one-hot label beside z
  p(z):         unchanged; generation picks y, draws z ~ p(z) and decodes (z, y)

The model holds one of two parts and never asks which: `Unconditioned` passes images and codes through and ignores
labels; `Labelled` needs them. A model's `classes` (ModelConfig) is 0 for the first, the label count for the second.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaekit.config import class_index, class_word, short
from vaekit.errors import VaekitError

Shape = tuple[int, int, int]


class Unconditioned(nn.Module):
    """No conditioning: the networks see images and codes only; a label given anyway is ignored."""

    classes = 0

    def encoder_shape(self, shape: Shape) -> Shape:
        return shape

    def decoder_inputs(self, latent_dim: int) -> int:
        return latent_dim

    def images(self, x: Tensor, y: Tensor | None) -> Tensor:
        return x

    def codes(self, z: Tensor, y: Tensor | None) -> Tensor:
        return z

    def spread(self, n: int, device: torch.device) -> None:
        """Labels for n draws when the caller names none: none needed."""
        return None

    def fill(self, label: int, n: int, device: torch.device) -> None:
        """Labels for n draws of one class: none needed (an unconditional model ignores a label)."""
        return None

    def check(self, labels: Tensor | None, where: str) -> None:
        """Whether a data set's labels are ones this model knows: any will do."""

    def grid(self, n: int) -> tuple[int, int | None]:
        """How many of n draws make a grid, and how many per row: all of them, the grid's own choice."""
        return n, None

    def pick(self, label: str, names: list[str]) -> int:
        raise VaekitError("this model is not conditional, so it takes no label (train one with --conditional)")


class Labelled(nn.Module):
    """The label as an extra input: one-hot beside z for the decoder, a learned image plane for the encoder."""

    def __init__(self, classes: int, shape: Shape):
        super().__init__()
        self.classes, self.size = classes, shape[1:]
        self.plane = nn.Linear(classes, shape[1] * shape[2])  # label -> one more channel of the encoder's input

    def encoder_shape(self, shape: Shape) -> Shape:
        return (shape[0] + 1, *shape[1:])

    def decoder_inputs(self, latent_dim: int) -> int:
        return latent_dim + self.classes

    def pick(self, label: str, names: list[str]) -> int:
        """The class a user names: its index, or its name (case and surrounding spaces ignored); anything else is
        refused in one line listing the valid ones."""
        index = class_index(label, names[:self.classes])
        if index is None or index >= self.classes:
            raise VaekitError(f"no class {short(label)}; this model's classes: {class_list(self.classes, names)}")
        return index

    def one_hot(self, y: Tensor | None, rows: int) -> Tensor:
        if y is None:
            raise VaekitError(f"this model is conditional on {self.classes} classes and needs each image's label; "
                              "these images have none")
        if y.shape != (rows,):
            raise VaekitError(f"expected {rows} labels, one per image, got shape {tuple(y.shape)}")
        if y.device.type == "cpu" and not exporting() and len(y) and \
                (int(y.min()) < 0 or int(y.max()) >= self.classes):  # on a GPU, `check` has seen the data set's
            # labels (a check here would wait for the device every step); an exported graph reads any label
            raise VaekitError(f"labels must lie in 0..{self.classes - 1}, got {int(y.min())} to {int(y.max())}")
        return F.one_hot(y.long(), self.classes).to(self.plane.weight.dtype)

    def images(self, x: Tensor, y: Tensor | None) -> Tensor:
        plane = self.plane(self.one_hot(y, x.shape[0])).view(-1, 1, *self.size)  # x.shape[0], not len(x): an
        # exported graph keeps its batch size open
        return torch.cat([x, plane.to(x.dtype)], dim=1)

    def codes(self, z: Tensor, y: Tensor | None) -> Tensor:
        return torch.cat([z, self.one_hot(y, z.shape[0]).to(z.dtype)], dim=-1)

    def spread(self, n: int, device: torch.device) -> Tensor:
        """Labels for n draws when the caller names none: the classes in turn, in runs as equal as can be (every
        class once n >= K; a grid of n = K * m draws with m per row shows one class per row)."""
        return torch.arange(n, device=device) * self.classes // max(n, 1)

    def fill(self, label: int, n: int, device: torch.device) -> Tensor:
        """Labels for n draws of class `label`."""
        return torch.full((n,), label, device=device)

    def check(self, labels: Tensor | None, where: str) -> None:
        """Refuse, in one line, a data set whose labels this model does not know (checked once per set, on the host,
        before any batch reaches a device)."""
        if labels is not None and len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= self.classes):
            raise VaekitError(f"{where}: labels run from {int(labels.min())} to {int(labels.max())}, and this model "
                              f"is conditional on {self.classes} classes (0 to {self.classes - 1})")

    def grid(self, n: int) -> tuple[int, int]:
        """How many of n draws make a grid with one row per class (n rounded down to whole rows, at least one), and
        how many per row."""
        row = max(1, n // self.classes)
        return row * self.classes, row


def line_labels(pair: Tensor, steps: int) -> Tensor:
    """The labels of `steps` points on the line between the codes of two images labelled `pair`: the first half the
    first image's class, the rest the second's."""
    return pair[(torch.arange(steps, device=pair.device) >= steps / 2).long()]


def class_list(classes: int, names: list[str], limit: int = 20) -> str:
    """'0 (T-shirt/top), 1 (Trouser), ...': the indices with their names where known (and not the index itself), the
    first `limit` of them."""
    words = [class_word(i, names) for i in range(min(classes, limit))]
    return ", ".join(words) + (f", ... ({classes} in all)" if classes > limit else "")


def exporting() -> bool:
    """Whether torch.export is tracing the model (`torch.compiler.is_exporting`, PyTorch 2.6 and later)."""
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return bool(is_exporting and is_exporting())


def conditioning(classes: int, shape: Shape) -> Unconditioned | Labelled:
    return Labelled(classes, shape) if classes else Unconditioned()
