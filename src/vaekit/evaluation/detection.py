"""Telling two sets apart by a score: the standard out-of-distribution metrics, and a threshold.

The out-of-distribution images are the positives and a higher score means "more anomalous":
  AUROC      the chance that a random OOD image scores above a random in-distribution one (0.5: no better than
             chance; below 0.5: the score ranks them the wrong way round)
  AUPRC      average precision, OOD as the positive class (depends on the ratio of the two sets' sizes)
  FPR@95TPR  the share of in-distribution images flagged when the threshold catches 95% of the OOD ones
A threshold is chosen on held-out in-distribution images only (the validation split), so that a chosen share of
them, the false-positive rate, lies above it; no OOD image is needed to choose it. For a batch, conformal p-values
from the same held-out images, and Benjamini-Hochberg on them, bound the share of false alarms among the flagged
images instead (the false-discovery rate).
"""

from __future__ import annotations

import numpy as np

from vaekit.errors import VaekitError

BIG = np.finfo(np.float64).max


def finite(scores: np.ndarray) -> np.ndarray:
    """Scores with NaN and +inf as the most anomalous value and -inf as the least (a model that cannot explain an
    image at all has flagged it)."""
    return np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=BIG, posinf=BIG, neginf=-BIG)


def labelled(inside: np.ndarray, outside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sets as one: labels (1 for the out-of-distribution images) and finite scores."""
    return np.r_[np.zeros(len(inside)), np.ones(len(outside))], finite(np.r_[inside, outside])


def detection(inside: np.ndarray, outside: np.ndarray) -> dict[str, float]:
    """AUROC, AUPRC and FPR at 95% TPR of a score separating `outside` (positives) from `inside`."""
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    if len(inside) == 0 or len(outside) == 0:
        raise VaekitError("both the in-distribution and the out-of-distribution set need at least one image")
    y, s = labelled(inside, outside)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)  # every point: ties must not skip 95%
    return {"auroc": float(roc_auc_score(y, s)), "auprc": float(average_precision_score(y, s)),
            "fpr_at_95_tpr": float(fpr[np.searchsorted(tpr, 0.95)])}


def roc(inside: np.ndarray, outside: np.ndarray, points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """The ROC curve (false-positive rate, true-positive rate), thinned to about `points` points for a figure."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(*labelled(inside, outside))
    keep = np.unique(np.r_[0, np.linspace(0, len(fpr) - 1, points).astype(int), len(fpr) - 1])
    return fpr[keep], tpr[keep]


def threshold_for(held_out: np.ndarray, fpr: float) -> float:
    """The smallest score above which at most a share `fpr` of the held-out in-distribution scores lie."""
    if len(held_out) == 0:
        raise VaekitError("no held-out in-distribution images to choose a threshold on")
    return float(np.quantile(finite(held_out), 1 - fpr, method="higher"))


def flagged(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Which images a threshold flags: score strictly above it."""
    return finite(scores) > threshold


def conformal_p_values(calibration: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Split-conformal p-values: for each score, (1 + the held-out normal scores at or above it) / (n + 1). For a
    normal image exchangeable with the n held-out ones, P(p <= a) <= a for every a (Vovk et al., 2005; Bates et al.,
    2023): a valid test of "this image is normal", with no assumption on the scores' distribution."""
    if len(calibration) == 0:
        raise VaekitError("no held-out normal images to calibrate p-values on")
    held = np.sort(finite(calibration))
    at_or_above = len(held) - np.searchsorted(held, finite(scores), side="left")
    return (1.0 + at_or_above) / (len(held) + 1.0)


def benjamini_hochberg(p_values: np.ndarray, fdr: float) -> np.ndarray:
    """Which images to flag so that the expected share of normal images among the flagged stays at most `fdr`
    (Benjamini & Hochberg, 1995): the k smallest p-values, k the largest with p_(k) <= k fdr / m. Valid for
    conformal p-values, which are positively dependent (Bates et al., 2023)."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="stable")
    passing = np.nonzero(p[order] <= fdr * np.arange(1, m + 1) / m)[0]
    flags = np.zeros(m, dtype=bool)
    if len(passing):
        flags[order[:passing[-1] + 1]] = True
    return flags
