"""Image folders as they really are: odd sizes, symlinks, duplicates, hidden files, and folder names that may or may
not be categories. Each is handled on purpose (how one file becomes pixels: decode.py), and the notes say what was
done:

- what the headers show is counted and said: images turned upright by their EXIF orientation, animated or
  multi-page images (their first frame is used), images with transparency (composited on `background`);
- hidden files and folders (names starting with '.': `.thumbnails/`, macOS's `._*` files) are skipped unless
  asked for (`hidden_files`), and so are vector images (SVG), which are not pixels; the log says how many;
- images whose shape differs from the target are centre-cropped, padded or stretched (`resize`);
- files reached twice (symlinks) and files with identical bytes are kept once, so no test image equals a
  training image;
- first-level subfolders become labels when asked (`labels="folders"`), or by default when they look like
  categories rather than image sizes (16x16, 22x22, scalable, ...).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vaekit.config import DataConfig
from vaekit.data.decode import GREY, background_colour, bad_image, pil_errors, refuse_huge
from vaekit.errors import VaekitError, path_text

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
VECTOR_SUFFIXES = {".svg", ".svgz"}  # images that are not pixels: counted and skipped
ORIENTATION = 0x0112  # the EXIF tag; values 5 to 8 turn the picture a quarter, so width and height swap
RESIZE = ("crop", "pad", "stretch")
LABELS = ("auto", "folders", "none")
SIZE_NAME = re.compile(r"^(\d+(x\d+)?(@\d+x?)?|scalable|symbolic)$", re.IGNORECASE)  # icon-theme size folders


def check_options(config: DataConfig) -> None:
    for name, value, known in (("resize", config.resize, RESIZE), ("labels", config.labels, LABELS)):
        if value not in known:
            raise VaekitError(f"unknown {name} policy {value!r} (choose from {', '.join(known)})")
    background_colour(config.background)
    if config.channels not in (0, 1, 3):
        raise VaekitError(f"channels must be 1 or 3 (or 0: from the images), got {config.channels}")


@dataclass
class Scan:
    """What a folder holds: unique readable images, their labels (or None) and the target shape."""

    files: list[Path]
    digests: list[str]  # SHA-1 of each file's bytes (the cache key is made of them)
    labels: Tensor | None
    classes: list[str]
    shape: tuple[int, int, int]
    notes: list[str]  # what was done, in words, for the log and the report
    label_source: str
    revised: list[str] = field(default_factory=list)  # the notes of rules vaekit 0.2.0 did not apply (a model it
    # trained saw this folder otherwise)

    def fingerprint(self, root: Path) -> str:
        """The files' relative names and SHA-1s, hashed: a file added, removed, renamed or changed changes it."""
        h = hashlib.sha1(usedforsecurity=False)
        for file, sha1 in zip(self.files, self.digests):
            h.update(os.fsencode(file.relative_to(root)) + f"\0{sha1}\n".encode())
        return h.hexdigest()

    def names(self, keep: list[int]) -> np.ndarray:
        """The paths of the files at positions `keep`: the names `vaekit score` reports images by, as text (bytes of
        a name that are not UTF-8, which Linux allows, written as \\xNN escapes)."""
        return np.array([path_text(self.files[k]) for k in keep], dtype=object)


