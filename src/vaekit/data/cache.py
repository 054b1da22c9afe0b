"""Image folders larger than memory, decoded once into one uint8 file on disk and read back a batch at a time.

An entry is a folder `<data dir>/folders/<key>/` holding `images.u8` (raw uint8, (N, C, H, W) in C order),
`keep.npy` (which of the scanned files those N images are) and `cache.json` (what the entry holds, written last;
the folder is built under another name and renamed into place, so a half-built entry is never read). The key
hashes each image's relative path and SHA-1 (computed by the folder scan anyway, to drop duplicates) and the
settings that shape the decoded pixels: a changed, added or removed file, or another --image-size,
--image-channels, --resize or --background, gives another key and a fresh decode. When files changed, the entry
the new one replaces (same folder, same settings) is removed once the new one is complete; copies at other
settings stay.
`vaekit cache clear` removes every entry; nothing else is touched.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import shutil
import stat
import tempfile
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaekit.config import DataConfig
from vaekit.data.decode import bad_image, decode_files
from vaekit.data.folder import Scan
from vaekit.data.sets import DiskImages
from vaekit.errors import VaekitError
from vaekit.files import LOCKS, exclusive, open_lock, parse_json, same_file, try_lock
from vaekit.progress import say

FORMAT = 2  # 2: images turned upright by their EXIF orientation, hidden files skipped
SPOT_BLOCKS, SPOT_BYTES = 64, 4096  # the blocks of images.u8 whose CRC-32 is checked each time a copy is read
MARKER, IMAGES, KEEP = "cache.json", "images.u8", "keep.npy"
KEY = re.compile(r"[0-9a-f]{24}")  # an entry's name
SPARE_BYTES = 256 * 2**20  # left free on the disk after a cache is written


def cache_key(root: Path, scan: Scan, config: DataConfig) -> str:
    digest = hashlib.sha256(json.dumps([FORMAT, scan.shape, config.resize, config.background]).encode())
    for file, sha1 in zip(scan.files, scan.digests):
        digest.update(os.fsencode(file.relative_to(root)) + f"\0{sha1}\n".encode())  # any name the disk holds
    return digest.hexdigest()[:24]


def cached_images(root: Path, scan: Scan, config: DataConfig, cache_dir: Path) -> tuple[DiskImages, str]:
    """The folder's images from their cache entry, decoding them into a new entry first if there is none;
    returns them and a note in words for the log."""
    entry = cache_dir / cache_key(root, scan, config)
    meta = read_entry(entry, scan)
    if meta is None:
        check_room(root, len(scan.files) * math.prod(scan.shape), cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        with building(entry, root):
            meta = read_entry(entry, scan)  # another process (a second rank, a second run) may have built it
            if meta is None:
                meta = build_entry(root, scan, config, entry)
                drop_replaced(cache_dir, meta, keep=entry)
                return disk_images(entry, scan), f"decoded once into {entry} ({meta['bytes'] / 2**20:,.1f} MiB " \
                    f"in {meta['seconds']:.1f} s)"
    for error in meta["skipped"]:  # unreadable when the entry was built: the same line as a fresh decode
        bad_image(VaekitError(error), config)
    return disk_images(entry, scan), f"read from the decoded copy in {entry} (built {meta['created']}; " \
        f"{len(meta['sums'])} blocks of it checked against their sums)"


def check_room(root: Path, size: int, cache_dir: Path) -> None:
    """Refuse, before writing anything, a copy the disk has no room for."""
    where = next(p for p in (cache_dir, *cache_dir.parents) if p.exists())
    free = shutil.disk_usage(where).free
    if size > free - SPARE_BYTES:
        raise VaekitError(f"{root}: decoded once, its images need {size / 2**30:.2f} GiB in {cache_dir} and "
                          f"vaekit leaves {SPARE_BYTES / 2**30:.2f} GiB free, but {free / 2**30:.2f} GiB are free; "
                          "free some space, set VAEKIT_DATA (or --data-dir) to another disk, or use --no-folder-cache "
                          "to decode every image every epoch")


def disk_images(entry: Path, scan: Scan) -> DiskImages:
    """The entry's images, with the labels of the scanned files they came from."""
    keep = torch.from_numpy(np.load(entry / KEEP, allow_pickle=False))
    labels = None if scan.labels is None else scan.labels[keep]
    return DiskImages(entry / IMAGES, scan.shape, torch.arange(len(keep)), labels, scan.names(keep.tolist()))


