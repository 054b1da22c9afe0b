"""Hostile input: every value-taking flag of every command fed nonsense, and files built to exhaust memory or
time (compressed and declared-size bombs, alias bombs, pixel bombs, terabyte networks). Each must end in one
line on stderr and exit status 2, quickly, in bounded memory, with nothing of the user's changed."""

import argparse
import gzip
import json
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import run_many

from vaekit import RunConfig
from vaekit.cli import build_parser
from vaekit.config import DataConfig, TrainConfig
from vaekit.data.idx import write_idx
from vaekit.data.sources import IDX_FILES
from vaekit.training import train

BOMB_RSS = 1 << 30  # peak resident memory allowed while refusing a bomb
BOMB_SECONDS = 10

# Each command with arguments that make it fail fast on a missing input once its flags are accepted.
BASES = {"train": ["--data", "npz:missing.npz", "--out", "o"], "compare": ["--data", "npz:missing.npz", "--out", "o"],
         "sample": ["missing-run"], "reconstruct": ["missing-run"], "encode": ["missing-run"],
         "decode": ["missing-run", "z.npy"], "evaluate": ["missing-run"], "serve": ["missing-run"],
         "info": ["missing-run"], "cache": ["list"], "score": ["missing-run"], "ood": ["missing-run", "--ood", "noise"],
         "oneclass": ["--data", "npz:missing.npz", "--out", "o"], "export": ["missing-run", "--out", "o"],
         "defects": ["--data", "npz:missing.npz", "--out", "o"], "inspect": ["missing-run"]}
VALUES = ["nan", "inf", "-inf", "0", "-1", "1e400", "99999999999999999999999", "", "\x00", "x" * 5000]


