"""Training and evaluation speed: vaekit against the plain PyTorch loop and Pythae 0.1.2.

    python bench/train_speed.py [--rounds 5] [--archs mlp conv] [--out bench/RESULTS.md]
    python bench/train_speed.py --device cuda [--batch 128] [--out bench/RESULTS-cuda.md]

Every measurement runs in a fresh process of its own (`--worker ...`), so no contender inherits another's heap,
thread pool or compiled code. A round runs every contender once, one after another, in an order that rotates from
round to round; ratios are taken within a round (absolute times on these machines drift by 25% from minute to
minute, ratios far less) and the report gives their median, min and max over the rounds.

Contenders, with the same network, data (Fashion-MNIST, the 60,000 training images), batch 128 and Adam 1e-3:
  plain    the hand-written loop of pytorch/examples vae/main.py (float images in memory, sigmoid + BCE summed,
           default Adam, loss.item() per step); for `conv`, the same loop around vaekit's conv net written by hand
  vaekit   `vaekit.training.train` itself; its epoch time is the one it logs (the loop, not validation)
  compile  the same with `compile=True`: the second epoch's time, and what the first spent compiling
  pythae   Pythae's TrainingPipeline (MLP only), in its own virtual environment made on first use
           (bench/.venv-pythae: torch==2.13.0 and pythae==0.1.2 from PyPI), through bench/pythae_ref.py
  gemm     this machine's float32 GEMM rate (1024^3 on a CPU, 8192^3 on a GPU), so the report states the fraction
           of it each loop reaches
  bf16     (GPU only) vaekit with `bf16=True` (autocast), against the bf16 GEMM rate
With --device cuda every loop runs on the GPU, the data resident there, and Pythae (whose venv is made from PyPI)
is left out, as is its NLL; `vaekit` and `plain` then differ mainly in host synchronisation: plain reads
loss.item() every step, vaekit's step never waits for the GPU.
The FLOPs of a step are counted by torch.utils.flop_counter on vaekit's own forward and backward.

Importance-sampled NLL: one vaekit model trained here, its weights loaded into Pythae's VAE, and both estimators
timed on the same test images with K samples each, again in fresh processes, interleaved.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
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
from vaekit.data.sets import TensorImages

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-pythae"
PYTHAE = [str(VENV / "bin" / "python"), str(HERE / "pythae_ref.py")]
BATCH = int(os.environ.get("VAEKIT_BENCH_BATCH", "128"))  # set by --batch, read by the worker processes
DEVICE = os.environ.get("VAEKIT_BENCH_DEVICE", "cpu")  # set by --device
ARCHS = ("mlp", "conv")


# --- the plain references ---------------------------------------------------------------------------------


class PlainMLP(nn.Module):
    """pytorch/examples vae/main.py, as written there."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
        self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    def forward(self, x):
        h1 = F.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(h1), self.fc22(h1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))).view(-1, 1, 28, 28), mu, logvar


