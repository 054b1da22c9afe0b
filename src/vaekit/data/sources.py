"""Where images come from: Fashion-MNIST (the default), MNIST, the 8x8 digits, CIFAR-10, image folders, arrays, and
inspection data with defect masks.

`load_dataset(DataConfig)` is the one entry point. Names map to loader functions in `SOURCES`.
Offline first: a local copy is always preferred; downloads are verified against known checksums.
"""

from __future__ import annotations

import hashlib
import math
import os
import urllib.request
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from vaekit.config import MAX_CLASSES, DataConfig, short
from vaekit.data.arrays import read_array_file
from vaekit.data.cache import cached_images
from vaekit.data.cifar import load_cifar10
from vaekit.data.classes import keep_classes
from vaekit.data.decode import decode_files
from vaekit.data.folder import Scan, scan_folder
from vaekit.data.idx import read_idx
from vaekit.data.inspection import load_inspection
from vaekit.data.sets import Dataset, FileImages, ImageSet, TensorImages, from_arrays, split_indices
from vaekit.errors import VaekitError, path_text, printable
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
    train_x, train_y, test_x, test_y = (read_idx(f, memory_budget(config)) for f in files)
    classes = remote["classes"]
    for images, labels, f, g in ((train_x, train_y, files[0], files[1]), (test_x, test_y, files[2], files[3])):
        if images.ndim != 3 or images.dtype != np.uint8 or labels.shape != images.shape[:1]:
            raise VaekitError(f"{f}: expected uint8 images (N, H, W) with N labels beside them")
        if len(labels) and labels.max() >= len(classes):
            raise VaekitError(f"{g}: {name} labels lie in 0..{len(classes) - 1}, found {labels.max()}; not the "
                              f"{name} label file")
    full = from_arrays(train_x[:, None], train_y)
    rest, val = split_indices(len(full), (config.val_fraction,))
    return Dataset(name, full.subset(rest), full.subset(val), from_arrays(test_x[:, None], test_y), classes,
                   f"the {len(classes)} classes of {name}", fingerprint=digest(train_x, train_y, test_x, test_y))


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
    out = np.empty(array.shape, np.uint8)
    for start in range(0, len(array), 4096):  # in blocks: a float copy of the whole array could be 8x its size
        block = array[start:start + 4096].astype(np.float64)
        if not np.isfinite(block).all():
            raise VaekitError(f"{where}: contains NaN or infinite pixels")
        if block.min() < 0 or block.max() > top:
            raise VaekitError(f"{where}: pixels must lie in [0, {top:g}] (found {block.min():g} to {block.max():g} "
                              f"in images {start} to {start + len(block) - 1})")
        out[start:start + 4096] = np.round(block * (255.0 / top))
    return out


def digest(*arrays: np.ndarray | None) -> str:
    """A fingerprint of arrays read from files: their shapes, types and bytes."""
    h = hashlib.sha1(usedforsecurity=False)
    for a in arrays:
        if a is not None:
            h.update(f"{a.shape}{a.dtype.str}".encode())
            h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def three_way(full: TensorImages | ImageSet, config: DataConfig, spec: str, classes: list[str],
              label_source: str, split: bool = True, fingerprint: str = "") -> Dataset:
    """The set split into train / val / test; unsplit (`split` False: all of it as `test`, as `vaekit score`
    reads a folder of new images, however few) for scoring every image."""
    if not split:
        none = full.subset(torch.arange(0))
        return Dataset(spec, none, none, full, classes, label_source, fingerprint=fingerprint)
    train, val, test = split_indices(len(full), (config.val_fraction, config.test_fraction))
    return Dataset(spec, full.subset(train), full.subset(val), full.subset(test), classes, label_source,
                   fingerprint=fingerprint)


def load_digits(config: DataConfig) -> Dataset:
    """scikit-learn's 8x8 handwritten digits (1,797 images, UCI, CC BY 4.0), shipped inside vaekit."""
    with resources.files("vaekit.data").joinpath("digits.npz").open("rb") as f:
        arrays = np.load(f, allow_pickle=False)
        images, labels = arrays["images"], arrays["labels"]
    return three_way(from_arrays(images[:, None], labels), config, "digits", [str(i) for i in range(10)],
                     "the 10 digits", fingerprint=digest(images, labels))


def load_array_file(path: str, config: DataConfig, split: bool = True) -> Dataset:
    """An .npy of images, or an .npz with `images` (or `x`) and optional `labels` (or `y`)."""
    file = Path(path)
    images, labels = read_array_file(file, memory_budget(config))
    images = to_uint8_images(images, str(file))
    labels, classes, source = array_labels(labels, len(images), file)
    kind = "npz" if file.suffix == ".npz" else "npy"
    return three_way(from_arrays(images, labels), config, f"{kind}:{path_text(file)}",
                     classes, source, split, digest(images, labels))