FIELDS = {"format": int, "source": str, "shape": list, "resize": str, "background": str, "count": int, "bytes": int,
          "seconds": (int, float), "created": str, "skipped": list, "sums": list}


def spots(size: int) -> list[int]:
    """Where the checked blocks of an images file of `size` bytes start: evenly spread, first and last included."""
    last = max(size - SPOT_BYTES, 0)
    return sorted({round(i * last / (SPOT_BLOCKS - 1)) for i in range(SPOT_BLOCKS)})


def spot_sums(file: Path) -> list[int]:
    """CRC-32 of each checked block: a copy zeroed, truncated or overwritten in place no longer matches."""
    size = file.stat().st_size
    with open(file, "rb") as f:
        sums = []
        for at in spots(size):
            f.seek(at)
            sums.append(zlib.crc32(f.read(SPOT_BYTES)))
    return sums


def read_entry(entry: Path, scan: Scan | None = None) -> dict[str, Any] | None:
    """The entry's description if it is whole, else None (a damaged copy, decoded again and removable by `clear`):
    a real folder of regular files, every field of its description of the right type, the images file of the
    declared size, and, for a scanned folder, its shape and one increasing position among its files per image."""
    try:
        if entry.is_symlink() or not all(regular(entry / name) for name in (MARKER, IMAGES, KEEP)):
            return None
        meta = parse_json((entry / MARKER).read_text(encoding="utf-8"))
        if not (isinstance(meta, dict) and all(isinstance(meta.get(k), t) for k, t in FIELDS.items())
                and meta["format"] == FORMAT and all(isinstance(e, str) for e in meta["skipped"])
                and len(meta["shape"]) == 3 and all(type(d) is int and 0 < d <= 4096 for d in meta["shape"])
                and (entry / IMAGES).stat().st_size == meta["count"] * math.prod(meta["shape"]) == meta["bytes"]
                and meta["sums"] == spot_sums(entry / IMAGES)):
            return None
        if scan is not None:
            if meta["shape"] != list(scan.shape) or (entry / KEEP).stat().st_size > 4096 + 8 * meta["count"]:
                return None
            keep = np.load(entry / KEEP, allow_pickle=False)
            if not (keep.shape == (meta["count"],) and keep.dtype == np.int64 and bool(np.all(np.diff(keep) > 0))
                    and 0 <= keep.min() and keep.max() < len(scan.files)):
                return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return meta


def regular(path: Path) -> bool:
    """A regular file itself, not a link to one."""
    return stat.S_ISREG(path.lstat().st_mode)


def build_entry(root: Path, scan: Scan, config: DataConfig, entry: Path) -> dict[str, Any]:
    """Decode every image of the scan into a new entry, then put it in place; returns its description."""
    size = math.prod(scan.shape)
    part = Path(tempfile.mkdtemp(prefix=f"{entry.name}.part-", dir=entry.parent))
    try:
        started = time.perf_counter()
        with open(part / IMAGES, "wb") as f:
            keep, skipped = decode_files(scan, config, lambda batch: f.write(batch.tobytes()),
                                         f"decoding {root.name} once", in_memory=False)
        if not keep:
            raise VaekitError(f"{root}: none of the images is readable")
        np.save(part / KEEP, np.asarray(keep, dtype=np.int64))
        meta = {"format": FORMAT, "source": str(root.resolve()), "shape": list(scan.shape), "resize": config.resize,
                "background": config.background, "count": len(keep),
                "bytes": len(keep) * size, "seconds": round(time.perf_counter() - started, 2),
                "created": time.strftime("%Y-%m-%d %H:%M:%S"), "skipped": skipped, "sums": spot_sums(part / IMAGES)}
        (part / MARKER).write_text(json.dumps(meta, indent=1))
        put_in_place(part, entry, scan)
    except OSError as e:
        shutil.rmtree(part, ignore_errors=True)
        if e.errno == errno.ENOSPC:
            raise VaekitError(f"{root}: the disk filled up while its images were decoded into {entry.parent} (the "
                              "unfinished copy is removed); free some space, set VAEKIT_DATA (or --data-dir) to "
                              "another disk, or use --no-folder-cache to decode every image every epoch") from None
        raise
    except BaseException:
        shutil.rmtree(part, ignore_errors=True)
        raise
    return meta


