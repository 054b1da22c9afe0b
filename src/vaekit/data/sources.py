"""Where images come from: Fashion-MNIST (the default), MNIST, the 8x8 digits, image folders, arrays.

`load_dataset(DataConfig)` is the one entry point. Names map to loader functions in `SOURCES`.
Offline first: a local copy is always preferred; downloads are verified against known checksums.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vaekit.config import DataConfig
from vaekit.data.idx import read_idx
from vaekit.data.sets import Dataset, FileImages, ImageSet, TensorImages, from_arrays, split_indices
from vaekit.errors import VaekitError, warn
from vaekit.progress import bar

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

# Official sources and the MD5 of each .gz file as published (also used by torchvision).
REMOTE = {
    "fashion-mnist": {
        "url": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "md5": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"),
        "system": "/usr/share/datasets/fashion-mnist",  # Debian package dataset-fashion-mnist
        "classes": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                    "Ankle boot"],
    },
    "mnist": {
        "url": "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "md5": ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
                "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"),
        "system": "/usr/share/datasets/mnist",
        "classes": [str(i) for i in range(10)],
    },
}

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


def data_home(config: DataConfig) -> Path:
    return Path(config.data_dir or os.environ.get("VAEKIT_DATA") or Path.home() / ".cache" / "vaekit")


# --- MNIST-style IDX sets ------------------------------------------------------------------------------


def find_idx_files(folder: Path) -> list[Path] | None:
    """The four IDX files in `folder`, gzipped or not; None when any is missing."""
    found = []
    for stem in IDX_FILES:
        candidates = [folder / f"{stem}.gz", folder / stem]
        match = next((p for p in candidates if p.is_file()), None)
        if match is None:
            return None
        found.append(match)
    return found


def download(url: str, dest: Path, md5: str) -> None:
    """Download `url` to `dest`, verifying its MD5; the file appears only once it is complete and correct."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.md5(usedforsecurity=False)
    with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as f:
        total = int(response.headers.get("Content-Length") or 0) or None
        with bar(total=total, unit="B", unit_scale=True, desc=dest.name) as shown:
            while chunk := response.read(1 << 20):
                f.write(chunk)
                digest.update(chunk)
                shown.update(len(chunk))
    if digest.hexdigest() != md5:
        part.unlink()
        raise VaekitError(f"{url}: checksum mismatch (got md5 {digest.hexdigest()}, expected {md5})")
    os.replace(part, dest)


def load_idx_set(name: str, config: DataConfig) -> Dataset:
    remote = REMOTE[name]
    cache = data_home(config) / name
    files = find_idx_files(cache) or find_idx_files(Path(remote["system"]))
    if files is None:
        how = (f"install it (apt-get install dataset-{name}) or put the four IDX files "
               f"({', '.join(IDX_FILES)}, .gz or raw) in {cache}")
        if not config.download:
            raise VaekitError(f"{name} not found in {cache} or {remote['system']} and downloads are off; {how}")
        try:
            for stem, md5 in zip(IDX_FILES, remote["md5"]):
                if not (cache / f"{stem}.gz").is_file():
                    download(remote["url"] + f"{stem}.gz", cache / f"{stem}.gz", md5)
        except OSError as e:  # URLError and socket errors are OSErrors
            reason = getattr(e, "reason", None) or e
            raise VaekitError(f"{name} not found locally and the download failed ({reason}); {how}") from None
        files = find_idx_files(cache)
    train_x, train_y, test_x, test_y = (read_idx(f) for f in files)
    for images, labels, f in ((train_x, train_y, files[0]), (test_x, test_y, files[2])):
        if images.ndim != 3 or images.dtype != np.uint8 or labels.shape != images.shape[:1]:
            raise VaekitError(f"{f}: expected uint8 images (N, H, W) with N labels beside them")
    full = from_arrays(train_x[:, None], train_y)
    rest, val = split_indices(len(full), (config.val_fraction,))
    return Dataset(name, full.subset(rest), full.subset(val), from_arrays(test_x[:, None], test_y), remote["classes"])


