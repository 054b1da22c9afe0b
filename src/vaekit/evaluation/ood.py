"""One model against out-of-distribution sets: every score on its own test images and on each set, the detection
metrics of each score, and thresholds chosen on its validation images.

In-distribution is the model's test split; thresholds come from its validation split, which no metric uses, so
the false-positive rate measured on the test images checks them honestly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from torch import nn

from vaekit.config import DataConfig, trained_data_config
from vaekit.data import Dataset
from vaekit.data.sets import TensorImages
from vaekit.data.shifts import gather, ood_set
from vaekit.errors import VaekitError
from vaekit.evaluation.detection import detection, flagged, threshold_for
from vaekit.evaluation.evaluate import training_codes
from vaekit.evaluation.results import Detection, OodReport
from vaekit.evaluation.scores import SAME_RANKING, ScoreSettings, score_all, scores_available
from vaekit.models import Autoencoder
from vaekit.models.samplers import DENSITY, fit_samplers


@dataclass
class OodSettings:
    k: int = 100  # importance samples per image for the IS-NLL score
    fpr: float = 0.05  # the share of in-distribution images a threshold may flag
    max_images: int = 10_000  # per set
    batch_size: int = 500
    seed: int = 0
    gmm_components: int = 10  # for a checkpoint without a fitted mixture

    def scoring(self) -> ScoreSettings:
        return ScoreSettings(self.k, self.batch_size, self.seed)


@dataclass
class OodResult:
    report: OodReport
    scores: dict[str, dict[str, np.ndarray]]  # set name -> score name -> per image
    images: dict[str, TensorImages] = field(default_factory=dict)


def code_mixture(model: Autoencoder, data: Dataset, s: OodSettings) -> nn.Module | None:
    """The mixture fitted to the training codes: the checkpoint's, or fitted here (None if that fails, and for a
    conditional model, whose codes depend on a label an anomaly does not have)."""
    if model.classes:
        return None
    if DENSITY in model.priors:
        return model.priors[DENSITY]
    return fit_samplers(lambda: training_codes(model, data), {DENSITY: s.gmm_components}, s.seed,
                        model.latent, model.device).get(DENSITY)


def ranked_scores(names: list[str]) -> list[str]:
    """The scores worth ranking: the model's own, each ordering counted once (png_bits needs no model)."""
    return [n for n in names if n not in SAME_RANKING and n != "png_bits"]


def ood_images(model: Autoencoder, data: Dataset, config: DataConfig, specs: list[str],
               s: OodSettings) -> tuple[dict[str, TensorImages], dict[str, str]]:
    """The images to score, read and checked before any output is written: the model's test and validation images,
    then each OOD set; and each OOD set in words."""
    images = {"test": gather(data.test, s.max_images), "val": gather(data.val, s.max_images)}
    described = {}
    for spec in specs:
        images[spec], described[spec] = ood_set(spec, config, data, model.config.image_shape, s.max_images, s.seed)
    empty = [name for name, im in images.items() if len(im) == 0]
    if empty:
        raise VaekitError(f"nothing to score in the {empty[0]} set: it holds no images")
    return images, described


def measure_ood(model: Autoencoder, data: Dataset, images: dict[str, TensorImages], described: dict[str, str],
                s: OodSettings, quiet: bool = False) -> OodResult:
    """Scores, detection metrics per OOD set and score, and thresholds at `s.fpr` checked on the test images."""
    specs = list(described)
    mixture = code_mixture(model, data, s)
    scores = {name: score_all(model, im, s.scoring(), mixture, f"scoring {name}", quiet) for name, im in images.items()}
    names = scores_available(model, s.k, mixture is not None)
    sets = {spec: {score: Detection(**detection(scores["test"][score], scores[spec][score])) for score in names}
            for spec in specs}
    thresholds = {score: threshold_for(scores["val"][score], s.fpr) for score in names}
    at_threshold = {score: {name: float(flagged(scores[name][score], t).mean()) for name in ("test", *specs)}
                    for score, t in thresholds.items()}
    best = max(ranked_scores(names), key=lambda n: np.mean([sets[spec][n].auroc for spec in specs]))
    means = {name: {score: float(np.mean(v[np.isfinite(v)])) if np.isfinite(v).any() else None
                    for score, v in sc.items()} for name, sc in scores.items()}
    report = OodReport(model=model.kind, scores=names, k=s.k if model.has_density else None, fpr=s.fpr, sets=sets,
                       described=described, sizes={n: len(im) for n, im in images.items()}, thresholds=thresholds,
                       flagged_at_threshold=at_threshold, best=best, means=means,
                       mixture=mixture.words if mixture is not None else None, likelihood=model.config.likelihood,
                       binarized=trained_data_config(model.meta).binarize)
    return OodResult(report, scores, images)
