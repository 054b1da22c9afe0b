"""Training and evaluation speed: vaekit against the plain PyTorch loop and Pythae 0.1.2, interleaved.

    python bench/train_speed.py [--rounds 3] [--out bench/RESULTS.md]

Pythae runs in its own virtual environment, made on first use (bench/.venv-pythae: torch==2.13.0 and
pythae==0.1.2 from PyPI), through bench/pythae_ref.py.

Same network (the pytorch/examples MLP 784-400-20), data (Fashion-MNIST, the 60,000 training images),
batch 128 and Adam 1e-3. "plain" is the hand-written loop of pytorch/examples (float images in memory,
sigmoid + BCE summed, default Adam, loss.item() per step); "vaekit" is `vaekit.training.train` itself, whose
epoch time is the one it writes to metrics.jsonl (the loop alone, not validation or checkpoints). The
float32 GEMM rate of this machine is measured in the same run, so the report states the fraction of it
that each loop reaches.
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
import torch
import torch.nn.functional as F
from torch import nn

from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaekit.data import Batches, Dataset, load_dataset
from vaekit.evaluation import importance_sampled_nll
from vaekit.models import VAE
from vaekit.training import train

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-pythae"
PYTHAE = [str(VENV / "bin" / "python"), str(HERE / "pythae_ref.py")]
BATCH, LATENT, HIDDEN, PIXELS = 128, 20, 400, 784


class PlainVAE(nn.Module):
    """pytorch/examples vae/main.py, as written there."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
        self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    def forward(self, x):
        h1 = F.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(h1), self.fc22(h1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


def plain_epoch(images: torch.Tensor, seed: int) -> float:
    torch.manual_seed(seed)
    model = PlainVAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    perm = torch.randperm(len(images))
    start = time.perf_counter()
    total = 0.0
    for i in range(0, len(images), BATCH):
        x = images[perm[i:i + BATCH]]
        optimizer.zero_grad()
        recon, mu, logvar = model(x)
        bce = F.binary_cross_entropy(recon, x.view(-1, 784), reduction="sum")
        kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        loss = bce + kld
        loss.backward()
        total += loss.item()
        optimizer.step()
    return time.perf_counter() - start


def vaekit_run(seed: int, epochs: int = 1, compile: bool = False) -> RunConfig:
    return RunConfig(model=ModelConfig(kind="vae", arch="mlp", hidden=(HIDDEN,), latent_dim=LATENT),
                     data=DataConfig(name="fashion-mnist"),
                     train=TrainConfig(epochs=epochs, batch_size=BATCH, lr=1e-3, seed=seed, samples=1, compile=compile))


def vaekit_epochs(data: Dataset, seed: int, epochs: int = 1, compile: bool = False,
                  keep: Path | None = None) -> list[float]:
    """Seconds of each epoch's loop, as `vaekit.training.train` measures and logs them."""
    torch._dynamo.reset()  # compile afresh each time: no code cached from an earlier round
    with tempfile.TemporaryDirectory() as out:
        run_dir = keep or Path(out) / "run"
        train(vaekit_run(seed, epochs, compile), run_dir, quiet=True, dataset=data)
        rows = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(r)["seconds"] for r in rows]


