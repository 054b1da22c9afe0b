"""A small classifier trained on the data set's labels, for sample quality without downloads.

Its penultimate features stand in for Inception's: the Frechet distance between features of real
test images and of generated ones measures how far the samples are from the data, and the mean
softmax confidence how recognisable they are. Trained once per data set and cached.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from vaekit.config import MAX_CLASSES
from vaekit.data import Batches, Dataset
from vaekit.errors import VaekitError, warn
from vaekit.files import read_record, write_json
from vaekit.progress import bar

FEATURES = 128  # the penultimate layer's width: what sample quality is measured on


class FeatureClassifier(nn.Module):
    """MLP classifier: image -> 256 -> FEATURES (128) features -> classes."""

    def __init__(self, shape: tuple[int, int, int], n_classes: int):
        super().__init__()
        self.shape, self.n_classes = tuple(shape), n_classes
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), 256), nn.ReLU(), nn.Linear(256, FEATURES),
                                  nn.ReLU())
        self.head = nn.Linear(FEATURES, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))

    @torch.no_grad()
    def features_and_probabilities(self, images: Tensor, batch_size: int = 2000) -> tuple[Tensor, Tensor]:
        """Penultimate features and the softmax over classes per image (images as floats in [0, 1])."""
        self.eval()
        feats, probs = [], []
        for x in images.split(batch_size):
            h = self.body(x.to(next(self.parameters()).device))
            feats.append(h.cpu())
            probs.append(F.softmax(self.head(h), -1).cpu())
        return torch.cat(feats), torch.cat(probs)

    def features_and_confidence(self, images: Tensor, batch_size: int = 2000) -> tuple[Tensor, Tensor]:
        """Penultimate features and max softmax probability per image."""
        features, probabilities = self.features_and_probabilities(images, batch_size)
        return features, probabilities.max(-1).values


def cache_key(data: Dataset) -> str:
    """Keyed on the content (training and test images and labels), not on names: a data file replaced in
    place gets a classifier of its own."""
    digest = hashlib.sha1(f"{data.shape}|v2".encode(), usedforsecurity=False)
    for split in (data.train, data.test):
        for tensor in (split.images, split.labels):
            digest.update(tensor.cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def train_classifier(data: Dataset, epochs: int = 5, device: str | torch.device = "cpu", seed: int = 0,
                     quiet: bool = False) -> tuple[FeatureClassifier, float]:
    """Train on the training split; returns the classifier and its test accuracy."""
    generator_state = torch.get_rng_state()
    torch.manual_seed(seed)
    n_classes = int(data.train.labels.max()) + 1
    model = FeatureClassifier(data.shape, n_classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = Batches(data.train, 128, device, shuffle=True, seed=seed)
    labels = data.train.labels.to(device)
    for epoch in bar(range(epochs), desc="feature classifier", disable=quiet):
        for idx in batches.indices(epoch):
            x = batches.to_float(data.train.images[idx].to(device))
            loss = F.cross_entropy(model(x), labels[idx.to(device)])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    test, _ = next(iter(Batches(data.test, len(data.test), device)))
    with torch.no_grad():
        accuracy = (model(test).argmax(-1).cpu() == data.test.labels.cpu()).float().mean().item()
    torch.set_rng_state(generator_state)  # leave the caller's random stream untouched
    return model.eval(), accuracy


class CachedClassifier(BaseModel):
    """meta.json beside a cached classifier's weights."""

    model_config = ConfigDict(strict=True)
    shape: Annotated[list[Annotated[int, Field(ge=1, le=4096)]], Field(min_length=3, max_length=3)]
    n_classes: Annotated[int, Field(ge=2, le=MAX_CLASSES)]
    accuracy: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


def load_or_train_classifier(data: Dataset, cache_dir: Path, quiet: bool = False) -> tuple[FeatureClassifier, float]:
    """The cached classifier for this data set, trained on first use (safetensors + JSON)."""
    from vaekit.models.saving import read_safetensors, write_safetensors

    folder = cache_dir / "classifiers" / cache_key(data)
    weights, meta_file = folder / "model.safetensors", folder / "meta.json"
    if weights.is_file() and meta_file.is_file():
        try:
            meta = read_record(meta_file, CachedClassifier, "cached classifier description")
            model = FeatureClassifier(tuple(meta.shape), meta.n_classes)
            model.load_state_dict(read_safetensors(weights))
            return model.eval(), meta.accuracy
        except (VaekitError, OSError, RuntimeError) as e:  # a damaged cache: made again
            warn(f"the cached feature classifier in {folder} is damaged ({str(e)[:200]}); training it again")
    model, accuracy = train_classifier(data, quiet=quiet)
    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(weights, model.state_dict())
    write_json(meta_file, {"spec": data.spec, "shape": list(model.shape), "n_classes": model.n_classes,
                                  "accuracy": accuracy})
    return model, accuracy
