"""The family's costs on this machine: an epoch of each preset, and the N-way `vaekit compare`.

    python bench/family_speed.py [--rounds 3] [--skip-compare] [--pythae] [--out bench/RESULTS-family.md]

Epochs: each cell is one `vaekit train --model M --epochs 2` (Fashion-MNIST, the default MLP 784-400-20, batch 128,
no ex-post samplers) in a fresh process, the presets in an order rotating from round to round; the time of the second
epoch as vaekit logs it, and its ratio to the VAE's of the same round.

Steps: the same 40 batches through every preset, interleaved in one process, 15 repeats (the cleaner ratio).

Compare: `vaekit compare --models ae,vae,iwae,vamp,wae,rae` at its defaults (10 epochs, K = 1000, 10,000 samples per
sampler), then with --quick, each once in a fresh process, wall time of the whole command; the feature classifier is
trained (and cached) by a first call that is not timed. The default run's N-way table goes into the results.

--pythae: Pythae 0.1.2's IWAE, VAMP, WAE_MMD and RAE_L2 beside vaekit's iwae, vamp, wae and rae, the same MLP, one
epoch each in fresh processes, rounds interleaved (Pythae in bench/.venv-pythae, made by train_speed.py, through
pythae_ref.py); for IWAE and VAMP the IS-NLL of each library's own trained model with K = 1000 on the first 1000
test images, each library's own estimator.
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


def step_ratios(repeats: int = 15, steps: int = 40) -> list[str]:
    """Training steps of every preset interleaved in one process on the same batches (the default MLP, batch 128,
    real Fashion-MNIST images): the machine's drift falls on all of them alike, so the ratios are cleaner than
    whole epochs in fresh processes."""
    import torch

    from vaekit.config import DataConfig, ModelConfig, RunConfig
    from vaekit.data import Batches, evaluation_view, load_dataset
    from vaekit.models import build_model
    from vaekit.training.step import make_optimizer, train_step

    data = evaluation_view(load_dataset(DataConfig()), DataConfig())
    batches = [x for (x, _), _ in zip(Batches(data.train, 128, shuffle=True, seed=0).epoch(0), range(steps))]
    runs = {}
    for kind in PRESETS:
        torch.manual_seed(0)
        model = build_model(ModelConfig(kind=kind, image_shape=data.shape))
        runs[kind] = (model, make_optimizer(model, RunConfig()))
    times: dict[str, list[float]] = {k: [] for k in PRESETS}
    for r in range(repeats + 1):  # the first pass warms up every preset and is not counted
        for kind in PRESETS[r % len(PRESETS):] + PRESETS[:r % len(PRESETS)]:
            model, optimizer = runs[kind]
            start = time.perf_counter()
            for x in batches:
                train_step(model, optimizer, x)
            if r:
                times[kind].append((time.perf_counter() - start) / len(batches))
    ratios = {k: [a / b for a, b in zip(times[k], times["vae"])] for k in PRESETS}
    lines = ["| preset | ms per step | / VAE step (same repeat) |", "| --- | --- | --- |"]
    return lines + [f"| {k} | {stats([1000 * t for t in times[k]], 1)} | {stats(ratios[k])} |" for k in PRESETS]


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


def pythae_table(rounds: int, folder: Path) -> list[str]:
    import numpy as np

    sys.path.insert(0, str(HERE))
    from train_speed import ensure_pythae, pythae

    from vaekit.config import DataConfig
    from vaekit.data import evaluation_view, load_dataset
    from vaekit.evaluation.evaluate import test_tensor

    ensure_pythae()
    images = folder / "test.npy"
    np.save(images, test_tensor(evaluation_view(load_dataset(DataConfig()), DataConfig()), 1000).numpy())
    rows: dict[str, dict[str, list[float]]] = {}
    for r in range(rounds):
        for name in ("iwae", "vamp", "wae", "rae"):
            out = folder / f"p-{name}-{r}"
            vaekit("train", "--model", name, "--epochs", "1", "--gmm-components", "0", "--two-stage-epochs", "0",
                   "--quiet", "--device", "cpu", "--out", str(out))
            ours = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
            theirs = pythae("family", name, str(images), "1000")
            row = rows.setdefault(name, {})
            row.setdefault("vaekit img/s", []).append(ours["images_per_s"])
            row.setdefault("pythae img/s", []).append(60000 / theirs["seconds"])
            row.setdefault("ratio", []).append(ours["images_per_s"] / (60000 / theirs["seconds"]))
            if "nll" in theirs:
                row.setdefault("vaekit nll", []).append(is_nll(out, images))
                row.setdefault("pythae nll", []).append(theirs["nll"])
            print(f"round {r + 1} {name}: {ours['images_per_s']:.0f} vs {60000 / theirs['seconds']:.0f} img/s "
                  f"{theirs.get('nll', '')}", flush=True)
    lines = ["| model | vaekit images/s | Pythae images/s | vaekit / Pythae speed | IS-NLL vaekit | IS-NLL Pythae |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, row in rows.items():
        nll = [stats(row[k]) if k in row else "-" for k in ("vaekit nll", "pythae nll")]
        lines.append(f"| {name} | {stats(row['vaekit img/s'], 0)} | {stats(row['pythae img/s'], 0)} | "
                     f"{stats(row['ratio'])} | {nll[0]} | {nll[1]} |")
    return lines


def is_nll(run: Path, images: Path) -> float:
    code = ("import numpy, torch; from vaekit import load; "
            "from vaekit.evaluation.metrics import importance_sampled_nll; "
            f"m = load({str(run)!r}).eval(); x = torch.from_numpy(numpy.load({str(images)!r})); torch.manual_seed(0);"
            "print(torch.cat([importance_sampled_nll(m, b, 1000) for b in x.split(100)]).mean().item())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-compare", action="store_true")
    parser.add_argument("--pythae", action="store_true", help="also Pythae 0.1.2's IWAE, VAMP, WAE and RAE")
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
        lines += ["", "## One training step per preset, interleaved in one process (15 repeats of 40 steps)", "",
                  *step_ratios()]
        save(args.out, lines)  # each section as soon as it is measured: a later failure keeps the earlier ones
        if not args.skip_compare:
            timing, metrics = compare_runs(folder, env)
            lines += ["", "## `vaekit compare`, six models", "", *timing, "",
                      "## The default run's table (10 epochs, K = 1000, 10,000 samples per sampler)", "",
                      *nway_table(metrics)]
            save(args.out, lines)
            (Path(args.out).with_suffix(".json")).write_text(json.dumps(metrics, indent=1))
        if args.pythae:
            lines += ["", f"## Beside Pythae 0.1.2 ({args.rounds} rounds, one epoch each, fresh processes)", "",
                      *pythae_table(args.rounds, folder)]
            save(args.out, lines)
    print("\n".join(lines))


def save(out: str, lines: list[str]) -> None:
    Path(out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
