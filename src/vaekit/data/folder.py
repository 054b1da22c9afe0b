"""Image folders as they really are: alpha, palettes, 16-bit, odd sizes, symlinks, duplicates, and folder
names that may or may not be categories. Each is handled on purpose:

- alpha (RGBA, LA, palette or grey/RGB with a transparent colour) is composited on `background`;
- 16-bit and 32-bit grey images are scaled to 8 bits (not clipped); CMYK, palettes and 1-bit images are
  converted; animated images give their first frame;
- images whose shape differs from the target are centre-cropped, padded or stretched (`resize`);
- files reached twice (symlinks) and files with identical bytes are kept once, so no test image equals a
  training image;
- first-level subfolders become labels when asked (`labels="folders"`), or by default when they look like
  categories rather than image sizes (16x16, 22x22, scalable, ...);
- decompression bombs (more pixels than `MAX_PIXELS`) are refused like any unreadable file.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import Tensor

from vaekit.config import DataConfig
from vaekit.errors import VaekitError, warn

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
MAX_PIXELS = 64_000_000  # per image; larger files are treated as bombs (uploads to the explorer have a lower limit)
MAX_FILE_BYTES = 2**30  # per image file: more than a 64-megapixel 16-bit RGBA image needs
BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0), "grey": (128, 128, 128), "gray": (128, 128, 128)}
RESIZE = ("crop", "pad", "stretch")
LABELS = ("auto", "folders", "none")
DEEP_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
GREY = ("1", "L", "LA", "La", *DEEP_GREY)  # modes without colour (palettes: see _grey_palette)
SIZE_NAME = re.compile(r"^(\d+(x\d+)?(@\d+x?)?|scalable|symbolic)$", re.IGNORECASE)  # icon-theme size folders


def background_colour(name: str) -> tuple[int, int, int]:
    if name.lower() in BACKGROUNDS:
        return BACKGROUNDS[name.lower()]
    if re.fullmatch(r"#[0-9a-fA-F]{6}", name):
        return tuple(int(name[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
    raise VaekitError(f"background {name!r}: use white, black, grey or #RRGGBB")


def check_options(config: DataConfig) -> None:
    for name, value, known in (("resize", config.resize, RESIZE), ("labels", config.labels, LABELS)):
        if value not in known:
            raise VaekitError(f"unknown {name} policy {value!r} (choose from {', '.join(known)})")
    background_colour(config.background)
    if config.channels not in (0, 1, 3):
        raise VaekitError(f"channels must be 1 or 3 (or 0: from the images), got {config.channels}")


@contextmanager
def pil_errors(path: Path) -> Iterator[None]:
    """PIL's many failures (and its bomb warning) as one VaekitError naming the file."""
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's other warnings (palettes, EXIF) are handled or harmless
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise VaekitError(f"{path}: too many pixels, refused as a possible decompression bomb ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        raise VaekitError(f"{path}: not a readable image ({str(e)[:200]})") from None


def to_8bit(img):
    """16-bit grey (I;16*, and I, which is how PIL opens most of them) scaled from 0..65535 to 8 bits, the same
    for every image (not clipped, not stretched per image); float images (F) clipped to 0..255."""
    from PIL import Image

    if img.mode in DEEP_GREY:
        array = np.asarray(img, dtype=np.float64)
        scale = 1.0 if img.mode == "F" else 255.0 / 65535.0
        return Image.fromarray(np.clip(np.round(array * scale), 0, 255).astype(np.uint8), "L")
    return img


def flatten_alpha(img, background: tuple[int, int, int]):
    """Composite any transparency onto the background colour; returns an L or RGB image."""
    from PIL import Image

    if img.mode == "P" or "transparency" in img.info or img.mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        rgba = img.convert("RGBA")
        under = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(under, rgba).convert("RGB")
    return img.convert("L" if img.mode in GREY else "RGB")


def fit(img, size: tuple[int, int], policy: str, background: tuple[int, int, int]):
    """Bring an image to (w, h): centre crop or pad keep the aspect ratio, stretch does not."""
    from PIL import Image, ImageOps

    if img.size == size:
        return img
    if policy == "crop":
        return ImageOps.fit(img, size, Image.Resampling.BILINEAR)
    if policy == "pad":
        colour = background if img.mode == "RGB" else round(sum(background) / 3)
        return ImageOps.pad(img, size, Image.Resampling.BILINEAR, color=colour)
    return img.resize(size, Image.Resampling.BILINEAR)


def load_image(source: Path | IO[bytes], shape: tuple[int, int, int], resize: str = "crop",
               background: str = "white", max_pixels: int = MAX_PIXELS) -> Tensor:
    """Decode one image (a file, or bytes) to uint8 (C, H, W): 8 bits, alpha composited, grey or RGB, fitted
    to `shape`. More than `max_pixels` declared in the header is refused before anything is decoded."""
    from PIL import Image

    c, h, w = shape
    colour = background_colour(background)
    where = source if isinstance(source, Path) else Path(getattr(source, "name", "upload"))
    with pil_errors(where), Image.open(source) as img:
        if img.width * img.height > max_pixels:
            raise VaekitError(f"{where}: image is {img.width}x{img.height}, too many pixels (at most "
                              f"{max_pixels:,})")
        img.seek(0)
        flat = flatten_alpha(to_8bit(img), colour).convert("L" if c == 1 else "RGB")
        array = np.asarray(fit(flat, (w, h), resize, colour), dtype=np.uint8)
    return torch.from_numpy(array.reshape(h, w, c).transpose(2, 0, 1).copy())


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

    def names(self, keep: list[int]) -> np.ndarray:
        """The paths of the files at positions `keep`: the names `vaekit score` reports images by."""
        return np.array([str(self.files[k]) for k in keep], dtype=object)


def image_files(root: Path, config: DataConfig) -> tuple[list[Path], list[str], int, int]:
    """Image files under `root`, each kept once: by resolved path (symlinks) and by content (SHA-1); the files,
    their digests, and how many links and copies were left out."""
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
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
    return unique, digests, links, copies


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


def refuse_huge(real: Path, shown: Path) -> None:
    """A file larger than any image vaekit reads is refused before it is read."""
    size = real.stat().st_size
    if size > MAX_FILE_BYTES:
        raise VaekitError(f"{shown}: {size / 2**30:.1f} GiB, larger than any image vaekit reads "
                          f"({MAX_FILE_BYTES / 2**30:.0f} GiB at most)")


class Decoding(torch.utils.data.Dataset):
    """The scanned files for their first decode: each read once, its SHA-1 taken from the very bytes decoded, so a
    file changed after the scan cannot enter a copy keyed on the scan's digests."""

    def __init__(self, scan: Scan, config: DataConfig):
        self.files, self.shape, self.resize, self.background = scan.files, scan.shape, config.resize, config.background

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Tensor | VaekitError, str]:
        try:
            refuse_huge(self.files[i], self.files[i])
            data = self.files[i].read_bytes()
        except OSError as e:
            return VaekitError(f"{self.files[i]}: cannot read ({e.strerror or e})"), ""
        except VaekitError as e:
            return e, ""
        source = io.BytesIO(data)
        source.name = str(self.files[i])  # named in any error
        try:
            image: Tensor | VaekitError = load_image(source, self.shape, self.resize, self.background)
        except VaekitError as e:
            image = e
        return image, hashlib.sha1(data, usedforsecurity=False).hexdigest()

    def collate(self, items: list[tuple[Tensor | VaekitError, str]]) -> tuple[Tensor, list[int], list[str],
                                                                              list[VaekitError]]:
        """As `FileImages.collate`, with the digests of the good images."""
        from vaekit.data.sets import stack_decoded

        batch, kept, errors = stack_decoded([image for image, _ in items], self.shape)
        return batch, kept, [items[k][1] for k in kept], errors


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
    files, digests, links, copies = image_files(root, config)
    if not files:
        raise VaekitError(f"{root}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    sizes, colour, readable, readable_digests = [], False, [], []
    for f, digest in zip(files, digests):
        try:
            with pil_errors(f), Image.open(f) as img:  # reads the header only
                sizes.append(img.size)
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
    notes = []
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
    notes.append(f"transparent pixels are composited on {config.background} (--background)")
    return Scan(readable, readable_digests, labels, classes, (c, h, w), notes, label_source)


def _grey_palette(img) -> bool:
    palette = img.getpalette() or []
    triples = [palette[i:i + 3] for i in range(0, len(palette), 3)]
    return all(r == g == b for r, g, b in triples)


def bad_image(error: VaekitError, config: DataConfig | None = None, skip: bool = False) -> None:
    """Stop on an unreadable image, or skip it with a warning when the user asked for that."""
    if not (skip or (config is not None and config.skip_bad_images)):
        raise VaekitError(f"{error} (use --skip-bad-images to skip such files)")
    warn(f"{error}; skipped")


PARALLEL_FROM = 256  # images; fewer are decoded in this process (starting workers would cost more)


def decode_files(scan: Scan, config: DataConfig, write: Callable[[np.ndarray], Any], desc: str,
                 in_memory: bool = True) -> tuple[list[int], list[str]]:
    """Decode every file of `scan` in order, spread over `config.workers` processes with a progress bar, passing
    each chunk of good images (uint8, (B, C, H, W)) to `write`. An unreadable file stops the decode or, with
    `skip_bad_images`, is skipped with a warning. Returns the positions in `scan.files` of the images written,
    and the errors of those skipped.

    A folder that fits in memory is decoded in worker processes only where they fork (Linux): elsewhere they
    start by importing the caller's script, which a script without `if __name__ == "__main__"` does not survive,
    and such a folder used to load without them."""
    import multiprocessing

    from vaekit.progress import bar

    forked = multiprocessing.get_start_method() == "fork"
    images = Decoding(scan, config)
    chunk = 64
    workers = config.workers if len(images) >= PARALLEL_FROM and (forked or not in_memory) else 0
    loader = torch.utils.data.DataLoader(images, batch_size=chunk, collate_fn=images.collate, num_workers=workers)
    keep: list[int] = []
    skipped: list[str] = []
    with bar(total=len(images), desc=desc, unit="img") as shown:
        for start, (batch, kept, digests, errors) in zip(range(0, len(images), chunk), loader):
            for error in errors:
                bad_image(error, config)
                skipped.append(str(error))
            for k, digest in zip(kept, digests):
                if digest != scan.digests[start + k]:
                    raise VaekitError(f"{scan.files[start + k]}: changed while the folder was being read (its bytes "
                                      "differ from the scan's); run again once it is settled")
            write(batch.numpy())
            keep.extend(start + k for k in kept)
            shown.update(len(kept) + len(errors))
    return keep, skipped