PEAK_RSS = """
import json, resource, sys, tempfile
from pathlib import Path
sys.path.insert(0, {here!r})
from train_speed import full_training_set, vaekit_run
from vaekit.training import train
with tempfile.TemporaryDirectory() as out:
    train(vaekit_run(0), Path(out) / "run", quiet=True, dataset=full_training_set())
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def vaekit_peak_rss_mb() -> float:
    """Peak RSS of a fresh process that loads the data and trains one epoch (what a user's run costs)."""
    out = subprocess.run([sys.executable, "-c", PEAK_RSS.format(here=str(HERE))], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def ensure_pythae() -> None:
    if not (VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run(pip + ["torch==2.13.0"], check=True)  # the CPU wheel on disk, never a CUDA download
        subprocess.run(pip + ["pythae==0.1.2"], check=True)


def pythae(*args: str) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "out.json"
        subprocess.run(PYTHAE + [*args, str(out)], check=True, capture_output=True)
        return json.loads(out.read_text())


def full_training_set() -> Dataset:
    """All 60,000 Fashion-MNIST training images as the training split, as the references use them."""
    fm = load_dataset(DataConfig(name="fashion-mnist"))
    full = fm.train.__class__(torch.cat([fm.train.images, fm.val.images]), torch.cat([fm.train.labels, fm.val.labels]))
    return Dataset(fm.spec, full, fm.val, fm.test, fm.classes)


def gemm_gflops(n: int = 1024, repeats: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def step_gflop() -> float:
    """FLOPs of one training step: forward GEMMs, and twice that backward (input and weight gradients),
    less the input gradient of the first layer, which nothing needs."""
    forward = 2 * BATCH * (PIXELS * HIDDEN + HIDDEN * 2 * LATENT + LATENT * HIDDEN + HIDDEN * PIXELS)
    return (3 * forward - 2 * BATCH * PIXELS * HIDDEN) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--k", type=int, default=1000, help="importance samples for the NLL comparison")
    parser.add_argument("--nll-images", type=int, default=1000)
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args()
    ensure_pythae()

    data = full_training_set()
    floats = data.train.images.float().div(255).view(-1, PIXELS)
    steps = -(-len(data.train) // BATCH)
    times: dict[str, list[float]] = {k: [] for k in ("plain", "vaekit", "vaekit --compile", "pythae", "gemm",
                                                       "compile", "rss vaekit", "rss pythae")}
    for r in range(args.rounds):  # interleaved: drift of the machine hits all alike
        times["gemm"].append(gemm_gflops())
        times["plain"].append(plain_epoch(floats, seed=r))
        times["vaekit"].append(vaekit_epochs(data, seed=r)[0])
        first, second = vaekit_epochs(data, seed=r, epochs=2, compile=True)
        times["vaekit --compile"].append(second)  # epoch 2: compiled code, no compiling
        times["compile"].append(first - second)  # what the first epoch spent compiling
        ref = pythae("train")
        times["pythae"].append(ref["epoch_seconds"])
        times["rss pythae"].append(ref["peak_rss_mb"])
        times["rss vaekit"].append(vaekit_peak_rss_mb())
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in times.items()), flush=True)

    # Importance-sampled NLL: the same trained weights through vaekit's batched estimator and Pythae's get_nll.
    nll: dict[str, list[float]] = {"vaekit s": [], "pythae s": [], "vaekit nll": [], "pythae nll": []}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        vaekit_epochs(data, seed=0, keep=folder / "run")
        model = VAE.from_pretrained(folder / "run").eval()
        np.savez(folder / "w.npz", **{k: v.numpy() for k, v in model.state_dict().items()})
        x = next(iter(Batches(data.test.subset(torch.arange(args.nll_images)), args.nll_images)))
        np.save(folder / "x.npy", x.numpy())
        for r in range(args.rounds):
            torch.manual_seed(r)
            start = time.perf_counter()
            value = importance_sampled_nll(model, x, k=args.k).mean().item()
            nll["vaekit s"].append(time.perf_counter() - start)
            nll["vaekit nll"].append(value)
            ref = pythae("nll", str(folder / "w.npz"), str(folder / "x.npy"), str(args.k))
            nll["pythae s"].append(ref["seconds"])
            nll["pythae nll"].append(-ref["nll"])  # get_nll returns the mean log-likelihood
            print(f"NLL round {r + 1}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in nll.items()), flush=True)

    med = {k: statistics.median(v) for k, v in {**times, **nll}.items() if v}
    peak = med["gemm"]
    epoch_gflop = steps * step_gflop()

    def row(name: str) -> str:
        t = times[name]
        return (f"| {name} | {med[name]:.2f} | {min(t):.2f} | {max(t):.2f} | {med[name] / med['plain']:.2f} "
                f"| {med[name] / med['pythae']:.2f} | {epoch_gflop / med[name] / peak:.2f} |")

    lines = [
        "# vaekit speed against plain PyTorch and Pythae 0.1.2",
        "",
        f"Command: `python bench/train_speed.py --rounds {args.rounds}` ({time.strftime('%Y-%m-%d')}); every "
        "number is a median over rounds run interleaved in one session (min and max beside it).",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}.",
        f"Network 784-400-20 VAE, Fashion-MNIST 60,000 training images, batch {BATCH}, Adam 1e-3; {steps} steps "
        f"of {step_gflop():.3f} GFLOP = {epoch_gflop:.0f} GFLOP per epoch. Float32 GEMM (1024^3) in the same "
        f"run: {peak:.0f} GFLOP/s, so the GEMM-only floor is {epoch_gflop / peak:.2f} s per epoch.",
        "",
        "## Training: one epoch",
        "",
        "| loop | seconds | min | max | / plain | / Pythae | fraction of GEMM peak |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        row("plain"), row("vaekit"), row("vaekit --compile"), row("pythae"),
        "",
        "plain: the pytorch/examples loop (bench/train_speed.py). vaekit: `vaekit.training.train`, the loop's own "
        "time from metrics.jsonl. Pythae: `TrainingPipeline` for one epoch, wall time of the call "
        "(bench/pythae_ref.py). `--compile` times the second epoch; the first spent this much longer compiling: "
        + ", ".join(f"{c:.1f} s" for c in times["compile"]) + " (Inductor's disk cache helps later rounds).",
        "",
        f"Peak RSS of a process that loads the data and trains one epoch: vaekit {med['rss vaekit']:.0f} MB, "
        f"Pythae {med['rss pythae']:.0f} MB (ratio {med['rss vaekit'] / med['rss pythae']:.2f}).",
        "",
        f"## Importance-sampled NLL: K = {args.k}, {args.nll_images} test images, the same weights",
        "",
        "| estimator | seconds | -log p(x), nats |",
        "| --- | --- | --- |",
        f"| vaekit `importance_sampled_nll` (batched over images x samples) | {med['vaekit s']:.2f} | "
        f"{med['vaekit nll']:.3f} |",
        f"| Pythae `get_nll` (a loop over images) | {med['pythae s']:.2f} | {med['pythae nll']:.3f} |",
        "",
        f"vaekit is {med['pythae s'] / med['vaekit s']:.1f}x faster; the estimates differ by "
        f"{abs(med['vaekit nll'] - med['pythae nll']):.3f} nats.",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