def value_flags() -> dict[str, dict[str, bool]]:
    """Every option that takes a value, per command, read from the parser itself, and whether the parser
    checks its value (a number with a range, or a choice of names) rather than a later step (paths)."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {name: {a.option_strings[-1]: a.choices is not None or a.type not in (None, str) for a in parser._actions
                   if a.option_strings and a.nargs is None
                   and not isinstance(a, (argparse._StoreConstAction, argparse._HelpAction, argparse._VersionAction))}
            for name, parser in sub.choices.items()}


def test_the_generated_cases_cover_every_command_and_many_flags():
    flags = value_flags()
    assert set(flags) == set(BASES)
    assert {"--lr", "--beta", "--image-size", "--seed", "--hidden", "--max-in-memory-gb"} <= set(flags["train"])
    assert {"-n", "--batch-size", "--seed"} <= set(flags["sample"]) and "-k" in flags["evaluate"]
    assert all(flags["train"][f] for f in ("--lr", "--hidden", "--model", "--schedule", "--resize"))


def test_every_flag_of_every_command_refuses_nonsense_in_one_line(tmp_path):
    flags = value_flags()
    argvs = [[cmd, *BASES[cmd], flag, value] for cmd in BASES for flag in flags[cmd] for value in VALUES]
    results = run_many([{"argv": argv, "cwd": str(tmp_path), "env": {"VAEKIT_DATA": str(tmp_path / "cache")}}
                        for argv in argvs])
    bad = []
    for argv, r in zip(argvs, results):
        lines = r["stderr"].strip().splitlines()
        ok = r["status"] == 2 and len(lines) == 1 and lines[0].startswith("vaekit: error: ") \
            and len(lines[0]) < 600 and r["seconds"] < 10
        if argv[-1] in ("nan", "inf") and flags[argv[0]][argv[-2]]:
            ok = ok and f"argument {argv[-2]}" in lines[0]  # refused where the flag is declared, naming it
        if not ok:
            bad.append((argv[:1] + [argv[-2], argv[-1][:20]], r["status"], r["stderr"][-300:]))
    assert not bad, f"{len(bad)} of {len(argvs)} cases: {bad[:5]}"
    assert not (tmp_path / "o").exists()  # no output folder for a run that never started


# --- bomb files --------------------------------------------------------------------------------------------


def gzip_bomb(path: Path, header: bytes, gigabytes: float) -> None:
    """An IDX .gz: the header, then gigabytes of zeros as concatenated gzip members (a few MB on disk)."""
    block = gzip.compress(bytes(64 << 20), compresslevel=1)
    with open(path, "wb") as f:
        f.write(gzip.compress(header))
        for _ in range(int(gigabytes * 16)):
            f.write(block)


def mnist_cache(root: Path, images_file) -> None:
    folder = root / "cache" / "mnist"
    folder.mkdir(parents=True)
    small = [np.zeros((10, 28, 28), np.uint8), np.zeros(10, np.uint8)] * 2
    for stem, array in zip(IDX_FILES, small):
        write_idx(folder / f"{stem}.gz", array)
    images_file(folder / f"{IDX_FILES[0]}.gz")


def npy_header(shape, dtype="|u1") -> bytes:
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def zip_bomb(path: Path, megabytes: int) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z, z.open("x.npy", "w", force_zip64=True) as f:
        f.write(npy_header((megabytes * 1024, 32, 32)))
        for _ in range(megabytes):
            f.write(bytes(1 << 20))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def pixel_bomb(folder: Path) -> None:
    """A 100,000 x 100,000 PNG header (40 bytes of pixels) among ordinary images."""
    folder.mkdir()
    for i in range(12):
        (folder / f"{i}.pgm").write_bytes(b"P5 8 8 255\n" + bytes([i * 20]) * 64)
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    (folder / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
                                      + png_chunk(b"IDAT", zlib.compress(bytes(40))) + png_chunk(b"IEND", b""))


YAML_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [{', '.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    train(RunConfig(data=DataConfig(name="digits"), train=TrainConfig(epochs=1, samples=4)), root / "run", quiet=True)
    return root / "run"


def terabyte_config(root: Path, run: Path) -> None:
    shutil.copytree(run, root / "run")
    ckpt = root / "run" / "checkpoints" / (root / "run" / "checkpoints" / "best").read_text().strip()
    config = json.loads((ckpt / "config.json").read_text())
    config["model"].update(image_shape=[3, 4096, 4096], hidden=[65536, 65536])
    (ckpt / "config.json").write_text(json.dumps(config))


TRAIN = ["train", "--epochs", "1", "--out", "new"]
BOMBS = {
    "IDX .gz declaring 2^31 images": (lambda r, t: mnist_cache(r, lambda f: f.write_bytes(gzip.compress(
        b"\x00\x00\x08\x03" + struct.pack(">3I", 2**31, 28, 28)))), TRAIN + ["--data", "mnist", "--no-download"],
        "GiB allowed"),
    "IDX .gz with 6 GB of trailing zeros": (lambda r, t: mnist_cache(r, lambda f: gzip_bomb(
        f, b"\x00\x00\x08\x03" + struct.pack(">3I", 10, 28, 28), 6)), TRAIN + ["--data", "mnist", "--no-download"],
        "has trailing bytes"),
    "IDX .gz honestly declaring 3.9 GB of zeros": (lambda r, t: mnist_cache(r, lambda f: gzip_bomb(
        f, b"\x00\x00\x08\x03" + struct.pack(">3I", 5_000_000, 28, 28), 4)),
        TRAIN + ["--data", "mnist", "--no-download"], "refused as a decompression bomb"),
    ".npy header declaring terabytes": (lambda r, t: (r / "x.npy").write_bytes(
        npy_header((10**12, 28, 28)) + bytes(1000)), TRAIN + ["--data", "npy:x.npy"], "GiB allowed"),
    ".npz zip bomb (300 MB of zeros)": (lambda r, t: zip_bomb(r / "x.npz", 300), TRAIN + ["--data", "npz:x.npz"],
                                        "refused as a decompression bomb"),
    ".npz labels of 10^12": (lambda r, t: np.savez(r / "x.npz", x=np.zeros((30, 8, 8), np.uint8),
                                                   y=np.full(30, 10**12)), TRAIN + ["--data", "npz:x.npz"],
                             "labels must lie in"),
    "YAML alias bomb": (lambda r, t: (r / "c.yaml").write_text(YAML_BOMB), TRAIN + ["--config", "c.yaml"],
                        "alias bomb"),
    "UTF-16 config": (lambda r, t: (r / "c.toml").write_bytes("[train]\nlr = 0.1\n".encode("utf-16")),
                      TRAIN + ["--config", "c.toml"], "not UTF-8 text"),
    "PNG declaring 10^10 pixels in a folder": (lambda r, t: pixel_bomb(r / "imgs"), TRAIN + ["--data", "folder:imgs"],
                                               "decompression bomb"),
    "pixel bomb skipped on request": (lambda r, t: pixel_bomb(r / "imgs"),
                                      TRAIN + ["--data", "folder:imgs", "--skip-bad-images", "--arch", "conv",
                                               "--conv-channels", "8,8,8,8,8,8"], "too small for 6 stride-2"),
    "checkpoint asking for a 10^12-parameter network": (terabyte_config, ["sample", "run"],
                                                        "weights do not match the config"),
    "--image-size 4096 for an MLP": (lambda r, t: pixel_bomb(r / "imgs") or (r / "imgs" / "bomb.png").unlink(),
                                     TRAIN + ["--data", "folder:imgs", "--image-size", "4096", "--arch", "mlp"],
                                     "parameters"),
}


@pytest.fixture(scope="module")
def bomb_results(tiny_run, tmp_path_factory):
    """Every bomb in a folder of its own, all refused in one fresh interpreter (conftest.run_many): the folder,
    its files' times before, and what the command did, with the process's peak memory during it."""
    folders, before = {}, {}
    for i, (case, (setup, _, _)) in enumerate(BOMBS.items()):
        folders[case] = tmp_path_factory.mktemp(f"bomb{i}")
        setup(folders[case], tiny_run)
        before[case] = {p: p.stat().st_mtime_ns for p in folders[case].rglob("*") if p.is_file()}
    results = run_many([{"argv": args, "cwd": str(folders[case]), "env": {"VAEKIT_DATA": str(folders[case] / "cache")}}
                        for case, (_, args, _) in BOMBS.items()])
    return {case: (folders[case], before[case], result) for case, result in zip(BOMBS, results)}


@pytest.mark.parametrize("case", list(BOMBS))
def test_bombs_are_refused_fast_in_bounded_memory(case, bomb_results):
    folder, before, r = bomb_results[case]
    lines = [line for line in r["stderr"].splitlines() if line.strip() and not line.startswith("vaekit: warning")]
    assert r["status"] == 2, r["stderr"][-2000:]
    assert len(lines) == 1 and lines[0].startswith("vaekit: error: ") and BOMBS[case][2] in lines[0], r["stderr"]
    print(f"{case}: refused in {r['seconds']:.2f} s, peak {r['peak_mb']:.0f} MiB")  # shown with -s
    assert r["peak_mb"] * 2**20 < BOMB_RSS and r["seconds"] < BOMB_SECONDS
    assert before == {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}
