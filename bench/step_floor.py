"""How fast can one eager training step of the 784-400-20 MLP VAE be on this machine? The floor under vaekit's step.

    python bench/step_floor.py [--repeats 15] [--out bench/RESULTS-floor.md]

Four ways to take the same step (batch 128 of Fashion-MNIST, Adam 1e-3), interleaved in one process:
  gemm only   the step's eleven matrix products (four with a bias) alone, no activations, loss or optimizer
  by hand     forward, loss value and backward written out by hand (no autograd; gradients checked against
              autograd first), the gradient-norm guard and fused Adam: the least an eager PyTorch step can do
  vaekit      the body of vaekit's training loop: model(x), backward, gradient norm check, fused Adam
  plain       the pytorch/examples step (sigmoid + BCE, default Adam, loss.item())
and the float32 GEMM rate (1024^3) between them, so each is also stated as a fraction of the GEMM peak.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import (  # noqa: E402
    BATCH,
    PlainMLP,
    full_training_set,
    gemm_gflops,
    plain_step,
    step_gflop,
    vaekit_run,
)

from vaekit.data import Batches  # noqa: E402
from vaekit.models import build_model  # noqa: E402
from vaekit.training.step import gradient_norm, make_optimizer  # noqa: E402

HERE = Path(__file__).resolve().parent


def linear_layers(model) -> list[torch.nn.Linear]:
    """The four nn.Linear layers of vaekit's one-hidden-layer MLP VAE: encoder in, head, decoder in, out."""
    return [model.encoder[1], model.encoder[3], model.decoder[0], model.decoder[2]]


class ByHand:
    """The VAE step with hand-derived gradients, on the same weights layout as vaekit's MLP (nn.Linear)."""

    def __init__(self, model):
        self.lin = linear_layers(model)
        self.params = [p for layer in self.lin for p in (layer.weight, layer.bias)]
        self.opt = torch.optim.Adam(self.params, lr=1e-3, fused=True)

    def grads(self, x: torch.Tensor, eps: torch.Tensor) -> list[torch.Tensor]:
        (w1, b1), (w2, b2), (w3, b3), (w4, b4) = [(lin.weight.detach(), lin.bias.detach()) for lin in self.lin]
        b, d = len(x), eps.shape[1]
        x = x.view(b, -1)
        h1 = torch.addmm(b1, x, w1.t()).relu_()
        mu, logvar = torch.addmm(b2, h1, w2.t()).split(d, dim=1)
        sigma = torch.exp(0.5 * logvar)
        z = mu + sigma * eps
        h3 = torch.addmm(b3, z, w3.t()).relu_()
        logits = torch.addmm(b4, h3, w4.t())
        # loss = mean over the batch of sum(BCE-with-logits) + KL(q || N(0, I))
        self.loss = (F.binary_cross_entropy_with_logits(logits, x, reduction="sum")  # for the log, as any loop
                     + 0.5 * (mu * mu + sigma * sigma - 1 - logvar).sum()) / b
        g4 = (torch.sigmoid(logits) - x).div_(b)
        gh3 = (g4 @ w4).mul_(h3 > 0)
        gz = gh3 @ w3
        g_mu = gz + mu / b
        g_logvar = gz * eps * sigma * 0.5 + 0.5 * (sigma * sigma - 1) / b
        g2 = torch.cat([g_mu, g_logvar], dim=1)
        gh1 = (g2 @ w2).mul_(h1 > 0)
        return [gh1.t() @ x, gh1.sum(0), g2.t() @ h1, g2.sum(0), gh3.t() @ z, gh3.sum(0), g4.t() @ h3, g4.sum(0)]

    def step(self, x: torch.Tensor) -> None:
        eps = torch.randn(len(x), self.lin[2].in_features)
        for p, g in zip(self.params, self.grads(x, eps)):
            p.grad = g
        if torch.isfinite(gradient_norm(self.params, 0.0)):  # the same guard as vaekit's loop
            self.opt.step()


