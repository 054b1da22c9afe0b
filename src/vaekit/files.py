"""Files written whole and read back with care.

Every output vaekit writes (weights, configs, metrics, images, reports, arrays) goes through
`atomic_write`: the data goes to a hidden temporary name beside the target, unique to the writing process, is
flushed to disk, and is renamed over the target only when complete, with the mode any new file of the process
gets (its umask). Only regular files are ever replaced. What a command may write at all (never its inputs, one
writer at a time, run folders) is `outputs.py`.

Files vaekit wrote and reads back (thresholds, descriptions, checkpoints' JSON) are parsed with their nesting
bounded (`parse_json`) and every field checked (`read_record`), as flags are. Lock files (`exclusive`) keep one
process at a time on one output or one decoded copy.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import re
import secrets
import socket
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from vaekit.errors import VaekitError, short

HOST = hashlib.sha1(socket.gethostname().encode(), usedforsecurity=False).hexdigest()[:6]
OWNER = re.compile(r"(?:(?P<host>[0-9a-f]{6})-)?(?P<pid>\d+)")  # who left a temporary name: [host-]pid


def proc_field(field: str, file: str = "/proc/self/status") -> str | None:
    """A field of a Linux /proc file (/proc/self/status, /proc/meminfo), as its text; None where there is none."""
    try:
        with open(file, encoding="ascii") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith(f"{field}:"))
    except (OSError, StopIteration, ValueError):
        return None


def process_umask() -> int:
    """The umask every new file of this process gets (read without changing it where /proc tells)."""
    text = proc_field("Umask")
    if text is not None:
        return int(text, 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


NEW_FILE_MODE = 0o666 & ~process_umask()


def alive(owner: str) -> bool:
    """Whether the process named `[host-]pid` (a temporary name's tag) may still be running: one of another machine
    (a shared file system) always may."""
    m = OWNER.fullmatch(owner)
    if m is None or m["host"] not in (None, HOST):
        return True
    try:
        os.kill(int(m["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces `path`, on error it is removed.

    The temporary name keeps the target's suffix (numpy and PIL decide formats by it) and is this process's own,
    so two writers never share one; the file gets the mode of the file it replaces, else the process's usual mode
    (libraries that write through mkstemp, as safetensors does, would leave it readable by its owner alone).
    Temporary files of the same target left by killed processes are removed."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise VaekitError(f"{path}: exists and is not a regular file; vaekit writes only files")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VaekitError(f"{path.parent}: cannot create the folder ({e.strerror or e})") from None
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.stem}.tmp-{HOST}-{os.getpid()}-{secrets.token_hex(3)}{path.suffix}")
    mode = path.stat().st_mode & 0o777 if path.is_file() else NEW_FILE_MODE
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise VaekitError(f"{path}: no space left on the disk while writing it (the old file, if any, is "
                              "unchanged); free some space or write elsewhere") from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def temporaries(path: Path) -> list[tuple[Path, str]]:
    """Temporary files of `path` (what `atomic_write` writes before the rename), with their writers' tags ("" for
    the one fixed name of vaekit 0.2.0 and before, whose writer cannot be told)."""
    pattern = f".{glob.escape(path.stem)}.tmp-*{glob.escape(path.suffix)}"
    found = []
    for p in path.parent.glob(pattern):
        tag = p.name[len(path.stem) + 6:len(p.name) - len(path.suffix)]  # host-pid-random
        found.append((p, tag.rsplit("-", 1)[0]))
    legacy = path.with_name(f".{path.stem}.tmp{path.suffix}")
    return found + ([(legacy, "")] if legacy.is_file() else [])


def remove_stale_temporaries(path: Path) -> None:
    for p, owner in temporaries(path):
        if not alive(owner) and p.is_file() and not p.is_symlink():
            p.unlink(missing_ok=True)


def utf8(path: str | Path) -> bool:
    """Whether a path is UTF-8 text (libraries in Rust or C, safetensors and TensorBoard's, open only those; a name
    on Linux may be any bytes)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def write_text(path: str | Path, text: str) -> None:
    """UTF-8 text; a file name that is not valid UTF-8 (as Linux allows) is written with backslash escapes."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8", errors="backslashreplace")


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """JSON from a file vaekit reads back, refused in one line if it is not JSON or is nested past reason."""
    try:
        return parse_json(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise VaekitError(f"{path}: not a readable {what} ({e.strerror or e})") from None
    except ValueError as e:  # not UTF-8, not JSON, nested too deep, or an integer of thousands of digits
        raise VaekitError(f"{path}: not a readable {what} ({str(e)[:200]})") from None


def read_record(path: str | Path, schema: Any, what: str) -> Any:
    """A JSON file vaekit wrote and reads back, every field checked against `schema` (a pydantic model): a file
    changed by hand or damaged is refused in one line naming the file and the field."""
    from pydantic import ValidationError

    data = read_json(path, what)
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the whole file"
        got = f" (got {short(first['input'])})" if "input" in first and first["type"] != "missing" else ""
        raise VaekitError(f"{path}: not a valid {what}: {where}: {first['msg']}{got}") from None


MAX_JSON_DEPTH = 64  # no file vaekit writes nests deeper than a few levels


def parse_json(text: str) -> Any:
    """json.loads, with nesting deeper than MAX_JSON_DEPTH refused as a ValueError before the parser recurses."""
    depth = deepest = 0
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH:  # only then can it nest that deep: look
        for match in re.finditer(r'"(?:[^"\\]|\\.)*"|[\[{]|[\]}]', text):
            token = match.group()
            if token in "[{":
                depth += 1
                deepest = max(deepest, depth)
                if deepest > MAX_JSON_DEPTH:
                    raise ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep")
            elif token in "]}":
                depth -= 1
    return json.loads(text)


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


@contextmanager
def csv_writer(path: str | Path, header: list[str]) -> Iterator[Callable[[Iterable[list[Any]]], None]]:
    """Write a CSV file rows at a time (memory stays at one block of rows); it appears, complete, at the end. A file
    name that is not valid UTF-8 is written with backslash escapes."""
    import csv

    with atomic_write(path) as tmp, open(tmp, "w", newline="", encoding="utf-8", errors="backslashreplace") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        yield writer.writerows


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- locks -------------------------------------------------------------------------------------------------

try:
    import fcntl
except ImportError:  # Windows: no locks (two writers each finish, and the last rename wins)
    fcntl = None  # type: ignore[assignment]
LOCKS = fcntl is not None


def open_lock(path: Path) -> IO[str]:
    """A lock file, created if missing; never through a symbolic link (O_NOFOLLOW where there is one)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as e:
        raise VaekitError(f"{path}: cannot create the lock file ({e.strerror or e})") from None
    return os.fdopen(fd, "r+")


