"""Image folders at in-memory speed: the same images from an .npz, from a folder held in memory, from a folder
streamed (decoded again every epoch) and from a folder decoded once into the disk cache.

    python bench/folder_speed.py [--images 20000] [--epochs 2] [--rounds 3] [--device cpu] [--out FILE]

Writes the first N Fashion-MNIST training images as PNG files into a temporary folder (and the same images as an
.npz), then runs `vaekit train --epochs E --quiet` (the default MLP) once per contender and round, each in a fresh
process, in an order that rotates from round to round:

  npz       the .npz, in memory
  memory    the folder, decoded into memory (it fits under the default --max-in-memory-gb)
  streamed  the folder with --max-in-memory-gb 0.001 --no-folder-cache: each image decoded again every epoch
  build     the folder with --max-in-memory-gb 0.001 and an empty cache: decoded once into it, then trained
  cached    the same, the cache now built: read back batch by batch

Reported: images/s of the last epoch (the training loop, from metrics.jsonl; ratios to `npz` taken within a round),
the wall time of the whole command, the peak RSS of the main process (VmHWM; decode workers are processes of their
own), the cache's size and build time. A second part trains once on the folder at --image-size 64 in RGB (246 MB
of pixels, held in memory or not) to show what the cache keeps out of the process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CONTENDERS = ("npz", "memory", "streamed", "build", "cached")


def write_folder(root: Path, n: int) -> tuple[Path, Path]:
    from PIL import Image

    from vaekit.config import DataConfig
    from vaekit.data import load_dataset

    data = load_dataset(DataConfig(name="fashion-mnist"))
    images, labels = data.train.images[:n, 0].numpy(), data.train.labels[:n].numpy()
    folder = root / "fashion-png"
    for i, (image, label) in enumerate(zip(images, labels)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / str(label) / f"{i:06d}.png")
    npz = root / "fashion.npz"
    np.savez(npz, images=images[:, None], labels=labels)
    return folder, npz


def flags(name: str, folder: Path, npz: Path) -> list[str]:
    small = ["--max-in-memory-gb", "0.001"]
    return {"npz": ["--data", f"npz:{npz}"], "memory": ["--data", f"folder:{folder}"],
            "streamed": ["--data", f"folder:{folder}", *small, "--no-folder-cache"],
            "build": ["--data", f"folder:{folder}", *small], "cached": ["--data", f"folder:{folder}", *small]}[name]


def train(argv: list[str], out: Path, env: dict) -> dict:
    """One `vaekit train` in a fresh process; its last epoch's images/s, wall time and peak RSS."""
    cmd = [sys.executable, __file__, "--worker", "train", *argv, "--out", str(out), "--quiet"]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0 or json.loads(done.stdout.splitlines()[-1])["status"] != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"images_per_s": rows[-1]["images_per_s"], "wall": wall, **json.loads(done.stdout.splitlines()[-1])}


def worker(argv: list[str]) -> None:
    """Run the command in this process, then print its peak resident memory."""
    from vaekit.cli import main

    with open(os.devnull, "w") as quiet:
        stdout, sys.stdout = sys.stdout, quiet
        status = main(argv)
        sys.stdout = stdout
    hwm = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM"))
    print(json.dumps({"status": status, "rss_mb": int(hwm.split()[1]) / 1024}))


def interleaved(home: Path, rounds: int, device: str) -> dict[str, list[float]]:
    """The training loop alone, in one process, epochs alternating between the images in memory and the same
    images read from the cache (the 28x28 entry): train_step on the default MLP, images/s per epoch."""
    import torch

    from vaekit.config import DataConfig, ModelConfig, RunConfig
    from vaekit.data import Batches
    from vaekit.data.sets import DiskImages, TensorImages
    from vaekit.models import build_model
    from vaekit.training.step import make_optimizer, train_step

    (entry,) = [p.parent for p in (home / "folders").glob("*/cache.json") if json.loads(p.read_text())["shape"]
                == [1, 28, 28]]
    disk = DiskImages(entry / "images.u8", (1, 28, 28), torch.arange(len(np.load(entry / "keep.npy"))))
    sets = {"memory": TensorImages(disk.read(torch.arange(len(disk)))), "cache": disk}
    model = build_model(ModelConfig(image_shape=(1, 28, 28))).to(device)
    optimizer = make_optimizer(model, RunConfig(data=DataConfig(name="digits")))
    result: dict[str, list[float]] = {name: [] for name in sets}
    for r in range(rounds):
        for name in (list(sets) if r % 2 == 0 else list(sets)[::-1]):
            batches = Batches(sets[name], 128, device, shuffle=True, seed=r)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            started = time.perf_counter()
            for x in batches.epoch(r):
                train_step(model, optimizer, x)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            result[name].append(len(disk) / (time.perf_counter() - started))
    return result


def cache_meta(home: Path) -> dict:
    (meta,) = [json.loads(p.read_text()) for p in (home / "folders").glob("*/cache.json")]  # right after a clear
    return meta


