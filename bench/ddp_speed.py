"""What DDP buys on this machine: `torchrun --nproc_per_node=N` against one process, same data and network.

    python bench/ddp_speed.py [--rounds 3] [--epochs 2] [--nproc 2] [--out bench/RESULTS-ddp.md]

Each cell is one `vaekit train` (Fashion-MNIST, the default MLP, `--gmm-components 0 --quiet`) in fresh processes,
contenders in an order rotating from round to round; images/s of the last epoch as vaekit logs it (summed over the
ranks: the images the whole job took per second of its loop).

  one process      batch 128 (PyTorch uses all cores for each operation)
  one process 256  batch 256 (the global batch of the DDP job below)
  torchrun         N processes, batch 128 each (global batch 128 N); torchrun gives each OMP_NUM_THREADS=1
  torchrun same    N processes, batch 128 / N each: the same global batch, and so the same updates, as one process
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

HERE = Path(__file__).resolve().parent


def contenders(nproc: int) -> dict[str, list[str]]:
    vaekit = ["-m", "vaekit", "train"]
    torchrun = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "vaekit", "train"]
    return {"one process": [*vaekit, "--batch-size", "128"],
            "one process 256": [*vaekit, "--batch-size", str(128 * nproc)],
            "torchrun": [*torchrun, "--batch-size", "128"],
            "torchrun same": [*torchrun, "--batch-size", str(128 // nproc)]}


def run(argv: list[str], out: Path, epochs: int) -> dict:
    cmd = [sys.executable, *argv, "--epochs", str(epochs), "--gmm-components", "0", "--quiet", "--device", "cpu",
           "--out", str(out)]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"images_per_s": rows[-1]["images_per_s"], "wall": time.perf_counter() - started,
            "val_loss": rows[-1]["val_loss"]}


def stats(values: list[float], digits: int = 2) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "RESULTS-ddp.md"))
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M")
    cells = contenders(args.nproc)
    names = list(cells)
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            rounds.append({name: run(cells[name], Path(tmp) / f"{r}-{name.replace(' ', '-')}", args.epochs)
                           for name in order})
            print(f"round {r + 1}: " + ", ".join(f"{n} {v['images_per_s']:,.0f} img/s" for n, v in rounds[-1].items()),
                  flush=True)
    import torch

    lines = [
        "# DDP on this machine: torchrun against one process",
        "",
        f"Command: `python bench/ddp_speed.py --rounds {args.rounds} --epochs {args.epochs} --nproc {args.nproc}` "
        f"(started {started}). Fashion-MNIST (48,000 training images), the default MLP (784-400-20), one fresh "
        "`vaekit train` per cell; cells: median (min-max) over the rounds, ratios within a round.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, Python "
        f"{platform.python_version()}, gloo on the CPU.",
        "",
        f"| job | global batch | images/s (epoch {args.epochs}) | / one process | whole command, s | val loss |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    batch = {"one process": 128, "one process 256": 128 * args.nproc, "torchrun": 128 * args.nproc,
             "torchrun same": 128 // args.nproc * args.nproc}
    for name in names:
        series = [r[name]["images_per_s"] for r in rounds]
        ratio = [r[name]["images_per_s"] / r["one process"]["images_per_s"] for r in rounds]
        wall, loss = ([r[name][key] for r in rounds] for key in ("wall", "val_loss"))
        lines.append(f"| {name} | {batch[name]} | {stats(series, 0)} | {stats(ratio)} | {stats(wall, 1)} | "
                     f"{stats(loss, 1)} |")
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
