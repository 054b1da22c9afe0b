"""Training speed of the presets, before and after a change: two commits side by side on the same machine.

    python bench/ab_speed.py [--before 7b3ac91] [--after HEAD] [--rounds 5] [--archs mlp conv] [--out FILE]

Each commit is checked out once into a temporary folder (`git worktree`) and run from there. A round runs one fresh
process per commit, in an order that alternates from round to round; each process times the same real Fashion-MNIST
batches (batch 128, 40 steps after 10 warm-up steps) through every preset, interleaved, and prints the median step
time of each. The ratio after / before is taken within a round (the machine's drift falls on both), and its median
over the rounds is the figure: 1.00 is no change, above 1 slower.

Written for issue 29 (the latent contract: latents as modules, one sampler registry, typed results), whose promise
is that the existing presets do not get slower.
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
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PRESETS = ["ae", "vae", "beta-vae", "iwae", "vamp", "wae", "rae"]

WORKER = r"""
import json, statistics, sys, time
import torch
from vaekit.config import DataConfig, ModelConfig, RunConfig
from vaekit.data import Batches, evaluation_view, load_dataset
from vaekit.models import build_model
from vaekit.training.step import make_optimizer, train_step

arch, presets, warm, steps = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(int(sys.argv[5]))
data = evaluation_view(load_dataset(DataConfig()), DataConfig())
batches = [x for (x, _), _ in zip(Batches(data.train, 128, shuffle=True, seed=0).epoch(0), range(warm + steps))]
runs = {}
for kind in presets:
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind=kind, arch=arch, image_shape=data.shape))
    runs[kind] = (model, make_optimizer(model, RunConfig()))
times = {k: [] for k in presets}
for i, x in enumerate(batches):
    for kind in presets[i % len(presets):] + presets[:i % len(presets)]:
        model, optimizer = runs[kind]
        start = time.perf_counter()
        train_step(model, optimizer, x)
        if i >= warm:
            times[kind].append(time.perf_counter() - start)
print(json.dumps({k: statistics.median(v) for k, v in times.items()}))
"""


def worktree(ref: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(where), ref], check=True,
                   capture_output=True)
    return where


def step_times(tree: Path, arch: str, args: argparse.Namespace) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    done = subprocess.run([sys.executable, "-c", WORKER, arch, ",".join(PRESETS), "10", str(args.steps),
                           str(args.threads)], capture_output=True, text=True, env=env, cwd=tree)
    if done.returncode != 0:
        raise SystemExit(f"{tree.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def commit(ref: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", ref], check=True, capture_output=True,
                          text=True).stdout.strip()


def stats(values: list[float], digits: int = 2) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="7b3ac91", help="the commit before the change (default: before issue 29)")
    parser.add_argument("--after", default="HEAD")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--archs", nargs="+", default=["mlp", "conv"])
    parser.add_argument("--out", default=str(HERE / "RESULTS-ab.md"))
    args = parser.parse_args()
    refs = {"before": commit(args.before), "after": commit(args.after)}
    lines = [f"# Training step, {refs['before']} (before) against {refs['after']} (after)", "",
             f"`python bench/ab_speed.py --before {args.before} --after {args.after} --rounds {args.rounds}`; "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} threads; "
             "Fashion-MNIST, batch 128, median step of "
             f"{args.steps} per process; medians (min-max) over the rounds.", ""]
    with tempfile.TemporaryDirectory() as tmp:
        trees = {side: worktree(ref, Path(tmp) / side) for side, ref in refs.items()}
        try:
            for arch in args.archs:
                ms = {side: {k: [] for k in PRESETS} for side in refs}
                for r in range(args.rounds):
                    for side in (["before", "after"] if r % 2 == 0 else ["after", "before"]):
                        for k, t in step_times(trees[side], arch, args).items():
                            ms[side][k].append(1000 * t)
                    print(f"{arch} round {r + 1}: " + ", ".join(
                        f"{k} {ms['after'][k][-1] / ms['before'][k][-1]:.2f}" for k in PRESETS), flush=True)
                lines += [f"## {arch}", "", "| preset | ms per step, before | after | after / before (same round) |",
                          "| --- | --- | --- | --- |"]
                lines += [f"| {k} | {stats(ms['before'][k])} | {stats(ms['after'][k])} | "
                          f"{stats([a / b for a, b in zip(ms['after'][k], ms['before'][k])])} |" for k in PRESETS]
                lines.append("")
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                               capture_output=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
