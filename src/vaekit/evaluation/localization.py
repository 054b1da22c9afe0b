"""How well a map finds the defect, pixel by pixel, against ground-truth masks (True: a defective pixel).

  pixel AUROC  the chance that a random defective pixel scores above a random normal one, over every pixel of
               every image (large defects weigh more, as in the literature's pixel AUROC)
  AUPRO        the per-region overlap (PRO) integrated over the false-positive rate from 0 to 0.3, divided by 0.3
               (Bergmann et al., 2021, the MVTec AD paper, and anomalib's AUPRO). A region is a connected component
               of a mask (8-neighbours); at each threshold its overlap is the share of its pixels above it, and PRO
               is the mean over every region of every image, so a small defect counts as much as a large one. The
               false-positive rate is the share of normal pixels (of every image) above the threshold.
  F1-max       the best F1 score of the defective pixels over every threshold

Maps of images without a defect take part as normal pixels throughout.
"""

from __future__ import annotations

import numpy as np

from vaekit.errors import VaekitError

FPR_LIMIT = 0.3


def checked(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maps (N, H, W) and masks of the same shape, as float64 scores (NaN counted most anomalous) and booleans."""
    from vaekit.evaluation.detection import finite

    if maps.shape != masks.shape or maps.ndim != 3:
        raise VaekitError(f"maps {maps.shape} and masks {masks.shape} must be the same (N, H, W)")
    masks = masks.astype(bool)
    if not masks.any() or masks.all():
        raise VaekitError("pixel metrics need both defective and normal pixels among the masks")
    return finite(maps), masks


def pixel_auroc(maps: np.ndarray, masks: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    scores, truth = checked(maps, masks)
    return float(roc_auc_score(truth.ravel(), scores.ravel()))


def f1_max(maps: np.ndarray, masks: np.ndarray) -> float:
    from sklearn.metrics import precision_recall_curve

    scores, truth = checked(maps, masks)
    precision, recall, _ = precision_recall_curve(truth.ravel(), scores.ravel())
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(f1.max())


def region_weights(masks: np.ndarray) -> np.ndarray:
    """Each pixel's share of PRO: 1 / (regions * its region's size) inside a region, 0 outside."""
    from scipy.ndimage import label

    regions, weights = 0, np.zeros(masks.shape, np.float64)
    for i, mask in enumerate(masks):
        labelled, count = label(mask, structure=np.ones((3, 3)))
        sizes = np.bincount(labelled.ravel())
        weights[i] = np.where(labelled > 0, 1.0 / sizes[labelled], 0.0)
        regions += count
    return weights / regions


def pro_curve(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, PRO) at every distinct threshold, from (0, 0) up, exactly (ties moved together)."""
    scores, truth = checked(maps, masks)
    weights = region_weights(truth).ravel()
    normal = (~truth).ravel()
    order = np.argsort(-scores.ravel(), kind="stable")
    fpr = np.cumsum(normal[order]) / normal.sum()
    pro = np.cumsum(weights[order])
    ranked = scores.ravel()[order]
    last_of_tie = np.r_[ranked[1:] != ranked[:-1], True]
    return np.r_[0.0, fpr[last_of_tie]], np.r_[0.0, pro[last_of_tie]]


def aupro(maps: np.ndarray, masks: np.ndarray, limit: float = FPR_LIMIT) -> float:
    """The area under the PRO curve up to a false-positive rate of `limit`, divided by `limit` (1: every region
    found whole before any normal pixel; a random map gives about limit / 2)."""
    fpr, pro = pro_curve(maps, masks)
    inside = fpr <= limit
    x, y = fpr[inside], pro[inside]
    if x[-1] < limit:  # the curve interpolated linearly at the limit
        after = np.argmax(fpr > limit)
        share = (limit - fpr[after - 1]) / (fpr[after] - fpr[after - 1])
        x, y = np.r_[x, limit], np.r_[y, pro[after - 1] + share * (pro[after] - pro[after - 1])]
    return float(np.trapezoid(y, x) / limit)


def localization(maps: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """Pixel AUROC, AUPRO (to a false-positive rate of 0.3) and F1-max of maps against masks."""
    return {"pixel_auroc": pixel_auroc(maps, masks), "aupro": aupro(maps, masks), "f1_max": f1_max(maps, masks)}
