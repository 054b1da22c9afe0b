"""Folders larger than memory are decoded once into a file under the data directory and read back from it: the
same images, labels and order as in memory; rebuilt when a file changes; never half-read after a kill; removed
by `vaekit cache clear` and by nothing else."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SLOW
from PIL import Image

from vaekit.config import DataConfig
from vaekit.data import Batches, load_dataset
from vaekit.data.cache import entries
from vaekit.errors import VaekitError

N = 300  # above PARALLEL_FROM: the first decode runs in worker processes


def make_folder(root: Path, n: int = N, size: int = 12) -> Path:
    """RGB PNGs of a few sizes (so images are resized as they are decoded) in two class subfolders."""
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / ("cats" if i % 3 else "dogs")
        folder.mkdir(parents=True, exist_ok=True)
        side = size + (i % 4) * 2
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
    return root


def config(root: Path, tmp_path: Path, **kw) -> DataConfig:
    settings = dict(name=f"folder:{root}", image_size=12, val_fraction=0.2, test_fraction=0.2,
                    data_dir=str(tmp_path / "data-home"), max_in_memory_gb=1e-9, workers=2)
    return DataConfig(**{**settings, **kw})


def every_batch(data, shuffle: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.cat([xb for xb, _ in Batches(data.train, 7, shuffle=shuffle, seed=3)])
    return x, data.train.labels


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("images") / "pets")


def test_the_decoded_copy_holds_what_memory_holds(folder, tmp_path):
    cached = load_dataset(config(folder, tmp_path))
    in_memory = load_dataset(config(folder, tmp_path, max_in_memory_gb=4.0))
    assert type(cached.train).__name__ == "DiskImages" and in_memory.train.in_memory
    assert any("decoded once into" in note for note in cached.notes)
    for shuffle in (False, True):
        assert all(torch.equal(a, b) for a, b in zip(every_batch(cached, shuffle), every_batch(in_memory, shuffle)))
    (entry, meta), = entries(tmp_path / "data-home" / "folders")
    assert meta["count"] == N and (entry / "images.u8").stat().st_size == N * 3 * 12 * 12


def test_a_second_run_reads_the_copy_and_a_changed_file_replaces_it(folder, tmp_path):
    load_dataset(config(folder, tmp_path))
    (entry, meta), = entries(tmp_path / "data-home" / "folders")
    again = load_dataset(config(folder, tmp_path))
    assert any("read from the decoded copy" in note for note in again.notes)
    assert entries(tmp_path / "data-home" / "folders") == [(entry, meta)]

    changed = tmp_path / "changed"
    make_folder(changed, n=20)
    first = load_dataset(config(changed, tmp_path))
    pixels = np.asarray(Image.open(changed / "cats" / "00001.png"))
    Image.fromarray(255 - pixels).save(changed / "cats" / "00001.png")
    second = load_dataset(config(changed, tmp_path))
    assert any("decoded once into" in note for note in second.notes)
    assert not torch.equal(torch.cat([s.read(torch.arange(len(s))) for s in (first.train, first.val, first.test)]),
                           torch.cat([s.read(torch.arange(len(s))) for s in (second.train, second.val, second.test)]))
    sources = sorted(meta["source"] for _, meta in entries(tmp_path / "data-home" / "folders"))
    assert sources == sorted([str(folder.resolve()), str(changed.resolve())])  # the old copy was replaced
    load_dataset(config(changed, tmp_path, image_size=10))  # another size is another copy, kept beside it
    sizes = [m["shape"][-1] for _, m in entries(tmp_path / "data-home" / "folders")
             if m["source"] == str(changed.resolve())]
    assert sorted(sizes) == [10, 12]


def resident_kib(file: Path) -> int:
    """How much of `file` this process holds in memory through its mappings (Rss in /proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if "-" in line.split(" ", 1)[0]:  # a mapping's first line: address range, ..., path
            inside = line.rstrip().endswith(str(file))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads Linux's /proc/self/smaps")
def test_the_process_holds_the_batches_not_the_file(tmp_path):
    """An epoch through a 12 MiB file, 16 images at a time in shuffled order: every page of the file is read, and
    the process never holds more than about a batch's pages of it."""
    from vaekit.data.sets import DiskImages

    file = tmp_path / "images.u8"
    images = torch.randint(0, 256, (4096, 3, 32, 32), dtype=torch.uint8)
    file.write_bytes(images.numpy().tobytes())
    disk = DiskImages(file, (3, 32, 32), torch.arange(4096))
    batches, peak, seen = Batches(disk, 16, shuffle=True), 0, []
    for i, (x, _) in enumerate(batches):
        if i % 8 == 0:  # reading smaps is slow in a process with torch's many mappings
            peak = max(peak, resident_kib(file))
        seen.append(x)
    order = torch.cat(batches.indices(0))
    assert torch.equal(torch.cat(seen), images[order] / 255.0) and file.stat().st_size == 12 * 2**20
    assert peak <= 16 * 64  # one fault maps at most 64 KiB around the touched page


@pytest.mark.parametrize("damage", ["cut the images", "keep out of range", "keep too short", "keep as floats",
                                    "marker not JSON", "skipped not a list", "another shape, same bytes",
                                    "images zeroed in place"])
def test_a_damaged_copy_is_decoded_again(folder, tmp_path, damage):
    before = every_batch(load_dataset(config(folder, tmp_path)))
    (entry, _), = entries(tmp_path / "data-home" / "folders")
    marker = json.loads((entry / "cache.json").read_text())
    if damage == "cut the images":
        with open(entry / "images.u8", "r+b") as f:
            f.truncate(100)
    elif damage.startswith("keep"):
        keep = {"keep out of range": np.arange(N) + 10**6, "keep too short": np.arange(N - 1),
                "keep as floats": np.arange(N, dtype=float)}[damage]
        np.save(entry / "keep.npy", keep)
    elif damage == "images zeroed in place":  # same size, same description: only the sums can tell
        size = (entry / "images.u8").stat().st_size
        with open(entry / "images.u8", "r+b") as f:
            f.write(bytes(size))
    elif damage == "another shape, same bytes":  # half as many images of twice the channels: sizes all agree
        (entry / "cache.json").write_text(json.dumps({**marker, "count": N // 2, "shape": [6, 12, 12]}))
        np.save(entry / "keep.npy", np.arange(0, N, 2))
    else:
        (entry / "cache.json").write_text("{" if damage == "marker not JSON" else
                                          json.dumps({**marker, "skipped": "x.png: broken"}))
    again = load_dataset(config(folder, tmp_path))
    assert any("decoded once into" in note for note in again.notes)
    assert all(torch.equal(a, b) for a, b in zip(before, every_batch(again)))


def test_no_room_on_the_disk_is_one_line_before_anything_is_written(folder, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(VaekitError, match=r"need 0\.00 GiB in .*leaves 0\.25 GiB free, but 0\.00 GiB are free.*"
                                          r"--no-folder-cache"):
        load_dataset(config(folder, tmp_path))
    assert not (tmp_path / "data-home" / "folders").exists()


def test_a_file_changed_after_the_scan_never_enters_the_copy(tmp_path):
    """The copy is keyed on the scan's digests: an image replaced between the scan and its decode is caught by the
    digest of the bytes actually decoded, and nothing is kept."""
    from vaekit.data.cache import cached_images
    from vaekit.data.folder import scan_folder

    root = make_folder(tmp_path / "moving", n=20)
    settings = config(root, tmp_path)
    scan = scan_folder(root, settings)
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(root / "cats" / "00001.png")
    with pytest.raises(VaekitError, match="00001.png: changed while the folder was being read"):
        cached_images(root, scan, settings, tmp_path / "data-home" / "folders")
    assert entries(tmp_path / "data-home" / "folders") == []
    assert not list((tmp_path / "data-home" / "folders").glob("*.part-*"))


def test_clear_touches_only_what_vaekit_wrote(folder, tmp_path, cli):
    """Look-alikes of a copy (a folder named like one holding a folder named images.u8, a lock file with content,
    a link named like a copy) are neither removed nor followed; a link in a copy's place is refused in one line."""
    home = tmp_path / "cache"  # the cli fixture's data directory
    load_dataset(config(folder, tmp_path, data_dir=str(home)))
    (entry, _), = entries(home / "folders")
    fake = home / "folders" / ("b" * 24) / "images.u8" / "precious"
    fake.mkdir(parents=True)
    (fake / "thesis.tex").write_text("years of work")
    (home / "folders" / ("f" * 24 + ".lock")).write_text("not a vaekit lock")
    outside = tmp_path / "outside"
    entry.rename(outside)
    entry.symlink_to(outside, target_is_directory=True)
    assert "removed 0 decoded folders" in cli("cache", "clear").stdout
    assert (fake / "thesis.tex").is_file() and (home / "folders" / ("f" * 24 + ".lock")).is_file()
    assert (outside / "images.u8").is_file() and entry.is_symlink()
    failed = cli("train", "--data", f"folder:{folder}", "--image-size", "12", "--max-in-memory-gb", "1e-9",
                 "--epochs", "1", "--out", "run", check=False)
    assert failed.returncode == 2 and f"{entry} is a symbolic link, not a copy vaekit made" in failed.stderr


def test_a_foreign_folder_in_a_copys_place_is_refused_not_removed(tmp_path):
    from vaekit.data.cache import cache_key
    from vaekit.data.folder import scan_folder

    root = make_folder(tmp_path / "pets", n=20)
    settings = config(root, tmp_path)
    entry = tmp_path / "data-home" / "folders" / cache_key(root, scan_folder(root, settings), settings)
    entry.mkdir(parents=True)
    (entry / "notes.txt").write_text("mine")
    with pytest.raises(VaekitError, match="holds files vaekit did not write; move them away"):
        load_dataset(settings)
    assert (entry / "notes.txt").read_text() == "mine"


BUILD = """
import sys
from vaekit.config import DataConfig
from vaekit.data import load_dataset
load_dataset(DataConfig(name=sys.argv[1], image_size=64, data_dir=sys.argv[2], max_in_memory_gb=1e-9, workers=1))
"""


@pytest.fixture(scope="module")
def slow_folder(tmp_path_factory) -> Path:
    """Large enough that its first decode takes a few seconds with one worker."""
    return make_folder(tmp_path_factory.mktemp("slow") / "photos", n=1500, size=96)


def start_building(folder: Path, home: Path) -> subprocess.Popen:
    """Another process decoding `folder` into the cache under `home`; returns once it has written some of it."""
    proc = subprocess.Popen([sys.executable, "-c", BUILD, f"folder:{folder}", str(home)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not any(p.stat().st_size > 0 for p in home.glob("folders/*.part-*/images.u8")):
        assert proc.poll() is None and time.monotonic() < deadline, "the decode ended before it was caught"
        time.sleep(0.01)
    return proc


def resume_once_waited_for(proc: subprocess.Popen, limit: float = 60.0) -> None:
    """SIGCONT to a stopped `proc` once some process blocks on a record lock (Linux lists it in /proc/locks as
    '-> '), or after `limit` seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and "->" not in Path("/proc/locks").read_text():
        time.sleep(0.02)
    proc.send_signal(signal.SIGCONT)


def test_a_second_process_waits_for_the_first_decode_and_clear_leaves_it_alone(slow_folder, tmp_path, capsys):
    """Two runs on the same new folder (two DDP ranks, two users' jobs): one decodes, the other waits and reads
    that copy. `vaekit cache clear` meanwhile removes nothing of the build in progress."""
    from vaekit.data.cache import clear

    home = tmp_path / "home"
    first = start_building(slow_folder, home)
    first.send_signal(signal.SIGSTOP)  # the build held in progress (a fast machine could finish it before we ask)
    threading.Thread(target=resume_once_waited_for, args=(first,), daemon=True).start()  # ... until we wait for it
    assert clear(home / "folders") == (0, 0) and list(home.glob("folders/*.part-*"))
    data = load_dataset(DataConfig(name=f"folder:{slow_folder}", image_size=64, data_dir=str(home),
                                   max_in_memory_gb=1e-9))
    assert "waiting for another process that is decoding" in capsys.readouterr().out
    assert first.wait(timeout=SLOW) == 0
    assert any("read from the decoded copy" in note for note in data.notes)
    assert len(entries(home / "folders")) == 1 and not list(home.glob("folders/*.part-*"))


def test_a_killed_first_decode_leaves_nothing_that_is_read(slow_folder, tmp_path, cli):
    """SIGKILL while the folder is being decoded: the half-written build is never read, `vaekit cache clear` removes
    it (its lock died with its process), and the next run decodes again."""
    home = tmp_path / "cache"  # the cli fixture's data directory
    proc = start_building(slow_folder, home)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert entries(home / "folders") == [] and list(home.glob("folders/*.part-*"))
    assert "no decoded folders" in cli("cache", "list").stdout
    assert "removed 1 decoded folder" in cli("cache", "clear").stdout
    assert not list((home / "folders").iterdir())

    data = load_dataset(DataConfig(name=f"folder:{slow_folder}", image_size=64, data_dir=str(home),
                                   max_in_memory_gb=1e-9))
    assert len(data.train) + len(data.val) + len(data.test) == 1500
    listed = cli("cache", "list").stdout
    assert str(slow_folder.resolve()) in listed and "1,500 images" in listed
    (home / "classifiers").mkdir()
    (home / "classifiers" / "keep.txt").write_text("not the cache's")
    assert "removed 1 decoded folder" in cli("cache", "clear").stdout
    assert not list((home / "folders").iterdir()) and (home / "classifiers" / "keep.txt").is_file()


def test_cache_list_prints_nothing_raw_from_a_tampered_description(folder, tmp_path, cli):
    home = tmp_path / "cache"
    load_dataset(config(folder, tmp_path, data_dir=str(home)))
    (entry, meta), = entries(home / "folders")
    (entry / "cache.json").write_text(json.dumps({**meta, "source": "\x1b[2J\x1b]0;owned\x07/pets",
                                                   "created": "\x1b[31mred"}))
    listed = cli("cache", "list").stdout
    assert "\x1b" not in listed and "\x07" not in listed and "/pets" in listed
