"""One training step, and what it needs: the optimizer, the learning-rate schedule, the gradient norm."""

from __future__ import annotations

import copy
import math
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vaekit.config import RunConfig, short
from vaekit.errors import VaekitError
from vaekit.models import PRESETS, Autoencoder, Loss

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
SCHEDULES = ("constant", "cosine")


def check_train_config(run: RunConfig) -> None:
    """Refuse unknown names before anything is written (numbers are checked by the config itself)."""
    for name, value, known in (("optimizer", run.train.optimizer, OPTIMIZERS),
                               ("schedule", run.train.schedule, SCHEDULES), ("model", run.model.kind, PRESETS)):
        if value not in known:
            raise VaekitError(f"unknown {name} {short(value)} (choose from {', '.join(known)})")
    if run.model.conditional and run.data.classes:
        raise VaekitError(f"--conditional learns every class of the data, and --classes {short(run.data.classes)} "
                          "keeps only some: the others would stay untrained; leave one of them out")
    least = PRESETS[run.model.kind].min_batch
    if run.train.batch_size < least:
        raise VaekitError(f"--model {run.model.kind} needs --batch-size {least} or more (got {run.train.batch_size}): "
                          "its penalty compares the codes of a batch")


def make_optimizer(model: Autoencoder, run: RunConfig) -> torch.optim.Optimizer:
    """Adam or AdamW, fused (one kernel for all parameters) where this PyTorch supports it."""
    t = run.train
    try:
        return OPTIMIZERS[t.optimizer](model.parameters(), lr=t.lr, weight_decay=t.weight_decay, fused=True)
    except (RuntimeError, TypeError):
        return OPTIMIZERS[t.optimizer](model.parameters(), lr=t.lr, weight_decay=t.weight_decay)


def gradient_norm(params: list[torch.nn.Parameter], clip: float) -> torch.Tensor:
    """The global gradient norm (non-finite when any loss term or gradient is), clipping to `clip` if > 0."""
    if clip > 0:
        return torch.nn.utils.clip_grad_norm_(params, clip)
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6: the norm without a no-op scaling pass
        return torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    return torch.nn.utils.clip_grad_norm_(params, math.inf)


def lr_at(step: int, total_steps: int, run: RunConfig) -> float:
    """Linear warm-up, then constant or cosine decay to zero; a function of the step alone, so a
    resumed run needs no scheduler state."""
    t = run.train
    if step < t.lr_warmup_steps:
        return t.lr * (step + 1) / t.lr_warmup_steps
    if t.schedule == "cosine":
        progress = min(1.0, (step - t.lr_warmup_steps) / max(1, total_steps - t.lr_warmup_steps))
        return t.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return t.lr


@dataclass
class StepResult:
    loss: Loss
    grad_norm: Tensor
    bad: Tensor  # on the device, True where the loss or a gradient was not finite (or the gradient norm over
    # --skip-threshold) and the weights were kept


def skip_if(optimizer: torch.optim.Optimizer, bad: Tensor) -> None:
    """Step the optimizer unless `bad`, without asking the host: fused Adam reads `found_inf` on the device (as
    under torch.amp's GradScaler) and leaves weights, moments and step count as they were. An unfused optimizer
    (a PyTorch without fused kernels for this device) falls back to one host sync."""
    if optimizer.defaults.get("fused") and bad.device.type in ("cuda", "cpu"):  # MPS's fused Adam refused it once
        optimizer.found_inf = bad.float()  # type: ignore[attr-defined]
        optimizer.step()
        optimizer.found_inf = None  # type: ignore[attr-defined]  # a later step() elsewhere is not skipped
    elif not bool(bad):
        optimizer.step()


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, *, y: Tensor | None = None,
               kl_weight: float = 1.0, grad_clip: float = 0.0, skip_threshold: float = 0.0,
               autocast: AbstractContextManager = nullcontext()) -> StepResult:
    """One update: forward (the preset's objective), backward, the finiteness guard, the optimizer step.

    A NaN or infinite loss or gradient skips the update (vdvae), as does a gradient norm above `skip_threshold`
    (when > 0): one bad batch does not poison the weights. The decision stays on the device, so the step never waits
    for it; the caller counts bad steps (`StepLog`) and gives up after `max_bad_steps` in a row."""
    with autocast:
        loss = model(x, kl_weight, y)
    optimizer.zero_grad(set_to_none=True)
    loss.objective.backward()
    grad_norm = gradient_norm([p for group in optimizer.param_groups for p in group["params"]], grad_clip)
    bad = ~torch.isfinite(grad_norm)
    if skip_threshold > 0:
        bad = bad | (grad_norm > skip_threshold)
    skip_if(optimizer, bad)
    return StepResult(loss, grad_norm, bad)


class WeightAverage:
    """An exponential moving average of a model's parameters (each step: average += (1 - decay) (weights - average)),
    its buffers copied as they are: what validation, checkpoints and sampling use under --ema-decay. The update runs
    on the device and leaves the average as it was after a skipped step (`bad`), so the step never waits for it."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, bad: Tensor) -> None:
        average = list(self.model.parameters())
        rate = (1 - self.decay) * (~bad).to(average[0].dtype)  # 0 after a skipped step
        moved = torch._foreach_sub([p.detach() for p in model.parameters()], average)
        torch._foreach_mul_(moved, rate)
        torch._foreach_add_(average, moved)
        for mine, theirs in zip(self.model.buffers(), model.buffers()):
            mine.copy_(theirs)


class StepLog:
    """What the loop keeps of each step, without waiting for the device: the step's loss sums (reconstruction, KL,
    the bound) and its non-finite flag are written into a small buffer on the device; `flush()` reads the buffer (one
    host sync for `size` steps), adds the steps that updated the weights to the epoch's sums, and counts the steps that
    did not, in a row across epochs."""

    def __init__(self, limit: int, device: torch.device, size: int = 20):
        self.limit = limit  # this many bad steps in a row: diverged
        self.buffer = torch.zeros(size, 4, device=device)
        self.pending: list[tuple[int, int]] = []  # (step, images) of each buffered row
        self.streak = 0  # bad steps in a row up to the last flush
        self.tripped: int | None = None  # the step where the first streak of `limit` bad steps began
        self.recon = self.kl = self.total = 0.0  # sums over this epoch's good steps, up to the last flush
        self.images = 0

    def add(self, result: StepResult, images: int, step: int) -> None:
        loss, row = result.loss, self.buffer[len(self.pending)]
        torch.stack([loss.recon.detach().sum().float(), loss.kl.detach().sum().float(),
                     loss.total.detach().sum().float(), result.bad.float()], out=row)
        self.pending.append((step, images))
        if len(self.pending) == len(self.buffer):
            self.flush()

    def flush(self) -> None:
        rows = self.buffer[:len(self.pending)].tolist() if self.pending else []
        for (step, images), (recon, kl, total, bad) in zip(self.pending, rows):
            if bad:
                self.streak += 1
                if self.streak >= self.limit and self.tripped is None:
                    self.tripped = step - self.limit + 1
            else:
                self.streak = 0
                self.recon, self.kl, self.total = self.recon + recon, self.kl + kl, self.total + total
                self.images += images
        self.pending.clear()

    def new_epoch(self) -> None:
        self.flush()
        self.recon = self.kl = self.total = 0.0
        self.images = 0