def stats(values: list[float], digits: int = 2) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ab-rounds", type=int, default=6, help="rounds of the in-process comparison")
    parser.add_argument("--out", default=str(HERE / "RESULTS-folders.md"))
    if sys.argv[1:2] == ["--worker"]:
        return worker(sys.argv[2:])
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        folder, npz = write_folder(root, args.images)
        print(f"wrote {args.images} PNGs in {time.perf_counter() - t:.1f} s", flush=True)
        home = root / "home"
        env = {**os.environ, "VAEKIT_DATA": str(home)}
        common = ["--epochs", str(args.epochs), "--device", args.device, "--gmm-components", "0"]
        rounds, builds = [], []
        for r in range(args.rounds):
            order = CONTENDERS[r % len(CONTENDERS):] + CONTENDERS[:r % len(CONTENDERS)]
            order = [n for n in order if n != "cached"]
            order.insert(order.index("build") + 1, "cached")  # the cache is read right after it was built
            results = {}
            for name in order:
                if name == "build":
                    subprocess.run([sys.executable, "-m", "vaekit", "cache", "clear"], env=env, check=True,
                                   capture_output=True)
                results[name] = train([*common, *flags(name, folder, npz)], root / f"run-{r}-{name}", env)
                if name == "build":
                    builds.append(cache_meta(home))
            rounds.append(results)
            print(f"round {r + 1}: " + ", ".join(f"{n} {v['images_per_s']:,.0f} img/s {v['wall']:.1f} s "
                                                 f"{v['rss_mb']:.0f} MB" for n, v in results.items()), flush=True)
        memory = {}
        for name in ("memory", "build", "cached"):  # bigger images: what the cache keeps out of the process
            argv = ["--epochs", "1", "--device", args.device, "--gmm-components", "0", "--image-size", "64",
                    "--arch", "mlp", "--image-channels", "3", *flags(name, folder, npz)]
            memory[name] = train(argv, root / f"run-64-{name}", env)
            print(f"64x64 {name}: {memory[name]}", flush=True)
        metas = [json.loads(p.read_text()) for p in (home / "folders").glob("*/cache.json")]
        big = next((m for m in metas if m["shape"][-1] == 64), None)
        loop = interleaved(home, args.ab_rounds, args.device)
    text = report(args, rounds, builds, memory, big, loop, started)
    Path(args.out).write_text(text)
    print(text)


def model_mb(shape: list[int]) -> float:
    from vaekit.config import ModelConfig
    from vaekit.models import build_model

    model = build_model(ModelConfig(image_shape=tuple(shape), arch="mlp"))
    return 4 * 4 * sum(p.numel() for p in model.parameters()) / 2**20


def report(args, rounds: list[dict], builds: list[dict], memory: dict, big: dict | None, loop: dict,
           started: str) -> str:
    def series(name: str, key: str = "images_per_s") -> list[float]:
        return [r[name][key] for r in rounds]

    import torch

    lines = [
        "# Image folders: in memory, streamed, and decoded once into the cache",
        "",
        f"Command: `python bench/folder_speed.py --images {args.images} --epochs {args.epochs} --rounds {args.rounds} "
        f"--device {args.device}` (started {started}). {args.images:,} Fashion-MNIST training images written as PNG "
        "files (one folder per class) and as an .npz; `vaekit train` with the default MLP, batch 128, in a fresh "
        "process per cell. Cells: median (min-max) over the rounds.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, Python "
        f"{platform.python_version()}, device {args.device}.",
        "",
        f"| data | images/s (epoch {args.epochs}) | / npz | whole command, s | peak RSS, MB |",
        "| --- | --- | --- | --- | --- |",
    ]
    labels = {"npz": ".npz in memory", "memory": "folder, decoded into memory", "streamed": "folder streamed "
              "(`--no-folder-cache`)", "build": "folder, first run: decode into the cache, then train",
              "cached": "folder, read from the cache"}
    for name in CONTENDERS:
        ratio = stats([a / b for a, b in zip(series(name), series("npz"))])
        lines.append(f"| {labels[name]} | {stats(series(name), 0)} | {ratio} | {stats(series(name, 'wall'), 1)} | "
                     f"{stats(series(name, 'rss_mb'), 0)} |")
    seconds = [b["seconds"] for b in builds]
    lines += ["", f"The cache: {builds[0]['bytes'] / 2**20:,.1f} MiB for {builds[0]['count']:,} images, built in "
              f"{stats(seconds, 1)} s (the default 2 decode workers)."]
    a, b = loop["cache"], loop["memory"]
    lines += ["", f"The training loop alone, in one process, {len(a)} epochs of each alternating (the same 28x28 "
              "images in memory and read from the cache; no process start, data loading or validation in the time): "
              f"{stats(b, 0)} images/s from memory, {stats(a, 0)} from the cache; cache / memory "
              f"{stats([x / y for x, y in zip(a, b)])}."]
    m, built, c = memory["memory"], memory["build"], memory["cached"]
    size = f"{big['bytes'] / 2**20:,.0f} MiB" if big else "?"
    lines += ["", f"At --image-size 64 --image-channels 3 ({size} of decoded pixels, one epoch, the MLP then has "
              f"{big and model_mb(big['shape']):.0f} MB of weights, gradients and Adam moments): peak RSS "
              f"{m['rss_mb']:.0f} MB held in memory; {built['rss_mb']:.0f} MB decoding into the cache and training; "
              f"{c['rss_mb']:.0f} MB read from the cache (`--max-in-memory-gb 0.001`). Images/s: "
              f"{m['images_per_s']:,.0f}, {built['images_per_s']:,.0f} and {c['images_per_s']:,.0f}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