def gemm_only(model, x: torch.Tensor) -> None:
    """The same eleven products (four with a bias) as a step, on stand-in gradients."""
    with torch.no_grad():
        (w1, b1), (w2, b2), (w3, b3), (w4, b4) = [(lin.weight, lin.bias) for lin in linear_layers(model)]
        x = x.view(len(x), -1)
        h1 = torch.addmm(b1, x, w1.t())
        p = torch.addmm(b2, h1, w2.t())
        z = p[:, :w3.shape[1]]
        h3 = torch.addmm(b3, z, w3.t())
        logits = torch.addmm(b4, h3, w4.t())
        g3 = logits @ w4
        g2 = torch.cat([g3 @ w3] * 2, dim=1)
        g2 @ w2, g2.t() @ h1, g3.t() @ z, logits.t() @ h3, h1.t() @ x  # noqa: B018


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--steps", type=int, default=50, help="steps per timed block")
    parser.add_argument("--out", default=str(HERE / "RESULTS-floor.md"))
    args = parser.parse_args()

    data = full_training_set()
    run = vaekit_run("mlp")
    run.model.image_shape = data.shape
    torch.manual_seed(0)
    model = build_model(run.model)
    optimizer = make_optimizer(model, run)
    params = list(model.parameters())
    by_hand = ByHand(build_model(run.model))
    plain = PlainMLP()
    plain_opt = torch.optim.Adam(plain.parameters(), lr=1e-3)
    batches = Batches(data.train, BATCH, shuffle=True)

    # the hand-derived gradients must be the true ones: same weights and eps through autograd
    x = next(iter(batches))
    eps = torch.randn(BATCH, 20)
    check = build_model(run.model)
    reference = ByHand(check)
    q = check.encode(x)
    z = q.mu + q.sigma * eps
    loss = check.likelihood.nll(x, check.decode(z)).mean() + q.kl().mean()
    loss.backward()
    for p, g in zip(reference.params, reference.grads(x, eps)):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-5)

    def vaekit_step(x: torch.Tensor) -> None:
        loss = model(x)
        optimizer.zero_grad(set_to_none=True)
        loss.objective.backward()
        if torch.isfinite(gradient_norm(params, 0.0)):
            optimizer.step()

    ways = {"gemm only": lambda x: gemm_only(model, x), "by hand": by_hand.step, "vaekit": vaekit_step,
            "plain": lambda x: plain_step(plain, plain_opt, x)}
    ms: dict[str, list[float]] = {name: [] for name in ways}
    peak: list[float] = []
    stream = batches.epoch(0)
    for r in range(args.repeats):
        peak.append(gemm_gflops(repeats=10))
        for name in (list(ways) if r % 2 == 0 else list(ways)[::-1]):
            xs = []
            for _ in range(args.steps):
                try:
                    xs.append(next(stream))
                except StopIteration:
                    stream = batches.epoch(r)
                    xs.append(next(stream))
            start = time.perf_counter()
            for x in xs:
                ways[name](x)
            ms[name].append((time.perf_counter() - start) / args.steps * 1e3)

    gflop = step_gflop("mlp")
    floor = [gflop / g * 1e3 for g in peak]
    lines = [
        "# The floor under one training step: 784-400-20 MLP VAE, batch 128",
        "",
        f"Command: `python bench/step_floor.py --repeats {args.repeats}` ({time.strftime('%Y-%m-%d %H:%M')}); "
        f"{args.repeats} repeats of {args.steps} steps each, interleaved in one process. Machine: "
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}. A step is {gflop:.3f} GFLOP of "
        f"matrix products; at the GEMM rate measured between blocks ({statistics.median(peak):.0f} GFLOP/s) that "
        f"is {statistics.median(floor):.2f} ms.",
        "",
        "| step | ms, median (min-max) | fraction of GEMM peak | / vaekit |",
        "| --- | --- | --- | --- |",
    ]
    for name, t in ms.items():
        frac = [f / s for f, s in zip(floor, t)]
        rel = [a / b for a, b in zip(t, ms["vaekit"])]
        lines.append(f"| {name} | {statistics.median(t):.2f} ({min(t):.2f}-{max(t):.2f}) | "
                     f"{statistics.median(frac):.2f} | {statistics.median(rel):.2f} |")
    lines += [
        "",
        "\"by hand\" is the same step with the gradients written out (checked against autograd before timing), "
        "the loss value, the finiteness guard and fused Adam: no autograd graph, the fewest eager operations. Its "
        "fraction of the GEMM peak is what eager PyTorch on this machine can reach at best for this network; a "
        "target above it needs fused kernels (a compiler or hand-written C++), not a better loop.",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
