"""CIFAR-10 (`--data cifar10`) from its official binary archive, never the pickled one (unpickling runs code).

The archive (cifar-10-binary.tar.gz, 162 MB, Krizhevsky 2009) holds five training batches and a test batch, each
record one label byte and 3,072 pixel bytes (the red, green and blue planes of a 32x32 image). It is read from
the data directory (`$VAEKIT_DATA/cifar10/`, else ~/.cache/vaekit/cifar10/) straight out of the tar, without
unpacking (the gzip stream's checksum verified first), each member's size checked before it is read; a download,
where allowed, is checked against the published MD5 and appears only once complete. The 50,000 training images
are split into train and validation (`val_fraction`); the 10,000 test images are the test split, as published.
"""

from __future__ import annotations

import gzip
import tarfile
import zlib
from pathlib import Path

import numpy as np

from vaekit.config import DataConfig
from vaekit.data.sets import Dataset, from_arrays, split_indices
from vaekit.errors import VaekitError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
ARCHIVE = "cifar-10-binary.tar.gz"
FOLDER = "cifar-10-batches-bin"
TRAIN = [f"data_batch_{i}.bin" for i in range(1, 6)]
TEST = ["test_batch.bin"]
RECORD = 1 + 3 * 32 * 32
PER_FILE = 10_000
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def archive_path(config: DataConfig) -> Path:
    """The archive in the data directory, downloaded first where it is missing and downloads are allowed."""
    from vaekit.data.sources import data_home, download

    file = data_home(config) / "cifar10" / ARCHIVE
    if file.is_file():
        return file
    how = f"put the official binary archive {ARCHIVE} ({URL}) in {file.parent}"
    if not config.download:
        raise VaekitError(f"cifar10 not found in {file.parent} and downloads are off; {how}")
    try:
        download(URL, file, MD5)
    except OSError as e:
        raise VaekitError(f"cifar10 not found locally and the download failed ({getattr(e, 'reason', e)}); "
                          f"{how}") from None
    return file


def read_batches(tar: tarfile.TarFile, names: list[str], where: Path) -> tuple[np.ndarray, np.ndarray]:
    """The images (N, 3, 32, 32) uint8 and labels of the named members, each a whole number of records, at most
    the published 10,000."""
    images, labels = [], []
    for name in names:
        try:
            member = tar.getmember(f"{FOLDER}/{name}")
        except KeyError:
            raise VaekitError(f"{where}: has no {FOLDER}/{name}; not the CIFAR-10 binary archive") from None
        if not member.isfile() or member.size % RECORD or not 0 < member.size <= PER_FILE * RECORD:
            raise VaekitError(f"{where}: {name} holds {member.size:,} bytes, not whole records of {RECORD} bytes "
                              f"(at most {PER_FILE:,}); a damaged archive")
        records = np.frombuffer(tar.extractfile(member).read(), np.uint8).reshape(-1, RECORD)
        if records[:, 0].max() >= len(CLASSES):
            raise VaekitError(f"{where}: {name} has a label {records[:, 0].max()}; CIFAR-10's lie in 0..9")
        labels.append(records[:, 0].astype(np.int64))
        images.append(records[:, 1:].reshape(-1, 3, 32, 32))
    return np.concatenate(images), np.concatenate(labels)


def load_cifar10(config: DataConfig) -> Dataset:
    from vaekit.data.sources import digest

    file = archive_path(config)
    try:
        with gzip.open(file) as whole:  # read to its end once, so the gzip CRC checks every byte (tar stops early)
            while whole.read(1 << 24):
                pass
        with tarfile.open(file, "r:gz") as tar:
            train_x, train_y = read_batches(tar, TRAIN, file)
            test_x, test_y = read_batches(tar, TEST, file)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise VaekitError(f"{file}: not a readable .tar.gz ({e}); a damaged download? remove it to fetch it again") \
            from None
    full = from_arrays(train_x, train_y)
    rest, val = split_indices(len(full), (config.val_fraction,))
    return Dataset("cifar10", full.subset(rest), full.subset(val), from_arrays(test_x, test_y), CLASSES,
                   "the 10 classes of CIFAR-10", fingerprint=digest(train_x, train_y, test_x, test_y))
