"""Writing without losing anything: atomic files and run folders that replace only what vaekit wrote.

Every output vaekit writes (weights, configs, metrics, images, reports, arrays) goes through
`atomic_write`: the data goes to a hidden temporary name beside the target, is flushed to disk,
and is renamed over the target only when complete. Only regular files are ever replaced.

A run folder carries a marker file; `new_run_folder` replaces only folders that carry it (or that an
older vaekit wrote), never one that is or holds an input, and deletes the old run only once the new one
has completed (restoring it if the new one fails).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from vaekit.errors import VaekitError
from vaekit.layout import MARKER, RunFolder


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces `path`, on error it is removed.

    The temporary name keeps the target's suffix (numpy and PIL decide formats by it)."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise VaekitError(f"{path}: exists and is not a regular file; vaekit writes only files")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VaekitError(f"{path.parent}: cannot create the folder ({e.strerror or e})") from None
    tmp = _temporary(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.stem}.tmp{path.suffix}")


def write_text(path: str | Path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError: not UTF-8, not JSON, or an integer of thousands of digits
        raise VaekitError(f"{path}: not a readable JSON file ({str(e)[:200]})") from None


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
    """Write a CSV file rows at a time (memory stays at one block of rows); it appears, complete, at the end."""
    import csv

    with atomic_write(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
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


def is_vaekit_run(folder: Path) -> bool:
    """A folder vaekit wrote: it has the marker, or the files of a run (or a compare report) from before the
    marker existed."""
    return RunFolder(folder).looks_like_run() or looks_like_compare(folder)


def looks_like_compare(folder: Path) -> bool:
    """A `vaekit compare` folder from before the marker: its metrics.json holds a comparison's own keys and its
    report.html is vaekit's page (any folder that merely has files by those two common names is not one)."""
    metrics, report = folder / "metrics.json", folder / "report.html"
    if not (metrics.is_file() and report.is_file()) or metrics.stat().st_size > 50 << 20:
        return False
    try:
        data = json.loads(metrics.read_text(encoding="utf-8"))
        with report.open(encoding="utf-8", errors="replace") as f:
            head = f.read(2000)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"checkpoints", "settings", "real_floor"} <= set(data) \
        and "<title>vaekit: " in head


def check_apart(out: Path, inputs: Iterable[Path]) -> None:
    """Refuse an output folder that is, holds, or lies inside one of the inputs."""
    target = out.resolve()
    for given in inputs:
        source = Path(given).expanduser().resolve()
        if target == source or target in source.parents or source in target.parents and source.is_dir():
            raise VaekitError(f"{out}: the output folder overlaps the input {given}; choose another --out")


def check_run_folder(out: str | Path, overwrite: bool, inputs: Iterable[Path] = ()) -> Path:
    """The folder `new_run_folder` would write (a link to a run: the run it names), or a one-line refusal; touches
    nothing, so a command can ask before long work."""
    out = Path(out).resolve() if Path(out).is_symlink() else Path(out)
    check_apart(out, inputs)
    if out.exists() and not out.is_dir():
        raise VaekitError(f"{out}: exists and is not a folder")
    if out.is_dir() and not _holds_nothing(out):
        if not overwrite:
            raise VaekitError(f"{out}: run folder exists and is not empty; choose another --out, pass --overwrite to "
                              "replace it, or (train) --resume to continue the run there")
        if not is_vaekit_run(out):
            raise VaekitError(f"{out}: not a vaekit run folder, so --overwrite will not replace it; choose another "
                              "--out")
    return out


@contextmanager
def new_run_folder(out: str | Path, overwrite: bool, inputs: Iterable[Path] = ()) -> Iterator[Path]:
    """An empty run folder at `out` for the body of the `with` block; call it after every input is validated.

    With `overwrite`, an existing vaekit run is moved aside first, deleted when the block completes, and put
    back if it fails; any other non-empty folder is refused."""
    out = check_run_folder(out, overwrite, inputs)
    aside = None
    if out.is_dir() and not _holds_nothing(out):
        aside = out.absolute().with_name(f".{out.absolute().name}.replaced-{os.getpid()}")  # same folder, same disk
        os.replace(out, aside)
    try:
        out.mkdir(parents=True, exist_ok=True)
        RunFolder(out).marker.write_text("a vaekit run folder: `--overwrite` may replace it\n", encoding="utf-8")
    except OSError as e:
        _put_back(out, aside)
        raise VaekitError(f"{out}: cannot write the run folder ({e.strerror or e})") from None
    try:
        yield out
    except BaseException:
        _put_back(out, aside)
        raise
    if aside is not None:
        shutil.rmtree(aside)


def _holds_nothing(folder: Path) -> bool:
    """Empty, or holding only what a vaekit run killed at its very start left: the marker, and perhaps the
    temporary file it was writing (the same command run again then starts the run afresh)."""
    run = RunFolder(folder)
    left = {p.name for p in folder.iterdir()}
    return not left or run.marker.is_file() and left <= {MARKER, _temporary(run.run_json).name}


def _put_back(out: Path, aside: Path | None) -> None:
    """Undo a replacement: drop the new run (all of it written by vaekit) and restore the old one."""
    if aside is not None:
        shutil.rmtree(out, ignore_errors=True)
        os.replace(aside, out)
