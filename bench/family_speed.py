"""The family's costs on this machine: an epoch of each preset, and the N-way `vaekit compare`.

    python bench/family_speed.py [--rounds 3] [--skip-compare] [--out bench/RESULTS-family.md]

Epochs: each cell is one `vaekit train --model M --epochs 2` (Fashion-MNIST, the default MLP 784-400-20, batch 128,
no ex-post samplers) in a fresh process, the presets in an order rotating from round to round; the time of the second
epoch as vaekit logs it, and its ratio to the VAE's of the same round.

Compare: `vaekit compare --models ae,vae,iwae,vamp,wae,rae` at its defaults (10 epochs, K = 1000, 10,000 samples per
sampler), then with --quick, each once in a fresh process, wall time of the whole command; the feature classifier is
trained (and cached) by a first call that is not timed. The default run's N-way table goes into the results.
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
PRESETS = ["ae", "vae", "beta-vae", "iwae", "vamp", "wae", "rae"]
FAMILY = "ae,vae,iwae,vamp,wae,rae"


def vaekit(*args: str, env: dict | None = None) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "vaekit", *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"vaekit {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def epoch_seconds(model: str, out: Path) -> float:
    vaekit("train", "--model", model, "--epochs", "2", "--gmm-components", "0", "--two-stage-epochs", "0", "--quiet",
           "--device", "cpu", "--out", str(out))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return rows[-1]["seconds"]


def stats(values: list[float], digits: int = 2) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def epochs_table(rounds: int, folder: Path) -> list[str]:
    seconds: dict[str, list[float]] = {m: [] for m in PRESETS}
    ratios: dict[str, list[float]] = {m: [] for m in PRESETS}
    for r in range(rounds):
        order = PRESETS[r % len(PRESETS):] + PRESETS[:r % len(PRESETS)]
        got = {m: epoch_seconds(m, folder / f"{m}-{r}") for m in order}
        for m in PRESETS:
            seconds[m].append(got[m])
            ratios[m].append(got[m] / got["vae"])
        print(f"round {r + 1}: " + ", ".join(f"{m} {got[m]:.1f}s" for m in PRESETS), flush=True)
    lines = ["| preset | epoch seconds | / VAE epoch (same round) |", "| --- | --- | --- |"]
    lines += [f"| {m} | {stats(seconds[m])} | {stats(ratios[m])} |" for m in PRESETS]
    return lines


def nway_table(metrics: dict) -> list[str]:
    """The compare's numbers, one row per model and sampler."""
    lines = ["| model | recon | training bound | IS-NLL | active | train s | sampler | Frechet | confidence |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    for name in metrics["models"]:
        r = metrics[name]
        bound = r["test"]["loss"] if "nelbo" in r["test"] else None
        for sampler, s in r["samples"].items():
            lines.append(f"| {name} | {fmt(r['test']['recon'])} | {fmt(bound)} | "
                         f"{fmt(r.get('is_nll', {}).get('nll'))} | {r['latent']['active_units']} | "
                         f"{r['training_seconds']:.0f} | {sampler} | {s['frechet']:.2f} | {s['confidence']:.3f} |")
    floor = metrics["real_floor"]
    lines.append(f"| real held-out | | | | | | | {floor['frechet']:.2f} | {floor['confidence']:.3f} |")
    return lines


def compare_runs(folder: Path, env: dict) -> tuple[list[str], dict]:
    vaekit("compare", "--data", "fashion-mnist", "--quick", "--epochs", "1", "--quiet", "--out", str(folder / "warm"),
           env=env)  # trains and caches the feature classifier, downloads nothing else
    default = vaekit("compare", "--models", FAMILY, "--quiet", "--out", str(folder / "default"), env=env)
    quick = vaekit("compare", "--models", FAMILY, "--quick", "--quiet", "--out", str(folder / "quick"), env=env)
    two = vaekit("compare", "--quick", "--quiet", "--out", str(folder / "two"), env=env)
    metrics = json.loads((folder / "default" / "metrics.json").read_text())
    lines = ["| command | wall seconds |", "| --- | --- |",
             f"| `vaekit compare --models {FAMILY}` | {default:.0f} |",
             f"| `vaekit compare --models {FAMILY} --quick` | {quick:.0f} |",
             f"| `vaekit compare --quick` (ae, vae) | {two:.0f} |"]
    return lines, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-compare", action="store_true")
    parser.add_argument("--out", default=str(HERE / "RESULTS-family.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = {**os.environ, "VAEKIT_DATA": os.environ.get("VAEKIT_DATA", str(folder / "data"))}
        lines = ["# The family: epoch costs and the N-way compare", "",
                 f"{time.strftime('%Y-%m-%d %H:%M')}, {platform.processor() or platform.machine()}, "
                 f"{os.cpu_count()} CPUs, torch {__import__('torch').__version__}.", "",
                 f"## One epoch per preset ({args.rounds} rounds, fresh processes)", "",
                 *epochs_table(args.rounds, folder)]
        if not args.skip_compare:
            timing, metrics = compare_runs(folder, env)
            lines += ["", "## `vaekit compare`, six models", "", *timing, "",
                      "## The default run's table (10 epochs, K = 1000, 10,000 samples per sampler)", "",
                      *nway_table(metrics)]
            (Path(args.out).with_suffix(".json")).write_text(json.dumps(metrics, indent=1))
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
