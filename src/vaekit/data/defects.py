"""Synthetic defects with exact masks: an inspection benchmark made offline from any data set (`vaekit defects`).

Each defect is drawn into a normal test image, and its mask is every pixel it changed by more than `CHANGED` grey
levels (in some channel), so the mask is exact: a defect drawn where it changes nothing (a black patch on a black
background) is drawn again elsewhere. Sizes are shares of the image's side, so a 28 px and a 256 px image get
defects of the same relative size.

  patch    a rectangle cut from another test image and pasted in (a foreign part)
  scratch  a thin straight line in a colour far from the pixels under it
  blob     an ellipse of another colour (the complement of the colour under it)
  missing  a rectangle filled with the background (the median of the image's border): a part gone
  noise    a rectangle of uniform noise (a damaged surface)

Everything is drawn from a generator seeded by (seed, image index, kind): the same command writes the same files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from vaekit.data.sets import Dataset
from vaekit.data.shifts import gather
from vaekit.errors import VaekitError
from vaekit.images import save_png
from vaekit.progress import bar

KINDS = ("patch", "scratch", "blob", "missing", "noise")
CHANGED = 16  # grey levels (of 255) a pixel must change by to count as defective
MIN_SHARE = 0.01  # of the image's pixels a defect must change (at least 4)
TRIES = 50


def rectangle(rng: np.random.Generator, h: int, w: int, small: float = 0.15, large: float = 0.35
              ) -> tuple[slice, slice]:
    """A random rectangle whose sides are `small` to `large` of the image's."""
    rh = max(2, round(rng.uniform(small, large) * h))
    rw = max(2, round(rng.uniform(small, large) * w))
    top, left = rng.integers(0, h - rh + 1), rng.integers(0, w - rw + 1)
    return slice(top, top + rh), slice(left, left + rw)


def patch(image: np.ndarray, donor: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = image.copy()
    rows, cols = rectangle(rng, *image.shape[:2])
    h, w = rows.stop - rows.start, cols.stop - cols.start
    top, left = rng.integers(0, image.shape[0] - h + 1), rng.integers(0, image.shape[1] - w + 1)
    out[rows, cols] = donor[top:top + h, left:left + w]
    return out


def contrasting(region: np.ndarray) -> np.ndarray:
    """A colour far from the mean of `region` (H, W, C): each channel's complement."""
    return (255 - region.reshape(-1, region.shape[-1]).mean(0)).round().astype(np.uint8)


def drawn(image: np.ndarray, shape: Callable, rng: np.random.Generator) -> np.ndarray:
    """`image` with a shape (drawn by `shape(draw, h, w, rng)` on a mask) filled with a contrasting colour."""
    from PIL import Image, ImageDraw

    h, w = image.shape[:2]
    canvas = Image.new("L", (w, h), 0)
    shape(ImageDraw.Draw(canvas), h, w, rng)
    where = np.asarray(canvas) > 0
    out = image.copy()
    if where.any():
        out[where] = contrasting(image[where][:, None])
    return out


def line(draw, h: int, w: int, rng: np.random.Generator) -> None:
    side = min(h, w)
    length, angle = rng.uniform(0.3, 0.6) * side, rng.uniform(0, np.pi)
    x, y = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
    dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
    draw.line([(x - dx, y - dy), (x + dx, y + dy)], fill=255, width=max(1, round(side / 28)))


def ellipse(draw, h: int, w: int, rng: np.random.Generator) -> None:
    ry, rx = rng.uniform(0.08, 0.18) * h, rng.uniform(0.08, 0.18) * w
    y, x = rng.uniform(ry, h - ry), rng.uniform(rx, w - rx)
    draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=255)


def missing(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    out = image.copy()
    out[rectangle(rng, *image.shape[:2])] = np.median(border, axis=0).round().astype(np.uint8)
    return out


def noise(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = image.copy()
    rows, cols = rectangle(rng, *image.shape[:2], small=0.1, large=0.25)
    out[rows, cols] = rng.integers(0, 256, size=out[rows, cols].shape, dtype=np.uint8)
    return out


DRAW: dict[str, Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]] = {
    "patch": patch,
    "scratch": lambda image, _, rng: drawn(image, line, rng),
    "blob": lambda image, _, rng: drawn(image, ellipse, rng),
    "missing": lambda image, _, rng: missing(image, rng),
    "noise": lambda image, _, rng: noise(image, rng),
}


def defect(image: np.ndarray, donor: np.ndarray, kind: str, seed: list[int]) -> tuple[np.ndarray, np.ndarray] | None:
    """`image` (H, W, C uint8) with one defect of `kind` and its exact mask (H, W bool); None when no try changed
    enough pixels (an image too flat for this kind)."""
    rng = np.random.default_rng(seed)
    least = max(4, round(MIN_SHARE * image.shape[0] * image.shape[1]))
    for _ in range(TRIES):
        out = DRAW[kind](image, donor, rng)
        mask = (np.abs(out.astype(np.int16) - image.astype(np.int16)) > CHANGED).any(-1)
        if mask.sum() >= least:
            return np.where(mask[..., None], out, image), mask  # a pixel changed too little is left as it was
    return None


def write_benchmark(data: Dataset, out: Path, kinds: list[str], train: int, test: int, seed: int,
                    quiet: bool = False) -> dict[str, int]:
    """The MVTec AD layout under `out` (a claimed, empty folder): `train` normal images of the data's training split
    in train/good/; `test` normal test images in test/good/; and for each kind, `test` other test images with one
    defect each in test/<kind>/, their masks in ground_truth/<kind>/. Returns the images written per folder."""
    normal = gather(data.train, train).images.permute(0, 2, 3, 1).numpy()
    tested = gather(data.test, test * (len(kinds) + 1)).images.permute(0, 2, 3, 1).numpy()
    if len(normal) < 2 or len(tested) < len(kinds) + 1:
        raise VaekitError(f"{data.spec}: too few images ({len(normal)} train, {len(tested)} test) for a benchmark")
    per = len(tested) // (len(kinds) + 1)
    counts = {"train/good": len(normal), "test/good": per}
    for i, image in enumerate(bar(normal, desc="normal images", disable=quiet)):
        save_png(image, out / "train" / "good" / f"{i:04d}.png")
    for i, image in enumerate(tested[:per]):
        save_png(image, out / "test" / "good" / f"{i:04d}.png")
    for k, kind in enumerate(bar(kinds, desc="defects", disable=quiet), start=1):
        written = 0
        for i in range(per):
            at = k * per + i
            made = defect(tested[at], tested[(at + 1) % len(tested)], kind, [seed, at, k])
            if made is not None:
                save_png(made[0], out / "test" / kind / f"{written:04d}.png")
                save_png(made[1][..., None].astype(np.uint8) * 255,
                         out / "ground_truth" / kind / f"{written:04d}_mask.png")
                written += 1
        counts[f"test/{kind}"] = written
    return counts
