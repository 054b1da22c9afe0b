"""One model on inspection data: every anomaly map of the validation and test images, how well each finds the
defects marked in the masks (overall and by defect type), and calibrated decisions from the normal validation images.

The validation images are normal and used by no metric: they calibrate the decisions (a threshold for a
false-positive rate; split-conformal p-values with Benjamini-Hochberg for a false-discovery rate), which the test
images then check. The achieved false-discovery rate is measured on random batches of test images, mixed and
all-normal (where any flag is a false discovery).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from vaekit.data import Batches, Dataset, ImageSet
from vaekit.errors import VaekitError
from vaekit.evaluation.detection import (
    benjamini_hochberg,
    conformal_p_values,
    detection,
    flagged,
    threshold_for,
)
from vaekit.evaluation.localization import localization
from vaekit.evaluation.maps import IMAGE_SCORES, MapSettings, anomaly_maps, image_scores, maps_available
from vaekit.evaluation.results import Decisions, InspectionReport, Localization
from vaekit.models import Autoencoder
from vaekit.models.footprint import check_batch
from vaekit.progress import bar

BATCHES = 200  # random batches drawn to measure the achieved false-discovery rate
MAX_PIXELS = 60_000_000  # test and validation pixels of maps at most: the pixel metrics take about 100 bytes each


@dataclass(frozen=True)
class InspectSettings:
    maps: MapSettings = MapSettings()
    by: str = "nll_top"  # the image score decided on (MAP_SCORE)
    fpr: float = 0.05
    fdr: float = 0.1
    batch_size: int = 100
    seed: int = 0


@dataclass
class Inspection:
    report: InspectionReport
    maps: dict[str, np.ndarray]  # map name -> (N, H, W) over the test images
    scores: dict[str, np.ndarray]  # image score name -> (N,) over the test images
    held_out: dict[str, np.ndarray]  # image score name -> over the validation images
    p_values: np.ndarray
    flags: np.ndarray
    images: Tensor = field(repr=False)  # uint8 (N, C, H, W) test images
    masks: np.ndarray = field(repr=False)  # bool (N, H, W)
    labels: np.ndarray = field(repr=False)  # defect type per test image (0: good)


def map_set(model: Autoencoder, images: ImageSet, s: MapSettings, batch_size: int, desc: str,
            quiet: bool) -> tuple[dict[str, np.ndarray], Tensor]:
    """Every map of every image of a set, and the images as uint8."""
    parts, pixels = [], []
    for x, _ in bar(Batches(images, batch_size, model.device), desc=desc, disable=quiet):
        parts.append(anomaly_maps(model, x, s))
        pixels.append((x * 255).round().to(torch.uint8).cpu())
    return {n: torch.cat([p[n] for p in parts]).numpy() for n in parts[0]}, torch.cat(pixels)


def scores_of(maps: dict[str, np.ndarray], top: float) -> dict[str, np.ndarray]:
    """Every image score of every map, named MAP_SCORE."""
    return {f"{name}_{kind}": v.numpy() for name, m in maps.items()
            for kind, v in image_scores(torch.from_numpy(m), top).items()}


def located(maps: dict[str, np.ndarray], scores: dict[str, np.ndarray], masks: np.ndarray,
            defective: np.ndarray) -> dict[str, Localization]:
    """Each map's pixel metrics and its image scores' AUROC on one set of test images."""
    out = {}
    for name, m in maps.items():
        image_auroc = {kind: detection(scores[f"{name}_{kind}"][~defective], scores[f"{name}_{kind}"][defective])
                       ["auroc"] for kind in IMAGE_SCORES}
        out[name] = Localization(**localization(m, masks), image_auroc=image_auroc, images=len(m),
                                 defective=int(defective.sum()))
    return out


def achieved(p_values: np.ndarray, defective: np.ndarray, fdr: float, size: int, seed: int) -> tuple[float, float]:
    """The mean false-discovery proportion of Benjamini-Hochberg over random mixed batches of `size` test images,
    and the share of random all-normal batches with any flag."""
    rng = np.random.default_rng(seed)
    normal = np.nonzero(~defective)[0]
    proportions, any_flag = [], []
    for _ in range(BATCHES):
        batch = rng.choice(len(p_values), size=min(size, len(p_values)), replace=False)
        flags = benjamini_hochberg(p_values[batch], fdr)
        proportions.append((flags & ~defective[batch]).sum() / max(1, flags.sum()))
        normals = rng.choice(normal, size=min(size, len(normal)), replace=False)
        any_flag.append(benjamini_hochberg(p_values[normals], fdr).any())
    return float(np.mean(proportions)), float(np.mean(any_flag))


def decide(held_out: np.ndarray, scores: np.ndarray, defective: np.ndarray, s: InspectSettings
           ) -> tuple[Decisions, np.ndarray, np.ndarray]:
    """The decisions on one image score, what they achieved on the test images, the p-values and the flags."""
    threshold = threshold_for(held_out, s.fpr)
    above = flagged(scores, threshold)
    p = conformal_p_values(held_out, scores)
    flags = benjamini_hochberg(p, s.fdr)
    size = min(100, len(scores))
    mean_fdr, normal_flagged = achieved(p, defective, s.fdr, size, s.seed)
    decisions = Decisions(score=s.by, held_out=len(held_out), fpr=s.fpr, threshold=threshold,
                          test_fpr=float(above[~defective].mean()), test_tpr=float(above[defective].mean()),
                          fdr=s.fdr, flagged=int(flags.sum()), false_discoveries=int((flags & ~defective).sum()),
                          batches=BATCHES, batch_size=size, mean_fdr=mean_fdr, normal_batches_flagged=normal_flagged)
    return decisions, p, flags


def check_inspectable(model: Autoencoder, data: Dataset, s: InspectSettings) -> None:
    """What `inspect` needs, checked before any output is touched: masks, both kinds of test image, normal
    validation images, the decision score's map, a batch that fits."""
    masks = data.test.masks
    if masks is None:
        raise VaekitError(f"{data.spec}: no masks of its test images; inspection needs data with masks "
                          "(--data mvtec:ROOT; `vaekit defects` writes a benchmark)")
    defective = data.test.labels != 0  # an image's type says whether it is defective; its mask says where
    if defective.all() or not defective.any() or len(data.val) == 0:
        raise VaekitError(f"{data.spec}: inspection needs normal and defective test images and normal validation "
                          f"images (has {int(defective.sum())} defective of {len(masks)} test, {len(data.val)} "
                          "validation)")
    if s.by.rsplit("_", 1)[0] not in maps_available(model):
        raise VaekitError(f"--by {s.by}: this model has no {s.by.rsplit('_', 1)[0]} map (it has "
                          f"{', '.join(maps_available(model))})")
    pixels = masks.numel() + len(data.val) * masks[0].numel()
    if pixels > MAX_PIXELS:
        raise VaekitError(f"{data.spec}: {pixels:,} pixels of maps to measure, more than {MAX_PIXELS:,} (about "
                          f"{MAX_PIXELS * 120 // 2**30} GB at work); choose a smaller --image-size or fewer images")
    check_batch(model.config, min(s.batch_size, len(data.test)), "--batch-size", device=model.device)