def array_labels(labels: np.ndarray | None, n: int, file: Path) -> tuple[np.ndarray | None, list[str], str]:
    """An array file's labels as class indices, the class names, and what they are in words: integers in
    0..MAX_CLASSES - 1 as they are; strings are class names, numbered in sorted order."""
    if labels is None:
        return None, [], "none (the file has no labels)"
    if labels.shape != (n,):
        raise VaekitError(f"{file}: labels must be one per image ({n}), got shape {labels.shape}")
    if labels.dtype.kind in "US":
        names, indices = np.unique(labels, return_inverse=True)
        if len(names) > MAX_CLASSES:
            raise VaekitError(f"{file}: {len(names):,} different string labels; at most {MAX_CLASSES:,} classes")
        names = [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names.tolist()]
        shown = ", ".join(f"{printable(name)}: {i}" for i, name in enumerate(names[:6]))
        return indices.astype(np.int64), names, f"the file's {len(names)} string labels, taken as class names and " \
            f"numbered in sorted order ({shown}{', ...' if len(names) > 6 else ''})"
    if labels.dtype.kind not in "iu":
        raise VaekitError(f"{file}: labels must be integers or class names (strings), got dtype {labels.dtype}")
    if len(labels) and (labels.min() < 0 or labels.max() >= MAX_CLASSES):
        raise VaekitError(f"{file}: labels must lie in 0..{MAX_CLASSES - 1} (found {labels.min()} to "
                          f"{labels.max()})")
    return labels, [], "the file's integer labels"


def memory_budget(config: DataConfig) -> int:
    """The most bytes one array file may declare."""
    return int(config.max_in_memory_gb * 2**30)


# --- image folders --------------------------------------------------------------------------------------


def load_folder(path: str, config: DataConfig, split: bool = True) -> Dataset:
    """A folder of images: held in memory when it fits in `max_in_memory_gb`; otherwise decoded once into a file
    on disk and read from there (`vaekit.data.cache`), or, with the cache off, decoded anew every epoch."""
    root = Path(path)
    scan = scan_folder(root, config)
    notes = list(scan.notes)
    if len(scan.files) * math.prod(scan.shape) <= memory_budget(config):
        full: ImageSet = decode_in_memory(root, scan, config)
    elif config.folder_cache:
        full, note = cached_images(root, scan, config, data_home(config) / "folders")
        notes.append(f"larger than --max-in-memory-gb {config.max_in_memory_gb:g}: {note}")
    else:
        full = FileImages(scan.files, scan.labels, scan.shape, config.resize, config.background,
                          config.skip_bad_images)
        notes.append(f"larger than --max-in-memory-gb {config.max_in_memory_gb:g}: decoded anew every epoch "
                     "(--no-folder-cache)")
    data = three_way(full, config, f"folder:{path_text(root)}", scan.classes, scan.label_source, split,
                     scan.fingerprint(root))
    data.notes, data.revised = notes, scan.revised
    return data


def decode_in_memory(root: Path, scan: Scan, config: DataConfig) -> TensorImages:
    images = np.empty((len(scan.files), *scan.shape), np.uint8)
    filled = 0

    def write(batch: np.ndarray) -> None:
        nonlocal filled
        images[filled:filled + len(batch)] = batch
        filled += len(batch)

    keep, _ = decode_files(scan, config, write, f"reading {root.name}")
    if not keep:
        raise VaekitError(f"{root}: none of the images is readable")
    labels = None if scan.labels is None else scan.labels[torch.tensor(keep)]
    return TensorImages(torch.from_numpy(images[:filled]), labels, scan.names(keep))


PATH_SOURCES = ("folder", "npz", "npy", "mvtec")
SOURCES: dict[str, Callable[[str, DataConfig], Dataset]] = {
    "fashion-mnist": lambda _, c: load_idx_set("fashion-mnist", c),
    "mnist": lambda _, c: load_idx_set("mnist", c),
    "digits": lambda _, c: load_digits(c),
    "cifar10": lambda _, c: load_cifar10(c),
    "folder": load_folder,
    "npz": load_array_file,
    "npy": load_array_file,
    "mvtec": load_inspection,
}


def parse_name(name: str) -> tuple[str, str]:
    """(source, argument) for a data set name: a known name, `folder:PATH`, `npz:PATH`, `npy:PATH`, `mvtec:PATH`
    (inspection data with masks: data/inspection.py), or a bare
    path to a folder or an array file; `~` in paths is expanded."""
    kind, _, arg = name.partition(":")
    if kind in PATH_SOURCES and arg:
        return kind, str(Path(arg).expanduser())
    if kind in SOURCES and not arg and kind not in PATH_SOURCES:
        return kind, ""
    path = Path(name).expanduser()
    if path.suffix in (".npz", ".npy"):
        return path.suffix[1:], str(path)
    if path.is_dir():
        return "folder", str(path)
    raise VaekitError(f"unknown data set {short(name)}: use fashion-mnist, mnist, digits, cifar10, folder:PATH, "
                      "npz:PATH, npy:PATH or mvtec:PATH")


def data_paths(config: DataConfig) -> list[Path]:
    """The files or folders a data set is read from (none for the built-in sets)."""
    kind, arg = parse_name(config.name)
    return [Path(arg)] if kind in PATH_SOURCES else []


def load_dataset(config: DataConfig, whole: bool = False) -> Dataset:
    """Load the data set named by `config.name` (see `parse_name`), cut to `config.classes` if it names some.
    `whole`: a folder or an array file unsplit, all of it as the test split (the built-in sets keep theirs)."""
    kind, arg = parse_name(config.name)
    data = SOURCES[kind](arg, config, False) if whole and kind in PATH_SOURCES else SOURCES[kind](arg, config)
    return keep_classes(data, config.classes) if config.classes else data