class PlainConv(nn.Module):
    """vaekit's default conv net for 28x28 (two 4x4 stride-2 convolutions, 32 and 64 channels), by hand."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 32, 4, 2, 1), nn.Conv2d(32, 64, 4, 2, 1)
        self.fc_enc, self.fc_dec = nn.Linear(64 * 7 * 7, 40), nn.Linear(20, 64 * 7 * 7)
        self.deconv1, self.deconv2 = nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ConvTranspose2d(32, 1, 4, 2, 1)

    def forward(self, x):
        h = F.relu(self.conv2(F.relu(self.conv1(x))))
        mu, logvar = self.fc_enc(h.flatten(1)).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        h = F.relu(self.fc_dec(z)).view(-1, 64, 7, 7)
        return torch.sigmoid(self.deconv2(F.relu(self.deconv1(h)))), mu, logvar


def plain_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor) -> float:
    """One step of pytorch/examples vae/main.py: sigmoid + BCE summed, closed-form KL, loss.item()."""
    optimizer.zero_grad()
    recon, mu, logvar = model(x)
    bce = F.binary_cross_entropy(recon, x, reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    loss = bce + kld
    loss.backward()
    optimizer.step()
    return loss.item()


def plain_epoch(arch: str, images: torch.Tensor, seed: int) -> float:
    torch.manual_seed(seed)
    model = {"mlp": PlainMLP, "conv": PlainConv}[arch]().to(DEVICE)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    perm = torch.randperm(len(images), device=images.device)
    for _ in range(2 if DEVICE.startswith("cuda") else 1):  # on a GPU the second epoch is timed (see vaekit_worker)
        start = time.perf_counter()
        total = 0.0
        for i in range(0, len(images), BATCH):
            total += plain_step(model, optimizer, images[perm[i:i + BATCH]])
    return time.perf_counter() - start


# --- vaekit ------------------------------------------------------------------------------------------------


def vaekit_run(arch: str, seed: int = 0, epochs: int = 1, compile: bool = False, bf16: bool = False) -> RunConfig:
    model = ModelConfig(kind="vae", arch="mlp", hidden=(400,), latent_dim=20) if arch == "mlp" else \
        ModelConfig(kind="vae", arch="conv", latent_dim=20)
    return RunConfig(model=model, data=DataConfig(name="fashion-mnist"),
                     train=TrainConfig(epochs=epochs, batch_size=BATCH, lr=1e-3, seed=seed, samples=1, compile=compile,
                                       device=DEVICE, bf16=bf16, gmm_components=0))


def full_training_set() -> Dataset:
    """All 60,000 Fashion-MNIST training images as the training split, as the references use them."""
    fm = load_dataset(DataConfig(name="fashion-mnist"))
    full = TensorImages(torch.cat([fm.train.images, fm.val.images]), torch.cat([fm.train.labels, fm.val.labels]))
    return Dataset(fm.spec, full, fm.val, fm.test, fm.classes)


def step_gflop(arch: str) -> float:
    """Matmul and convolution FLOPs of one vaekit training step (forward and backward), as PyTorch counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    from vaekit.models import build_model

    run = vaekit_run(arch)
    run.model.image_shape = (1, 28, 28)
    model = build_model(run.model)
    with FlopCounterMode(display=False) as counter:
        model(torch.rand(BATCH, 1, 28, 28)).objective.backward()
    return counter.get_total_flops() / 1e9


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gemm_gflops(n: int = 1024, repeats: int = 30, dtype: torch.dtype = torch.float32) -> float:
    n = 8192 if DEVICE.startswith("cuda") else n
    a, b = torch.randn(n, n, device=DEVICE, dtype=dtype), torch.randn(n, n, device=DEVICE, dtype=dtype)
    for _ in range(5):
        a @ b
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        a @ b
        sync()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def sync() -> None:
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


# --- workers: one measurement each, in a fresh process of its own (run_worker) ---------------------------------


def gemm_worker(arch: str, seed: int) -> dict:
    result = {"gflops": gemm_gflops()}
    if DEVICE.startswith("cuda"):
        result["bf16_gflops"] = gemm_gflops(dtype=torch.bfloat16)
    return result


def plain_worker(arch: str, seed: int) -> dict:
    images = full_training_set().train.images.to(DEVICE).float().div(255)
    seconds = plain_epoch(arch, images, seed)  # plain_step's loss.item() waits for the GPU at every step
    return {"seconds": seconds, "rss_mb": peak_rss_mb()}


def vaekit_worker(arch: str, seed: int, compile: bool = False, bf16: bool = False) -> dict:
    """One epoch (two with compile: the second is timed, the first less the second is the compile time). On a GPU
    two, the second timed, as for the plain loop: a process's first CUDA epoch also loads every kernel and creates
    cuBLAS's handles. The time vaekit logs ends with the epoch's last divergence check, which waits for the GPU."""
    from vaekit.training import train

    epochs = 2 if compile or DEVICE.startswith("cuda") else 1
    with tempfile.TemporaryDirectory() as out:
        train(vaekit_run(arch, seed, epochs=epochs, compile=compile, bf16=bf16), Path(out) / "run",
              quiet=True, dataset=full_training_set())
        seconds = [json.loads(r)["seconds"] for r in (Path(out) / "run" / "metrics.jsonl").read_text().splitlines()]
    result = {"seconds": seconds[-1], "rss_mb": peak_rss_mb()}
    if compile:
        result["compile_seconds"] = seconds[0] - seconds[1]
    return result