# --- in-memory arrays -----------------------------------------------------------------------------------


def to_uint8_images(array: np.ndarray, where: str) -> np.ndarray:
    """(N, H, W), (N, C, H, W) or (N, H, W, C) of uint8 or floats in [0, 1] -> uint8 (N, C, H, W)."""
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4:
        if array.shape[1] not in (1, 3) and array.shape[3] in (1, 3):
            array = array.transpose(0, 3, 1, 2)
    else:
        raise VaekitError(f"{where}: expected images shaped (N, H, W) or (N, C, H, W), got shape {array.shape}")
    if array.shape[1] not in (1, 3):
        raise VaekitError(f"{where}: images need 1 or 3 channels, got shape {array.shape}")
    if len(array) == 0:
        raise VaekitError(f"{where}: holds no images")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype.kind not in "fiu" or array.dtype == np.bool_:
        raise VaekitError(f"{where}: expected uint8 or float pixels, got {array.dtype}")
    top = 1.0 if array.dtype.kind == "f" else 255.0  # floats in [0, 1], integers in [0, 255]
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise VaekitError(f"{where}: contains NaN or infinite pixels")
    if array.min() < 0 or array.max() > top:
        raise VaekitError(f"{where}: pixels must lie in [0, {top:g}] (found {array.min():g} to {array.max():g})")
    return np.round(array * (255.0 / top)).astype(np.uint8)


def three_way(full: TensorImages | ImageSet, config: DataConfig, spec: str, classes: list[str]) -> Dataset:
    train, val, test = split_indices(len(full), (config.val_fraction, config.test_fraction))
    return Dataset(spec, full.subset(train), full.subset(val), full.subset(test), classes)


def load_digits(config: DataConfig) -> Dataset:
    """scikit-learn's 8x8 handwritten digits (1,797 images, UCI, CC BY 4.0), shipped inside vaekit."""
    with resources.files("vaekit.data").joinpath("digits.npz").open("rb") as f:
        arrays = np.load(f, allow_pickle=False)
        full = from_arrays(arrays["images"][:, None], arrays["labels"])
    return three_way(full, config, "digits", [str(i) for i in range(10)])


def load_array_file(path: str, config: DataConfig) -> Dataset:
    """An .npy of images, or an .npz with `images` (or `x`) and optional `labels` (or `y`)."""
    file = Path(path)
    if not file.is_file():
        raise VaekitError(f"{file}: no such file")
    try:
        loaded = np.load(file, allow_pickle=False)  # never unpickle user files
    except ValueError as e:
        raise VaekitError(f"{file}: not a plain numeric array file ({e})") from None
    except (OSError, EOFError) as e:
        raise VaekitError(f"{file}: not a readable .npy/.npz file ({e})") from None
    labels = None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        keys = set(loaded.files)
        key = next((k for k in ("images", "x", "X", "data") if k in keys), None)
        if key is None:
            raise VaekitError(f"{file}: no 'images' or 'x' array inside (found: {', '.join(sorted(keys))})")
        images = loaded[key]
        label_key = next((k for k in ("labels", "y", "Y", "targets") if k in keys), None)
        labels = loaded[label_key] if label_key else None
    else:
        images = loaded
    images = to_uint8_images(images, str(file))
    if labels is not None and (labels.shape != images.shape[:1] or labels.dtype.kind not in "iu"):
        raise VaekitError(f"{file}: labels must be integers, one per image")
    full = from_arrays(images, labels)
    return three_way(full, config, f"npz:{file}" if file.suffix == ".npz" else f"npy:{file}", [])


# --- image folders --------------------------------------------------------------------------------------


