"""What a command may write: never what it reads, one writer at a time, and run folders that replace only what vaekit
wrote.

A command names its outputs and its inputs before any work (`claim`): no output may be an input, lie inside an
input folder, or be another output of the same command (paths resolved, links followed); each output is locked
for the whole command, so a second process writing the same file or folder is refused in one line instead of
mixing its results into the first one's.

A run folder carries a marker file; `new_run_folder` replaces only folders that carry it (or that an
older vaekit wrote), never one that is or holds an input, and deletes the old run only once the new one
has completed (restoring it if the new one fails, or, if the process was killed, at the next run into the same
folder).
"""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from vaekit.errors import VaekitError, warn
from vaekit.files import HOST, Busy, alive, exclusive, parse_json, temporaries, write_text
from vaekit.layout import MARKER, METRICS_FILE, REPORT_FILE, RunFolder, foreign

# --- locks -------------------------------------------------------------------------------------------------


def lock_file(path: Path) -> Path:
    """The lock file of an output: `.NAME.lock` beside it, links followed (a link and its target share one)."""
    path = real(path)
    return path.with_name(f".{path.name}.lock")


@contextmanager
def held(path: Path) -> Iterator[None]:
    """Hold the lock of the output `path` (a file or a folder) until the block ends; refused in one line while
    another process holds it. Folders made to hold the lock file are removed again if nothing was written there."""
    lock = lock_file(path)
    made = [p for p in (lock.parent, *lock.parent.parents) if not p.exists()]
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VaekitError(f"{lock.parent}: cannot create the folder ({e.strerror or e})") from None
    try:
        with exclusive(lock):
            yield
    except Busy:
        raise VaekitError(f"{path}: another vaekit process is writing it now (it holds {lock.name}); wait for it to "
                          "finish, or choose another output") from None
    finally:
        for folder in made:  # deepest first; a folder that got files stays
            try:
                folder.rmdir()
            except OSError:
                break


# --- outputs and inputs --------------------------------------------------------------------------------------


def real(path: Path) -> Path:
    """A path as the file system sees it: `~` expanded, links followed, absolute."""
    return Path(os.path.realpath(Path(path).expanduser()))


def inside(path: Path, folder: Path) -> bool:
    return folder in path.parents


def check_outputs(files: Sequence[Path], inputs: Iterable[Path], overwrite: bool,
                  folders: Sequence[Path] = ()) -> None:
    """Refuse, before anything is written, an output file that exists (without `overwrite`) or is not a regular
    file, one named twice (two flags, one file), and any output that is an input or lies inside an input folder.
    `folders` are output folders the command fills with numbered files of its own, at their top level: refused when
    they are or lie inside an input, or hold an input file or an output file at that level (deeper files cannot be
    written over). Paths are compared resolved, links followed; nothing is touched."""
    given = [Path(p) for p in inputs]
    sources = {real(p): p for p in given}
    seen: dict[Path, Path] = {}
    for out in files:
        out = Path(out)
        target = real(out)
        if target in seen:
            raise VaekitError(f"{out}: named as two outputs ({seen[target]} and {out} are the same file); give each "
                              "its own name")
        seen[target] = out
        for source, shown in sources.items():
            linked = out.exists() and source.exists() and os.path.samefile(out, source)  # a hard link
            if target == source or linked or inside(target, source):
                what = "lies inside" if inside(target, source) else "is"
                raise VaekitError(f"{out}: {what} the input {shown} of this command; writing it would destroy what "
                                  "is being read; choose another output")
        if out.exists() and not out.is_file():
            raise VaekitError(f"{out}: exists and is not a regular file; vaekit writes only files")
        if (out.exists() or out.is_symlink()) and not overwrite:  # a link to nothing is someone's too
            raise VaekitError(f"{out}: exists{' (a link)' * out.is_symlink()}; pass --overwrite to replace it")
    for folder in folders:
        target = real(Path(folder))
        if target in seen:
            raise VaekitError(f"{folder}: named as an output file ({seen[target]}) and an output folder; give each its "
                              "own name")
        for source, shown in sources.items():
            if target == source or inside(target, source) or source.parent == target and source.is_file():
                raise VaekitError(f"{folder}: the output folder overlaps the input {shown}; choose another folder")
        for out, shown in seen.items():
            if out.parent == target:
                raise VaekitError(f"{shown}: lies inside the output folder {folder}, which this command fills with "
                                  "files of its own; write it elsewhere")