def hidden(path: Path, root: Path) -> bool:
    """A hidden file, or a file in a hidden folder, below `root` (a name starting with '.')."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def candidate_files(root: Path, config: DataConfig) -> tuple[list[Path], dict[str, str]]:
    """The files under `root` that may be images, sorted; and what was passed over, in words, by why ("hidden",
    "vector")."""
    every = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES | VECTOR_SUFFIXES)
    shown = [p for p in every if config.hidden_files or not hidden(p, root)]
    files = [p for p in shown if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    notes = {}
    if len(shown) < len(every):
        notes["hidden"] = (f"skipped {len(every) - len(shown)} hidden files (names starting with '.', or in such "
                           "folders: thumbnails, macOS ._ files; --hidden-files reads them)")
    vectors = sum(1 for p in shown if p.suffix.lower() in VECTOR_SUFFIXES)
    if vectors:
        notes["vector"] = f"skipped {vectors} SVG files: vector drawings, not pixels (convert them to PNG to use them)"
    return files, notes


def image_files(root: Path, config: DataConfig) -> tuple[list[Path], list[str], int, int, dict[str, str]]:
    """Image files under `root`, each kept once: by resolved path (symlinks) and by content (SHA-1); the files,
    their digests, how many links and copies were left out, and what else was passed over, in words."""
    files, notes = candidate_files(root, config)
    seen_paths, seen_bytes, unique, digests = set(), set(), [], []
    links = copies = 0
    for f in files:
        real = f.resolve()
        if real in seen_paths:
            links += 1
            continue
        seen_paths.add(real)
        try:
            digest = file_digest(real, f)
        except VaekitError as e:
            bad_image(e, config)
            continue
        if digest in seen_bytes:
            copies += 1
            continue
        seen_bytes.add(digest)
        unique.append(f)
        digests.append(digest)
    return unique, digests, links, copies, notes


def file_digest(real: Path, shown: Path) -> str:
    """SHA-1 of a file's bytes, read in 1 MiB blocks (memory stays bounded whatever the file's size); a file
    larger than any image vaekit reads is refused without being read."""
    digest = hashlib.sha1(usedforsecurity=False)
    try:
        refuse_huge(real, shown)
        with open(real, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    except OSError as e:
        raise VaekitError(f"{shown}: cannot read ({e.strerror or e})") from None
    return digest.hexdigest()


def folder_labels(root: Path, files: list[Path], policy: str) -> tuple[Tensor | None, list[str], str]:
    """Labels from first-level subfolder names, when asked or when those names look like categories."""
    parts = [f.relative_to(root).parts for f in files]
    names = sorted({p[0] for p in parts if len(p) > 1})
    nested = all(len(p) > 1 for p in parts)
    if policy == "none":
        return None, [], "none (--labels none)"
    if not nested or (policy == "auto" and len(names) < 2):
        return None, [], "none (no labels: the images do not sit in category subfolders)"
    if policy == "auto" and all(SIZE_NAME.match(n) for n in names):
        return None, [], (f"none: the subfolders ({', '.join(names[:6])}{', ...' if len(names) > 6 else ''}) look "
                          "like image sizes, not categories (--labels folders uses them anyway)")
    labels = torch.tensor([names.index(p[0]) for p in parts])
    return labels, names, f"the {len(names)} first-level subfolder names ({', '.join(names[:6])}" \
                          f"{', ...' if len(names) > 6 else ''})"


def scan_folder(root: Path, config: DataConfig) -> Scan:
    """Unique readable image files under `root`, their labels and the common shape (from headers only)."""
    from PIL import Image

    check_options(config)
    if not root.is_dir():
        raise VaekitError(f"{root}: no such folder")
    files, digests, links, copies, passed = image_files(root, config)
    if not files:
        raise VaekitError(f"{root}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
                          + "".join(f"; {note}" for note in passed.values()))
    sizes, colour, readable, readable_digests = [], False, [], []
    seen = {"turned": 0, "frames": 0, "transparent": 0}
    for f, digest in zip(files, digests):
        try:
            with pil_errors(f), Image.open(f) as img:  # reads the header only
                sizes.append(upright_size(img, seen))
                colour |= img.mode not in GREY and not (img.mode == "P" and _grey_palette(img))
            readable.append(f)
            readable_digests.append(digest)
        except VaekitError as e:
            bad_image(e, config)
    if not readable:
        raise VaekitError(f"{root}: none of the images is readable")
    labels, classes, label_source = folder_labels(root, readable, config.labels)
    if config.image_size:
        h = w = config.image_size
    elif len(set(sizes)) == 1:
        w, h = sizes[0]
    else:
        raise VaekitError(f"{root}: images have {len(set(sizes))} different sizes; choose one with --image-size N")
    c = config.channels or (3 if colour else 1)
    notes = list(passed.values())
    if links or copies:
        notes.append(f"kept each image once: skipped {links} links to files already read and {copies} files with "
                     "the same bytes as another")
    resized = sum(1 for s in sizes if s != (w, h))
    odd = sum(1 for sw, sh in sizes if sw * h != sh * w)
    if odd:
        how = {"crop": "centre-cropped (the aspect ratio kept)", "pad": f"padded with {config.background} (the "
               "aspect ratio kept)", "stretch": "stretched"}[config.resize]
        notes.append(f"{odd} images of another aspect ratio than {w}x{h} are {how} (--resize)")
    if resized:
        notes.append(f"{resized} images resized to {w}x{h}")
    shown, turned = header_notes(seen, config)
    revised = [*([passed["hidden"]] if "hidden" in passed else []), *turned]
    return Scan(readable, readable_digests, labels, classes, (c, h, w), [*notes, *turned, *shown], label_source,
                revised)


def upright_size(img, seen: dict[str, int]) -> tuple[int, int]:
    """An image's (width, height) as it is shown, from its header: turned by its EXIF orientation; and what else
    the header says, counted in `seen` (turned, several frames, transparency)."""
    turned = img.getexif().get(ORIENTATION, 1) if hasattr(img, "getexif") else 1
    seen["turned"] += turned in range(2, 9)  # 1 is upright; other values are not orientations
    seen["frames"] += getattr(img, "n_frames", 1) > 1
    seen["transparent"] += img.mode in ("LA", "La", "PA", "RGBA", "RGBa") or "transparency" in img.info
    return (img.height, img.width) if turned in (5, 6, 7, 8) else img.size


def header_notes(seen: dict[str, int], config: DataConfig) -> tuple[list[str], list[str]]:
    """What the headers showed, in words, only what some image had: frames and transparency, and apart, the images
    turned upright (a rule vaekit 0.2.0 did not apply)."""
    notes, turned = [], []
    if seen["turned"]:
        turned.append(f"{seen['turned']} images turned upright by their EXIF orientation tag (as a viewer shows "
                      "them)")
    if seen["frames"]:
        notes.append(f"{seen['frames']} animated or multi-page images (GIF, TIFF, WebP): the first frame of each is "
                     "used")
    if seen["transparent"]:
        notes.append(f"{seen['transparent']} images have an alpha channel or a transparent colour: their "
                     f"transparent pixels are composited on {config.background} (--background)")
    return notes, turned


def _grey_palette(img) -> bool:
    palette = img.getpalette() or []
    triples = [palette[i:i + 3] for i in range(0, len(palette), 3)]
    return all(r == g == b for r, g, b in triples)


