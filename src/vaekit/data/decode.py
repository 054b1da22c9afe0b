"""One image file to pixels, as a viewer shows it, and a scanned folder's files decoded in parallel.

- alpha (RGBA, LA, palette or grey/RGB with a transparent colour) is composited on `background`;
- 16-bit and 32-bit grey images are scaled to 8 bits (not clipped); CMYK, palettes and 1-bit images are
  converted; animated and multi-page images (GIF, TIFF, WebP) give their first frame;
- photos are turned upright by their EXIF orientation tag (phones store most pictures sideways with such a tag);
- images whose shape differs from the target are centre-cropped, padded or stretched (`resize`);
- decompression bombs (more pixels than `MAX_PIXELS`) and files larger than any image are refused like any
  unreadable file.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from vaekit.config import DataConfig
from vaekit.errors import VaekitError, warn

if TYPE_CHECKING:
    from vaekit.data.folder import Scan

MAX_PIXELS = 64_000_000  # per image; larger files are treated as bombs (uploads to the explorer have a lower limit)
MAX_FILE_BYTES = 2**30  # per image file: more than a 64-megapixel 16-bit RGBA image needs
BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0), "grey": (128, 128, 128), "gray": (128, 128, 128)}
DEEP_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
GREY = ("1", "L", "LA", "La", *DEEP_GREY)  # modes without colour (palettes: see _grey_palette)


def background_colour(name: str) -> tuple[int, int, int]:
    if name.lower() in BACKGROUNDS:
        return BACKGROUNDS[name.lower()]
    if re.fullmatch(r"#[0-9a-fA-F]{6}", name):
        return tuple(int(name[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
    raise VaekitError(f"background {name!r}: use white, black, grey or #RRGGBB")


@contextmanager
def pil_errors(path: Path, max_pixels: int = MAX_PIXELS) -> Iterator[None]:
    """PIL's many failures (and its bomb warning) as one VaekitError naming the file; more than `max_pixels` is a
    bomb, and the message says that limit (not PIL's own)."""
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's other warnings (palettes, EXIF) are handled or harmless
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise VaekitError(f"{path}: too many pixels (at most {max_pixels:,}), refused as a possible decompression "
                          "bomb") from None
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


def fit(img, size: tuple[int, int], policy: str, background: tuple[int, int, int], area: bool = False):
    """Bring an image to (w, h): centre crop or pad keep the aspect ratio, stretch does not. Bilinear, or each
    pixel the mean of the area it covers (`area`: a mask, where any part of a defect must leave a trace)."""
    from PIL import Image, ImageOps

    if img.size == size:
        return img
    how = Image.Resampling.BOX if area else Image.Resampling.BILINEAR
    if policy == "crop":
        return ImageOps.fit(img, size, how)
    if policy == "pad":
        colour = background if img.mode == "RGB" else round(sum(background) / 3)
        return ImageOps.pad(img, size, how, color=colour)
    return img.resize(size, how)


def load_image(source: Path | IO[bytes], shape: tuple[int, int, int], resize: str = "crop",
               background: str = "white", max_pixels: int = MAX_PIXELS) -> Tensor:
    """Decode one image (a file, or bytes) to uint8 (C, H, W): 8 bits, alpha composited, grey or RGB, fitted
    to `shape`. More than `max_pixels` declared in the header is refused before anything is decoded."""
    from PIL import Image, ImageOps

    c, h, w = shape
    colour = background_colour(background)
    where = source if isinstance(source, Path) else Path(getattr(source, "name", "upload"))
    with pil_errors(where, max_pixels), Image.open(source) as img:
        if img.width * img.height > max_pixels:
            raise VaekitError(f"{where}: image is {img.width}x{img.height}, too many pixels (at most "
                              f"{max_pixels:,})")
        img.seek(0)
        upright = ImageOps.exif_transpose(img) or img  # as a viewer shows it (None: already upright, old PIL)
        flat = flatten_alpha(to_8bit(upright), colour).convert("L" if c == 1 else "RGB")
        array = np.asarray(fit(flat, (w, h), resize, colour), dtype=np.uint8)
    return torch.from_numpy(array.reshape(h, w, c).transpose(2, 0, 1).copy())


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