def inspect(model: Autoencoder, data: Dataset, s: InspectSettings, quiet: bool = False) -> Inspection:
    """Maps of the validation and test images, their metrics against the test masks, and the decisions."""
    check_inspectable(model, data, s)
    masks = data.test.masks
    model.eval()
    torch.manual_seed(s.seed)
    held, _ = map_set(model, data.val, s.maps, s.batch_size, "maps of the validation images", quiet)
    started = time.perf_counter()
    maps, images = map_set(model, data.test, s.maps, s.batch_size, "maps of the test images", quiet)
    seconds = (time.perf_counter() - started) / max(1, len(data.test))
    masks, labels = masks.numpy(), data.test.labels.numpy()
    defective = labels != 0
    scores, held_out = scores_of(maps, s.maps.top), scores_of(held, s.maps.top)
    overall = located(maps, scores, masks, defective)
    types = {}
    for t, name in enumerate(data.classes[1:], start=1):
        keep = (labels == 0) | (labels == t)
        if defective[keep].any() and (~defective[keep]).any():
            types[name] = located({n: m[keep] for n, m in maps.items()}, {n: v[keep] for n, v in scores.items()},
                                  masks[keep], defective[keep])
    decisions, p, flags = decide(held_out[s.by], scores[s.by], defective, s)
    report = InspectionReport(model=model.kind, maps=list(maps), smooth=s.maps.smooth, top=s.maps.top,
                              overall=overall, types=types, best=max(overall, key=lambda n: overall[n].aupro),
                              decisions=decisions, likelihood=model.config.likelihood, seconds_per_image=seconds)
    return Inspection(report, maps, scores, held_out, p, flags, images, masks, labels)
