"""Image arrays from .npy and .npz files, read without unpickling and without trusting declared sizes.

An .npy header declares a shape; a member of an .npz (a zip) declares its uncompressed size. Both are
checked against the file and a memory budget before anything is allocated, so a header that claims
terabytes, or a zip bomb, is refused in milliseconds.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path
from typing import IO

import numpy as np

from vaekit.errors import VaekitError

IMAGE_KEYS = ("images", "x", "X", "data")
BOMB_SIZE, BOMB_RATIO = 256 << 20, 200  # more than 256 MiB inflated from a file 200 times smaller: a bomb


def check_declared(size: int, stored: int, max_bytes: int, where: str) -> None:
    """Refuse, before allocating, a declared size over the memory budget, or one that a compressed file
    claims at a ratio no image data reaches (real images compress a few times; zeros, a thousand times)."""
    if size > max_bytes:
        raise VaekitError(f"{where}: declares {size / 2**30:.1f} GiB of data, more than the {max_bytes / 2**30:.1f} "
                          "GiB allowed (--max-in-memory-gb)")
    if size > BOMB_SIZE and size > BOMB_RATIO * max(stored, 1):
        raise VaekitError(f"{where}: {stored:,} compressed bytes declare {size / 2**20:,.0f} MiB of data; refused as "
                          "a decompression bomb")
LABEL_KEYS = ("labels", "y", "Y", "targets")


def read_npy(f: IO[bytes], where: str, available: int, max_bytes: int, stored: int | None = None,
             kinds: str = "biuf") -> np.ndarray:
    """One .npy stream: header checked (plain numbers, or the dtype `kinds` allow, such as strings for labels; size
    within `available` bytes, the budget and the bomb ratio against the `stored` (compressed) size), then read."""
    stored = available if stored is None else stored
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = read_header(f, max_header_size=10_000)
    except (ValueError, OSError, EOFError) as e:
        raise VaekitError(f"{where}: not a plain .npy array ({e})") from None
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in kinds:
        raise VaekitError(f"{where}: not a plain {'numeric ' * (kinds == 'biuf')}array file (dtype {dtype}); vaekit "
                          "never unpickles")
    size = math.prod(shape) * dtype.itemsize
    check_declared(size, stored, max_bytes, where)
    if size > available:
        raise VaekitError(f"{where}: truncated (the header declares {size:,} bytes, the file holds fewer)")
    data = bytearray(size)  # writable, filled in place: no second copy
    got = f.readinto(data)
    if got != size:
        raise VaekitError(f"{where}: truncated (the header declares {size:,} bytes, found {got:,})")
    array = np.frombuffer(data, dtype=dtype)
    return array.reshape(shape[::-1]).T if fortran else array.reshape(shape)


def read_array_file(file: Path, max_bytes: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Images and optional labels: an .npy of images, or an .npz with `images` (or `x`) and optional `labels`
    (or `y`)."""
    if not file.is_file():
        raise VaekitError(f"{file}: no such file")
    try:
        if not zipfile.is_zipfile(file):
            with open(file, "rb") as f:
                return read_npy(f, str(file), file.stat().st_size, max_bytes), None
        with zipfile.ZipFile(file) as z:
            members = {name.removesuffix(".npy"): name for name in z.namelist()}
            key = next((k for k in IMAGE_KEYS if k in members), None)
            if key is None:
                raise VaekitError(f"{file}: no 'images' or 'x' array inside (found: "
                                  f"{', '.join(sorted(members)[:10])})")
            label_key = next((k for k in LABEL_KEYS if k in members), None)
            images = read_member(z, members[key], file, max_bytes)
            labels = None if label_key is None else read_member(z, members[label_key], file, max_bytes, "biufUS")
            return images, labels
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, NotImplementedError, OSError, EOFError,
            RuntimeError) as e:
        raise VaekitError(f"{file}: not a readable .npy/.npz file ({e})") from None


def read_member(z: zipfile.ZipFile, name: str, file: Path, max_bytes: int, kinds: str = "biuf") -> np.ndarray:
    info = z.getinfo(name)
    check_declared(info.file_size, info.compress_size, max_bytes, f"{file}: {name}")
    with z.open(info) as f:  # zipfile stops at the declared size and checks the CRC
        return read_npy(f, f"{file}: {name}", info.file_size, max_bytes, info.compress_size, kinds)