def try_lock(f: IO[str], wait: bool = False) -> bool:
    """A POSIX record lock (`lockf`) on an open lock file: it belongs to this process alone, not to the workers it
    forks, and goes with it, killed or not. Without fcntl (Windows) every lock is granted."""
    if fcntl is None:
        return True
    try:
        fcntl.lockf(f, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EAGAIN):
            return False
        raise VaekitError(f"{f.name}: cannot lock ({e.strerror or e})") from None
    return True


class Busy(Exception):
    """Another process holds the lock."""


def same_file(f: IO[str], path: Path) -> bool:
    """Whether the open file `f` is still the one named `path` (a lock file's last holder removes it)."""
    try:
        return os.path.samestat(os.fstat(f.fileno()), os.stat(path, follow_symlinks=False))
    except FileNotFoundError:
        return False


@contextmanager
def exclusive(lock: Path, wait: bool = False, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the lock file `lock` (created if missing) for the block: waiting for another holder with `wait` (calling
    `on_wait` once, first), else raising Busy. The file is removed when the block ends; a holder that finds the file
    it locked removed meanwhile (the previous holder's end) locks the new one, so two processes never both hold a
    lock of one name. One left by a killed process is taken over (its lock went with it)."""
    while True:
        f = open_lock(lock)
        if not try_lock(f):
            if not wait:
                f.close()
                raise Busy
            if on_wait is not None:
                on_wait()
                on_wait = None
            try_lock(f, wait=True)
        if same_file(f, lock):
            break
        f.close()
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        f.close()
