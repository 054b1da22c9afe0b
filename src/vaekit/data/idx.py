"""Reading and writing IDX files, the format of MNIST and Fashion-MNIST (optionally gzipped)."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from vaekit.data.arrays import check_declared
from vaekit.errors import VaekitError

# type code -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT")
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path, max_bytes: int = 4 << 30) -> np.ndarray:
    """Read an IDX file (.gz or raw) into an array, checking the magic number and the length.

    The header's declared size is checked against the file and against `max_bytes` before the data is
    read, and a .gz file is decompressed no further than that size: a gzip bomb costs no memory."""
    path = Path(path)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in IDX_DTYPES:
                raise VaekitError(f"{path}: not an IDX file (wrong magic number)")
            dtype, ndim = np.dtype(IDX_DTYPES[head[2]]), head[3]
            dims = f.read(4 * ndim)
            if ndim == 0 or len(dims) < 4 * ndim:
                raise VaekitError(f"{path}: truncated IDX header")
            shape = struct.unpack(f">{ndim}I", dims)
            size = math.prod(shape) * dtype.itemsize
            check_declared(size, path.stat().st_size, max_bytes, f"{path}: the IDX header")
            if path.suffix != ".gz" and path.stat().st_size != 4 + 4 * ndim + size:
                expected = 4 + 4 * ndim + size
                problem = "truncated" if path.stat().st_size < expected else "has trailing bytes"
                raise VaekitError(f"{path}: IDX data {problem} ({path.stat().st_size} bytes, header says {expected})")
            data = f.read(size)
            extra = f.read(1)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise VaekitError(f"{path}: corrupt or truncated gzip file ({e})") from None
    except OSError as e:
        raise VaekitError(f"{path}: cannot read ({e.strerror or e})") from None
    if len(data) != size or extra:
        problem = "truncated" if len(data) < size else "has trailing bytes"
        raise VaekitError(f"{path}: IDX data {problem} (header says {size} bytes of data)")
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write an array as IDX (gzipped when the name ends in .gz)."""
    codes = {np.dtype(v).newbyteorder("="): k for k, v in IDX_DTYPES.items()}
    code = codes[array.dtype.newbyteorder("=")]
    data = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data += array.astype(np.dtype(IDX_DTYPES[code])).tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
