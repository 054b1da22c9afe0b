"""Atomic file writing: a crash leaves either the old file or the new one, never half of one.

Every output vaekit writes (weights, configs, metrics, images, reports, arrays) goes through
`atomic_write`: the data goes to a hidden temporary name beside the target, is flushed to disk,
and is renamed over the target only when complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces `path`, on error it is removed.

    The temporary name keeps the target's suffix (numpy and PIL decide formats by it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


@contextmanager
def npy_writer(path: str | Path, shape: tuple[int, ...], dtype: Any) -> Iterator[Callable[[np.ndarray], None]]:
    """Write an .npy file block by block (rows in order): memory stays at one block for any N.

    Yields `write(block)`; the file appears, complete, when the block ends without error."""
    dtype = np.dtype(dtype)
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)})
        yield lambda block: f.write(np.ascontiguousarray(block, dtype=dtype).tobytes())


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