@contextmanager
def claim(files: Sequence[Path | str | None], inputs: Iterable[Path], overwrite: bool,
          folders: Sequence[Path | str | None] = ()) -> Iterator[None]:
    """`check_outputs`, then the lock of every output held for the block: the command's body runs with its outputs
    its own. Outputs given as None (a flag not given) are left out."""
    files = [Path(p) for p in files if p]
    folders = [Path(p) for p in folders if p]
    check_outputs(files, inputs, overwrite, folders)
    with ExitStack() as stack:
        for out in [*files, *folders]:
            stack.enter_context(held(out))
        yield


# --- run folders ----------------------------------------------------------------------------------------------


def is_vaekit_run(folder: Path) -> bool:
    """A folder vaekit wrote: it has the marker, or the files of a run (or a compare report) from before the
    marker existed."""
    return RunFolder(folder).looks_like_run() or looks_like_compare(folder)


def looks_like_compare(folder: Path) -> bool:
    """A `vaekit compare` folder from before the marker: its metrics.json holds a comparison's own keys and its
    report.html is vaekit's page (any folder that merely has files by those two common names is not one)."""
    metrics, report = folder / METRICS_FILE, folder / REPORT_FILE
    if not (metrics.is_file() and report.is_file()) or metrics.stat().st_size > 50 << 20:
        return False
    try:
        data = parse_json(metrics.read_text(encoding="utf-8"))
        with report.open(encoding="utf-8", errors="replace") as f:
            head = f.read(2000)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"checkpoints", "settings", "real_floor"} <= set(data) \
        and "<title>vaekit: " in head


def check_apart(out: Path, inputs: Iterable[Path]) -> None:
    """Refuse an output folder that is, holds, or lies inside one of the inputs."""
    target = real(out)
    for given in inputs:
        source = real(Path(given))
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
        mine = foreign(out)
        if mine:
            names = ", ".join(str(p.relative_to(out)) for p in mine[:4]) + (", ..." if len(mine) > 4 else "")
            raise VaekitError(f"{out}: holds {len(mine)} file{'s' * (len(mine) > 1)} vaekit did not write ({names}), "
                              "which --overwrite would delete with it; move them away, or choose another --out")
    return out


@contextmanager
def new_run_folder(out: str | Path, overwrite: bool, inputs: Iterable[Path] = (), keep_failed: bool = True
                   ) -> Iterator[Path]:
    """An empty run folder at `out` for the body of the `with` block; call it after every input is validated. The
    folder is locked for the block: a second process writing the same folder is refused in one line. A block that
    fails leaves what it wrote where that can be continued (`keep_failed`: a training run's checkpoints); otherwise
    the folder it made goes with it.

    With `overwrite`, an existing vaekit run is moved aside first, deleted when the block completes, and put
    back if it fails (or, if this process is killed, by the next run into `out`: `restore_interrupted`); any other
    non-empty folder is refused."""
    out = Path(out).resolve() if Path(out).is_symlink() else Path(out)
    check_apart(out, inputs)
    with held(out):
        restore_interrupted(out)
        out = check_run_folder(out, overwrite, inputs)
        aside = None
        if out.is_dir() and not _holds_nothing(out):
            aside = set_aside(out, "replaced")
        try:
            out.mkdir(parents=True, exist_ok=True)
            mark(out, complete=False)
        except (OSError, VaekitError) as e:
            _put_back(out, aside)
            raise VaekitError(f"{out}: cannot write the run folder ({getattr(e, 'strerror', None) or e})") from None
        try:
            yield out
        except BaseException:
            if aside is not None:
                _put_back(out, aside)
            elif not keep_failed:
                shutil.rmtree(out, ignore_errors=True)  # made here, empty but for the marker when the block began
            raise
        finish(out, [aside] if aside is not None else [])


@contextmanager
def resuming(out: Path) -> Iterator[None]:
    """The run folder of a resumed run, locked for the block. A run that an interrupted `--overwrite` began, the
    old run it replaces set aside beside it, is continued: the old run is deleted once this one completes (as the
    --overwrite would have), and said before the work starts."""
    with held(out):
        asides = interrupted(out, "replaced")
        for aside in asides:
            warn(f"{out} continues a run that an interrupted --overwrite began; the earlier run it replaces, set "
                 f"aside as {aside}, is deleted once this one completes")
        mark(out, complete=False)
        yield
        finish(out, asides)