def put_in_place(part: Path, entry: Path, scan: Scan) -> None:
    """Rename the finished build to its entry; if another process (a second rank, a second run) finished the same
    entry first, keep that one. A damaged entry of the same name (read_entry refused it) is replaced; a link by
    that name, which vaekit never makes, is refused with the way out."""
    if entry.is_symlink():
        raise VaekitError(f"{entry} is a symbolic link, not a copy vaekit made; remove it (`rm {entry}`)")
    if entry.exists() and read_entry(entry, scan) is None:
        if not ours(entry):
            raise VaekitError(f"{entry} holds files vaekit did not write; move them away and run again")
        shutil.rmtree(entry)
    try:
        os.replace(part, entry)
    except OSError:
        if read_entry(entry, scan) is None:
            raise
        shutil.rmtree(part, ignore_errors=True)


@contextmanager
def building(entry: Path, root: Path) -> Iterator[None]:
    """Hold the entry's lock file (`<key>.lock`): one process decodes a given folder at a time, and another that
    wants the same copy waits, then reads it. A POSIX record lock (`lockf`): it belongs to this process alone, not
    to the decode workers it forks, and goes with it, killed or not. Without fcntl (Windows) there is no lock: two
    builders each decode, and the first to finish puts its copy in place."""
    waiting = lambda: say(f"waiting for another process that is decoding {root} into {entry.parent}")  # noqa: E731
    with exclusive(entry.with_name(entry.name + ".lock"), wait=True, on_wait=waiting):
        yield


def in_use(lock: Path) -> bool:
    """Whether a live process holds this lock file (a build in progress); without locks (Windows), always."""
    if not LOCKS:
        return True
    try:
        with open_lock(lock) as f:
            return not try_lock(f) or not same_file(f, lock)
    except VaekitError:
        return True


def entries(cache_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The complete entries under `cache_dir`, oldest first (builds in progress are not entries)."""
    found = [(d, read_entry(d)) for d in sorted(cache_dir.glob("*")) if d.is_dir() and KEY.fullmatch(d.name)] \
        if cache_dir.is_dir() else []
    return sorted(((d, m) for d, m in found if m is not None), key=lambda e: e[1]["created"])


def drop_replaced(cache_dir: Path, new: dict[str, Any], keep: Path) -> None:
    """Remove the entries that `keep` replaces: the same folder decoded with the same settings, before its files
    changed. Copies of the folder at another size (or resize, background) stay: a user may go back to them."""
    same = ("source", "shape", "resize", "background")
    for folder, meta in entries(cache_dir):
        if folder != keep and all(meta.get(k) == new[k] for k in same):
            shutil.rmtree(folder, ignore_errors=True)
    for folder in older_copies(cache_dir, new["source"]):
        shutil.rmtree(folder, ignore_errors=True)


def older_copies(cache_dir: Path, source: str) -> list[Path]:
    """Copies of the folder `source` in an earlier format of this file (decoded by rules since changed: EXIF
    orientation, hidden files), which no run reads any more: only vaekit's own folders."""
    found = []
    for folder in (d for d in cache_dir.iterdir() if KEY.fullmatch(d.name) and ours(d)):
        try:
            meta = parse_json((folder / MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and meta.get("source") == source and isinstance(meta.get("format"), int) \
                and meta["format"] < FORMAT:
            found.append(folder)
    return found


def clear(cache_dir: Path) -> tuple[int, int]:
    """Remove every copy: complete entries, damaged ones (`read_entry` refuses them: cut short, an older format) and
    builds left by killed processes, but no build in progress; returns how many folders and bytes went. Only what
    vaekit writes is touched: real folders named `<key>` or `<key>.part-...` holding nothing but regular files of
    its three names, and empty `<key>.lock` files. A failure to remove (a read-only disk) is an error, not a skip."""
    removed = freed = 0
    for folder in sorted(cache_dir.iterdir()) if cache_dir.is_dir() else []:
        key, build, _ = folder.name.partition(".part-")
        if not (KEY.fullmatch(key) and ours(folder)) or (build and in_use(cache_dir / f"{key}.lock")):
            continue
        size = sum(p.lstat().st_size for p in folder.iterdir())
        try:
            shutil.rmtree(folder)
        except FileNotFoundError:  # gone meanwhile (a build put in place, another clear)
            continue
        removed, freed = removed + 1, freed + size
    for lock in cache_dir.glob("*.lock") if cache_dir.is_dir() else []:
        if KEY.fullmatch(lock.stem) and regular(lock) and not lock.lstat().st_size \
                and not (cache_dir / lock.stem).exists() and not in_use(lock):
            lock.unlink()
    return removed, freed


def ours(folder: Path) -> bool:
    """A real folder holding only regular files named as vaekit names a copy's files."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    return all(p.name in (IMAGES, KEEP, MARKER) and regular(p) for p in folder.iterdir())