def load_image(path: Path, shape: tuple[int, int, int]) -> Tensor:
    """Decode one image file to uint8 (C, H, W), converted to grey or RGB and resized to `shape`."""
    from PIL import Image, UnidentifiedImageError

    c, h, w = shape
    try:
        with Image.open(path) as img:
            img = img.convert("L" if c == 1 else "RGB")
            if img.size != (w, h):
                img = img.resize((w, h), Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise VaekitError(f"{path}: not a readable image ({e})") from None
    return torch.from_numpy(array.reshape(h, w, c).transpose(2, 0, 1).copy())


def scan_folder(root: Path, config: DataConfig) -> tuple[list[Path], Tensor | None, list[str], tuple[int, int, int]]:
    """Image files under `root`, labels from first-level subfolder names, and the common shape."""
    from PIL import Image, UnidentifiedImageError

    if not root.is_dir():
        raise VaekitError(f"{root}: no such folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise VaekitError(f"{root}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    subdirs = [p.relative_to(root).parts for p in files]
    labels, classes = None, []
    if all(len(parts) > 1 for parts in subdirs):
        classes = sorted({parts[0] for parts in subdirs})
        labels = torch.tensor([classes.index(parts[0]) for parts in subdirs])
    sizes, colour, readable = set(), False, []
    for i, f in enumerate(files):
        try:
            with Image.open(f) as img:  # reads the header only
                sizes.add(img.size)
                colour |= img.mode not in ("1", "L", "LA", "I", "I;16", "F")
            readable.append(i)
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            bad_image(VaekitError(f"{f}: not a readable image ({e})"), config)
    files = [files[i] for i in readable]
    labels = None if labels is None else labels[readable]
    if not files:
        raise VaekitError(f"{root}: none of the images is readable")
    if config.image_size:
        h = w = config.image_size
    elif len(sizes) == 1:
        w, h = sizes.pop()
    else:
        raise VaekitError(f"{root}: images have {len(sizes)} different sizes; choose one with --image-size N")
    c = config.channels or (3 if colour else 1)
    if c not in (1, 3):
        raise VaekitError(f"channels must be 1 or 3, got {c}")
    return files, labels, classes, (c, h, w)


def bad_image(error: VaekitError, config: DataConfig) -> None:
    """Stop on an unreadable image, or skip it with a warning when the user asked for that."""
    if not config.skip_bad_images:
        raise VaekitError(f"{error} (use --skip-bad-images to skip such files)")
    warn(f"{error}; skipped")


def load_folder(path: str, config: DataConfig) -> Dataset:
    root = Path(path)
    files, labels, classes, shape = scan_folder(root, config)
    full: ImageSet = FileImages(files, labels, shape)
    if len(files) * np.prod(shape) <= config.max_in_memory_gb * 2**30:
        images, keep = [], []
        for i, f in enumerate(bar(files, desc=f"reading {root.name}")):
            try:
                images.append(load_image(f, shape))
                keep.append(i)
            except VaekitError as e:  # a header that reads but data that does not (a truncated file)
                bad_image(e, config)
        if not images:
            raise VaekitError(f"{root}: none of the images is readable")
        full = TensorImages(torch.stack(images), None if labels is None else labels[keep])
    return three_way(full, config, f"folder:{root}", classes)


SOURCES: dict[str, Callable[[str, DataConfig], Dataset]] = {
    "fashion-mnist": lambda _, c: load_idx_set("fashion-mnist", c),
    "mnist": lambda _, c: load_idx_set("mnist", c),
    "digits": lambda _, c: load_digits(c),
    "folder": load_folder,
    "npz": load_array_file,
    "npy": load_array_file,
}


def load_dataset(config: DataConfig) -> Dataset:
    """Load the data set named by `config.name`: a known name, `folder:PATH`, `npz:PATH`, or a path."""
    name = config.name
    if not 0 < config.val_fraction < 1 or not 0 < config.test_fraction < 1:
        raise VaekitError("val_fraction and test_fraction must lie strictly between 0 and 1")
    kind, _, arg = name.partition(":")
    if kind in SOURCES and (arg or kind not in ("folder", "npz", "npy")):
        return SOURCES[kind](arg, config)
    path = Path(name)
    if path.suffix in (".npz", ".npy"):
        return load_array_file(name, config)
    if path.is_dir():
        return load_folder(name, config)
    raise VaekitError(f"unknown data set {name!r}: use fashion-mnist, mnist, digits, folder:PATH, npz:PATH "
                      "or npy:PATH")