def finish(out: Path, replaced: list[Path]) -> None:
    """A run completed: its marker says so, and the old runs it replaces go (renamed to `discarded` first, so a
    kill during the deletion leaves nothing that could be put back)."""
    mark(out, complete=True)
    for aside in replaced:
        shutil.rmtree(set_aside(aside, "discarded", name=out.absolute().name), ignore_errors=True)


def mark(out: Path, complete: bool) -> None:
    """The marker says whose run this is: complete, or being written by this process."""
    state = "complete" if complete else f"writing: {HOST}-{os.getpid()}"
    write_text(RunFolder(out).marker, f"a vaekit run folder: `--overwrite` may replace it\n{state}\n")


def abandoned(out: Path) -> bool:
    """A run whose writer is gone before it completed (its marker names a process no longer running)."""
    try:
        lines = RunFolder(out).marker.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return False
    writer = next((line.removeprefix("writing: ") for line in lines if line.startswith("writing: ")), None)
    return writer is not None and "complete" not in lines and not alive(writer)


def completed(out: Path) -> bool:
    try:
        return "complete" in RunFolder(out).marker.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return False


def set_aside(folder: Path, why: str, name: str | None = None) -> Path:
    """Rename `folder` to `.NAME.WHY-HOST-PID` beside it (same folder, same disk): a name that says whose it is."""
    folder = folder.absolute()
    aside = folder.with_name(f".{name or folder.name}.{why}-{HOST}-{os.getpid()}")
    os.replace(folder, aside)
    return aside


def interrupted(out: Path, why: str) -> list[Path]:
    """What killed `--overwrite`s of `out` left beside it: folders set aside `why` by processes no longer running."""
    out = out.absolute()
    prefix = f".{out.name}.{why}-"
    return [p for p in out.parent.glob(f"{glob.escape(prefix)}*")
            if p.is_dir() and not p.is_symlink() and not alive(p.name[len(prefix):])] if out.parent.is_dir() else []


def restore_interrupted(out: Path) -> None:
    """Finish what a killed `--overwrite` of `out` left, never losing work, and say each step in one line:
    - an old run it was deleting once its replacement had completed: deleted;
    - an old run it had set aside, with nothing in `out` worth keeping (nothing there, or a replacement abandoned
      before its first checkpoint): put back, the abandoned start removed;
    - with a completed replacement in `out`: the old run, which the --overwrite was to delete, deleted;
    - otherwise (a replacement with checkpoints, resumable; a folder vaekit did not write): both left as they are."""
    for stale in interrupted(out, "discarded"):
        shutil.rmtree(stale, ignore_errors=True)
    for aside in interrupted(out, "replaced"):
        ours = out.is_dir() and not out.is_symlink() and RunFolder(out).marker.is_file()
        if not out.exists() or ours and (_holds_nothing(out) or abandoned(out) and not RunFolder(out).steps()):
            if out.exists():
                shutil.rmtree(out)
            os.replace(aside, out)
            warn(f"{out}: put back the run that an interrupted --overwrite had set aside as {aside.name} (the "
                 "replacement never completed)")
        elif ours and completed(out):
            shutil.rmtree(set_aside(aside, "discarded", name=out.absolute().name), ignore_errors=True)
            warn(f"{out}: removed the earlier run that a completed --overwrite had set aside as {aside.name}")
        else:
            warn(f"{aside} holds the run that an interrupted --overwrite of {out} set aside, and {out} holds work "
                 "of its own (continue it with train --resume, which then removes the earlier run, or remove it); "
                 "both are left as they are")


def _holds_nothing(folder: Path) -> bool:
    """Empty, or holding only what a vaekit run killed at its very start left: the marker, and perhaps the
    temporary files of run.json (the same command run again then starts the run afresh)."""
    run = RunFolder(folder)
    left = {p.name for p in folder.iterdir()}
    started = {MARKER, *(p.name for file in (run.run_json, run.marker) for p, _ in temporaries(file))}
    return not left or run.marker.is_file() and left <= started


def _put_back(out: Path, aside: Path | None) -> None:
    """Undo a replacement: drop the new run (all of it written by vaekit) and restore the old one."""
    if aside is not None:
        shutil.rmtree(out, ignore_errors=True)
        os.replace(aside, out)