def nll_model_worker(arch: str, seed: int, folder: str, images: str) -> dict:
    """Train the model both estimators score; export its weights for Pythae and the test images."""
    from vaekit.models import load_model
    from vaekit.training import train

    folder, n = Path(folder), int(images)
    train(vaekit_run("mlp", seed, epochs=3), folder / "run", quiet=True, dataset=full_training_set())
    model = load_model(folder / "run")
    np.savez(folder / "w.npz", **{k: v.numpy() for k, v in model.state_dict().items()})
    test = load_dataset(DataConfig(name="fashion-mnist")).test
    np.save(folder / "x.npy", next(iter(Batches(test.subset(torch.arange(n)), n)))[0].numpy())  # (x, y) batches
    return {}


def nll_worker(arch: str, seed: int, folder: str, k: str) -> dict:
    from vaekit.evaluation import importance_sampled_nll
    from vaekit.models import load_model

    model = load_model(Path(folder) / "run", map_location=DEVICE).eval()
    x = torch.from_numpy(np.load(Path(folder) / "x.npy")).to(DEVICE)
    torch.manual_seed(seed)
    importance_sampled_nll(model, x[:10], k=int(k))  # warm-up: CUDA's handles and kernels
    sync()
    start = time.perf_counter()
    value = importance_sampled_nll(model, x, k=int(k)).mean().item()
    return {"seconds": time.perf_counter() - start, "nll": value}


WORKERS = {"gemm": gemm_worker, "plain": plain_worker, "vaekit": vaekit_worker,
           "compile": lambda arch, seed: vaekit_worker(arch, seed, compile=True),
           "bf16": lambda arch, seed: vaekit_worker(arch, seed, bf16=True),
           "nll-model": nll_model_worker, "nll": nll_worker}


