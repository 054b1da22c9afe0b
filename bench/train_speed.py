"""Training speed: vaekit's training loop against the plain PyTorch reference, interleaved in one process.

    python bench/train_speed.py [--rounds 3] [--out bench/RESULTS-train.md]

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
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaekit.data import Dataset, load_dataset
from vaekit.training import train

HERE = Path(__file__).resolve().parent
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


def vaekit_epochs(data: Dataset, seed: int, epochs: int = 1, compile: bool = False) -> list[float]:
    """Seconds of each epoch's loop, as `vaekit.training.train` measures and logs them."""
    run = RunConfig(model=ModelConfig(kind="vae", arch="mlp", hidden=(HIDDEN,), latent_dim=LATENT),
                    data=DataConfig(name="fashion-mnist"),
                    train=TrainConfig(epochs=epochs, batch_size=BATCH, lr=1e-3, seed=seed, samples=1, compile=compile))
    torch._dynamo.reset()  # compile afresh each time: no code cached from an earlier round
    with tempfile.TemporaryDirectory() as out:
        train(run, Path(out) / "run", quiet=True, dataset=data)
        rows = (Path(out) / "run" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(r)["seconds"] for r in rows]


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
    parser.add_argument("--out", default=str(HERE / "RESULTS-train.md"))
    args = parser.parse_args()

    fm = load_dataset(DataConfig(name="fashion-mnist"))
    full = fm.train.__class__(torch.cat([fm.train.images, fm.val.images]), torch.cat([fm.train.labels, fm.val.labels]))
    data = Dataset(fm.spec, full, fm.val, fm.test, fm.classes)  # all 60,000 training images, as the reference
    floats = full.images.float().div(255).view(-1, PIXELS)
    steps = -(-len(full) // BATCH)
    times: dict[str, list[float]] = {"plain": [], "vaekit": [], "vaekit --compile": [], "gemm": [], "compile": []}
    for r in range(args.rounds):  # interleaved: drift of the machine hits all alike
        times["gemm"].append(gemm_gflops())
        times["plain"].append(plain_epoch(floats, seed=r))
        times["vaekit"].append(vaekit_epochs(data, seed=r)[0])
        first, second = vaekit_epochs(data, seed=r, epochs=2, compile=True)
        times["vaekit --compile"].append(second)  # epoch 2: compiled code, no compiling
        times["compile"].append(first - second)  # what the first epoch spent compiling
        print(f"round {r + 1}: plain {times['plain'][-1]:.2f}s  vaekit {times['vaekit'][-1]:.2f}s  "
              f"compiled {second:.2f}s (+{first - second:.0f}s compile)  GEMM {times['gemm'][-1]:.0f} GFLOP/s",
              flush=True)
    peak = statistics.median(times["gemm"])
    epoch_gflop = steps * step_gflop()

    def row(name: str) -> str:
        t = times[name]
        med = statistics.median(t)
        return (f"| {name} | {med:.2f} | {min(t):.2f} | {max(t):.2f} | {med / statistics.median(times['plain']):.2f} "
                f"| {epoch_gflop / med / peak:.2f} |")

    lines = [
        "# Training speed: vaekit vs the plain PyTorch loop",
        "",
        f"Command: `python bench/train_speed.py --rounds {args.rounds}` ({time.strftime('%Y-%m-%d')})",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}.",
        f"Network 784-400-20 VAE, Fashion-MNIST 60,000 training images, batch {BATCH}, Adam 1e-3; {steps} steps "
        f"of {step_gflop():.3f} GFLOP = {epoch_gflop:.0f} GFLOP per epoch. Float32 GEMM (1024^3) in the same "
        f"run: {peak:.0f} GFLOP/s (median), so the GEMM-only floor is {epoch_gflop / peak:.2f} s per epoch.",
        "",
        "| loop | epoch s (median) | min | max | ratio to plain | fraction of GEMM peak |",
        "| --- | --- | --- | --- | --- | --- |",
        row("plain"),
        row("vaekit"),
        row("vaekit --compile"),
        "",
        "`--compile` rows time the second epoch; the first spent this much longer, compiling, in each round: "
        + ", ".join(f"{c:.1f} s" for c in times["compile"])
        + " (after the first compile, Inductor's on-disk cache makes later ones cheaper).",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