def run_worker(name: str, arch: str = "mlp", seed: int = 0, *extra: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--arch", arch, "--seed", str(seed), *extra]
    with tempfile.TemporaryDirectory() as cache:  # compile from nothing, as on a user's first run
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache})
    if done.returncode != 0:
        raise SystemExit(f"worker {name} {arch} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def ensure_pythae() -> None:
    if not (VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run(pip + ["torch==2.13.0"], check=True)  # the CPU wheel on disk, never a CUDA download
        subprocess.run(pip + ["pythae==0.1.2"], check=True)


def pythae(*args: str) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "out.json"
        done = subprocess.run(PYTHAE + [*args, str(out)], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"pythae {args[0]} failed:\n{done.stderr[-3000:]}")
        return json.loads(out.read_text())


# --- the report ----------------------------------------------------------------------------------------------


def stats(values: list[float], digits: int = 2) -> str:
    """median (min-max) of the rounds"""
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def rotate(items: list, r: int) -> list:
    return items[r % len(items):] + items[:r % len(items)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--archs", nargs="+", choices=ARCHS, default=list(ARCHS))
    parser.add_argument("--k", type=int, default=1000, help="importance samples for the NLL comparison")
    parser.add_argument("--nll-images", type=int, default=1000)
    parser.add_argument("--nll-rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: every loop on the GPU, without Pythae")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--compile", action="store_true", help="on a GPU, also time compile=True (Inductor compiles "
                        "from an empty cache in every round: minutes)")
    parser.add_argument("--out", default=None, help="default: bench/RESULTS.md, on a GPU bench/RESULTS-cuda.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--arch", default="mlp", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args, extra = parser.parse_known_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args.arch, args.seed, *extra)))
        return
    global BATCH, DEVICE
    BATCH, DEVICE = args.batch, args.device
    os.environ.update(VAEKIT_BENCH_DEVICE=args.device, VAEKIT_BENCH_BATCH=str(args.batch))  # for the workers
    gpu = args.device.startswith("cuda")
    args.out = args.out or str(HERE / ("RESULTS-cuda.md" if gpu else "RESULTS.md"))
    if not gpu:
        ensure_pythae()
    started = time.strftime("%Y-%m-%d %H:%M")

    # Training: every contender once per round, in a rotating order.
    loops = ("plain", "vaekit", "compile") if not gpu else ("plain", "vaekit", "bf16", *(("compile",) * args.compile))
    contenders = [("gemm", "-")] + [(name, arch) for arch in args.archs for name in loops]
    if "mlp" in args.archs and not gpu:
        contenders.append(("pythae", "mlp"))
    rounds: list[dict[tuple[str, str], dict]] = []
    for r in range(args.rounds):
        results = {}
        for name, arch in rotate(contenders, r):
            results[name, arch] = pythae("train") if name == "pythae" else run_worker(name, arch, r)
        rounds.append(results)
        print(f"round {r + 1}: " + ", ".join(f"{n} {a} {v.get('seconds', v.get('gflops', 0)):.2f}"
                                             for (n, a), v in results.items()), flush=True)

    # Importance-sampled NLL: one trained model, scored by both estimators.
    nll: dict[str, list[dict]] = {"vaekit": []} if gpu else {"vaekit": [], "pythae no_grad": [], "pythae grad": []}
    with tempfile.TemporaryDirectory() as folder:
        if args.nll_rounds:
            run_worker("nll-model", "mlp", 0, folder, str(args.nll_images))
        for r in range(args.nll_rounds):
            for name in rotate(list(nll), r):
                if name == "vaekit":
                    nll[name].append(run_worker("nll", "mlp", r, folder, str(args.k)))
                else:
                    nll[name].append(pythae("nll", f"{folder}/w.npz", f"{folder}/x.npy", str(args.k), name.split()[1]))
            print(f"NLL round {r + 1}: " + ", ".join(f"{n} {v[-1]['seconds']:.2f} s {v[-1]['nll']:.3f}"
                                                     for n, v in nll.items()), flush=True)

    Path(args.out).write_text(report(args, rounds, nll, started))
    print(Path(args.out).read_text())


def report(args: argparse.Namespace, rounds: list[dict], nll: dict[str, list[dict]], started: str) -> str:
    def series(name: str, arch: str, key: str = "seconds") -> list[float]:
        return [r[name, arch][key] for r in rounds]

    gpu = DEVICE.startswith("cuda")
    gemm = series("gemm", "-", "gflops")
    bf16_gemm = series("gemm", "-", "bf16_gflops") if gpu else []
    where = (f"GPU: {torch.cuda.get_device_name()}, float32 GEMM (8192^3, TF32 off) {stats(gemm, 0)} GFLOP/s, bf16 "
             f"{stats(bf16_gemm, 0)} GFLOP/s, in the same rounds; data resident on the GPU." if gpu else
             f"Float32 GEMM (1024^3) in the same rounds: {stats(gemm, 0)} GFLOP/s. No GPU was lent to this run.")
    lines = [
        "# vaekit speed against plain PyTorch and Pythae 0.1.2",
        "",
        f"Command: `python bench/train_speed.py --rounds {args.rounds} --archs {' '.join(args.archs)}"
        + (f" --device {DEVICE} --batch {BATCH}" if gpu or BATCH != 128 else "") + "` (started "
        f"{started}). Every contender ran in a fresh process of its own; each round ran all of them once, in an order "
        "rotating from round to round. Cells: median (min-max) over the rounds; ratios are taken within each round.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}. {where}",
        "",
        f"Data: Fashion-MNIST, 60,000 training images, batch {BATCH} ({-(-60000 // BATCH)} steps per epoch), "
        "Adam 1e-3." + (" On the GPU every loop ran two epochs in its process and the second is timed (the first "
                        "also loads CUDA's kernels and handles)." if gpu else ""),
    ]
    for arch in args.archs:
        gflop = step_gflop(arch)
        epoch_gflop = gflop * -(-60000 // BATCH)
        names = [n for n in ("plain", "vaekit", "compile", "bf16", "pythae") if (n, arch) in rounds[0]]
        title = {"mlp": "the pytorch/examples MLP 784-400-20", "conv": "vaekit's default conv net for 28x28 "
                 "(Conv 32, Conv 64, 4x4 stride 2; mirrored by transposed convolutions)"}[arch]
        lines += [
            "",
            f"## Training one epoch: {title}",
            "",
            f"One step: {gflop:.3f} GFLOP of matmuls and convolutions (forward and backward), {epoch_gflop:.0f} GFLOP "
            f"per epoch; at the GEMM rate of each round that is a floor of "
            f"{stats([epoch_gflop / g for g in gemm], 4 if gpu else 2)} "
            "s per epoch.",
            "",
            "| loop | seconds | images/s | / plain | / Pythae | fraction of GEMM peak | peak RSS, MB |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name in names:
            t = series(name, arch)
            vs_plain = stats([a / b for a, b in zip(t, series("plain", arch))])
            vs_pythae = stats([a / b for a, b in zip(t, series("pythae", arch))]) if arch == "mlp" and not gpu else "-"
            fraction = stats([epoch_gflop / s / g for s, g in zip(t, bf16_gemm if name == "bf16" else gemm)], 4)
            rss = stats(series(name, arch, "rss_mb"), 0) if name != "compile" else "-"
            label = {"compile": "vaekit `compile=True` (epoch 2)", "bf16": "vaekit `bf16=True` (of the bf16 peak)"
                     }.get(name, name)
            lines.append(f"| {label} | {stats(t)} | {stats([60000 / x for x in t], 0)} | {vs_plain} | {vs_pythae} | "
                         f"{fraction} | {rss} |")
        if "compile" in names:
            compile_s = series("compile", arch, "compile_seconds")
            lines += ["", f"`compile=True` spent {stats(compile_s, 1)} s compiling in its first epoch (first epoch "
                      "less the second; Inductor's cache empty, as on a user's first run)."]
        if arch == "mlp" and not gpu:
            rss = stats([a / b for a, b in zip(series("vaekit", arch, "rss_mb"), series("pythae", arch, "rss_mb"))])
            pipeline = stats(series("pythae", arch, "pipeline_seconds"))
            lines += [f"Peak RSS, vaekit / Pythae: {rss} (each a process that loads the data and trains one epoch). "
                      f"Pythae's whole pipeline call took {pipeline} s; the table times its epoch loop "
                      "(BaseTrainer.train_step), as vaekit's epoch time covers its loop."]

    vk = [v["seconds"] for v in nll["vaekit"]]
    if not vk:
        return "\n".join(lines + [""])
    lines += [
        "",
        f"## Importance-sampled NLL: K = {args.k}, {args.nll_images} Fashion-MNIST test images, the same weights",
        "",
        "The MLP VAE trained 3 epochs by vaekit" + ("." if gpu else "; its weights loaded into Pythae's VAE.") + " "
        f"{args.nll_rounds} rounds, fresh processes.",
        "",
        "| estimator | seconds | vaekit faster by | -log p(x), nats |",
        "| --- | --- | --- | --- |",
        f"| vaekit `importance_sampled_nll` | {stats(vk)} | 1.00 | {stats([v['nll'] for v in nll['vaekit']], 3)} |",
    ]
    if gpu:
        return "\n".join(lines + [""])
    for name, label in (("pythae no_grad", "Pythae `get_nll` inside torch.no_grad()"),
                        ("pythae grad", "Pythae `get_nll` as documented (autograd on)")):
        t = [v["seconds"] for v in nll[name]]
        lines.append(f"| {label} | {stats(t)} | {stats([p / v for p, v in zip(t, vk)])} | "
                     f"{stats([v['nll'] for v in nll[name]], 3)} |")
    gap = abs(statistics.median(v["nll"] for v in nll["vaekit"]) -
              statistics.median(v["nll"] for v in nll["pythae no_grad"]))
    lines += ["", f"The two estimates (medians) differ by {gap:.3f} nats.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
