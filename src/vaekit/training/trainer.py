"""The training loop: plain PyTorch, readable top to bottom.

for each epoch:
    for each batch x:        loss = recon + kl_weight * beta * KL   (the model's forward)
                             backward, clip, skip the step if the gradient is not finite, Adam step
    validation ELBO, metrics row, checkpoint (best and latest), early stopping
then: test metrics of the best checkpoint, and samples from N(0, I).
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from vaekit.config import RunConfig, short, to_dict
from vaekit.data import Batches, Dataset, data_paths, evaluation_view, load_dataset
from vaekit.errors import VaekitError, warn
from vaekit.files import atomic_write, new_run_folder, read_json, write_json, write_text
from vaekit.images import save_grid
from vaekit.models import AE, build_model
from vaekit.progress import bar, say
from vaekit.training import distributed
from vaekit.training.checkpoint import load_checkpoint, restore_training_state, roll_back, save_checkpoint

RUN_FILE = "run.json"


OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
SCHEDULES = ("constant", "cosine")


def check_train_config(run: RunConfig) -> None:
    """Refuse unknown names before anything is written (numbers are checked by the config itself)."""
    for name, value, known in (("optimizer", run.train.optimizer, OPTIMIZERS),
                               ("schedule", run.train.schedule, SCHEDULES)):
        if value not in known:
            raise VaekitError(f"unknown {name} {short(value)} (choose from {', '.join(known)})")


def make_optimizer(model: AE, run: RunConfig) -> torch.optim.Optimizer:
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


@torch.no_grad()
def evaluate_loss(model: AE, batches: Batches, info: distributed.Dist | None = None) -> dict[str, float]:
    """Mean reconstruction, KL and negative ELBO per image (nats) and bits/dim over a whole split."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=batches.device)
    for x in batches:
        loss = model(x)
        sums += torch.stack([loss.recon.sum(), loss.kl.sum(), torch.tensor(float(len(x)), device=x.device)]).double()
    if info is not None:
        info.sum(sums)
    model.train(was_training)
    recon, kl, n = sums.tolist()
    dims = math.prod(model.config.image_shape)
    nelbo = (recon + kl) / n
    return {"recon": recon / n, "kl": kl / n, "nelbo": nelbo, "bpd": nelbo / (dims * math.log(2)), "images": int(n)}


def loss_words(m: dict[str, float], variational: bool, prefix: str = "") -> str:
    """A split's loss in words: -ELBO = recon + KL for a VAE; an AE has no ELBO, only its reconstruction."""
    get = lambda key: m[f"{prefix}{key}"]  # noqa: E731
    if not variational:
        return f"reconstruction {get('recon'):.2f} nats ({get('bpd'):.3f} bits/dim)"
    return f"-ELBO {get('nelbo'):.2f} nats (recon {get('recon'):.2f} + KL {get('kl'):.2f}, {get('bpd'):.3f} bits/dim)"


class MetricsLog:
    """One row per epoch, to metrics.jsonl and metrics.csv (and TensorBoard when installed)."""

    def __init__(self, out: Path, keep_until_step: int):
        self.jsonl, self.csv = out / "metrics.jsonl", out / "metrics.csv"
        self.rows: list[dict[str, Any]] = []
        if self.jsonl.is_file():  # resuming: drop rows written after the checkpoint
            rows = [json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()]
            self.rows = [r for r in rows if r["step"] <= keep_until_step]
        self._write()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))
        except ImportError:
            self.tb = None

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self._write()
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, float):
                    self.tb.add_scalar(k, v, row["step"])
            self.tb.flush()

    def _write(self) -> None:
        write_text(self.jsonl, "".join(json.dumps(r) + "\n" for r in self.rows))
        if self.rows:
            with atomic_write(self.csv) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=list(self.rows[-1]))
                writer.writeheader()
                writer.writerows(self.rows)


def diverged(out: Path, first_bad: int, count: int, is_main: bool) -> VaekitError:
    """The error that stops a diverged run, after dropping checkpoints of the weights that failed.

    Those weights came from the update just before the first failing step, so every checkpoint from
    that step on holds them; `latest` goes back to the newest one before it."""
    kept = roll_back(out, before_step=first_bad) if is_main else None
    where = f"the last good checkpoint is {kept}" if kept else "no checkpoint came before it"
    return VaekitError(f"training diverged: {count} steps in a row with a non-finite loss or gradient (from step "
                       f"{first_bad}); {where}; try a lower --lr or --grad-clip")


def train(run: RunConfig | None, out: str | Path, *, resume: bool = False, epochs: int | None = None,
          overwrite: bool = False, quiet: bool = False, dataset: Dataset | None = None,
          inputs: Sequence[Path] = ()) -> dict[str, Any]:
    """Train the model described by `run`, writing everything into the run folder `out`.

    With `resume`, the run's stored settings are used (`run` may be None) and training continues from
    its latest checkpoint, or from the start if it was stopped before the first one; `epochs` may
    raise the total. The data and the model are checked before `out` is touched; `overwrite` replaces
    only a vaekit run, and only once the new one is complete; `inputs` (files the run reads, besides its
    data) may not lie in `out`. Returns the summary (test metrics of the best checkpoint), also in
    summary.json."""
    out = Path(out)
    if resume:
        run = stored_run(out, epochs)
    elif run is None:
        raise ValueError("train() needs a RunConfig unless it resumes")
    check_train_config(run)
    info, device = distributed.setup(run.train.device)
    try:
        data = dataset or evaluation_view(load_dataset(run.data), run.data)
        run.model.image_shape = data.shape
        torch.manual_seed(run.train.seed + info.rank)
        model = build_model(run.model).to(device)
        with ExitStack() as stack:
            if not resume and info.is_main:
                stack.enter_context(new_run_folder(out, overwrite, [*inputs, *data_paths(run.data)]))
            info.barrier()
            summary = _train(run, model, data, out, info, device, resume, quiet or not info.is_main)
            info.barrier()  # every rank done before any tears down: gloo aborts a rank that leaves first
        return summary
    finally:
        distributed.teardown()


def stored_run(out: Path, epochs: int | None) -> RunConfig:
    """The settings of the run in `out` (its run.json), with the total epochs raised to `epochs` if given."""
    if not (out / RUN_FILE).is_file():
        raise VaekitError(f"{out}: nothing to resume (no {RUN_FILE})")
    run = RunConfig.from_dict(read_json(out / RUN_FILE), str(out / RUN_FILE))
    run.train.epochs = epochs or run.train.epochs
    return run


def _train(run: RunConfig, model: AE, data: Dataset, out: Path, info: distributed.Dist, device: torch.device,
           resume: bool, quiet: bool) -> dict[str, Any]:
    t = run.train
    run.model = model.config  # with the defaults filled in, so run.json says exactly what was built
    optimizer = make_optimizer(model, run)
    if info.is_main:
        write_json(out / RUN_FILE, run.to_dict())

    train_batches = Batches(data.train, t.batch_size, device, shuffle=True, seed=t.seed, binarize=run.data.binarize,
                            rank=info.rank, world=info.world, lockstep=True, workers=run.data.workers)
    val_batches = Batches(data.val, t.eval_batch_size, device, binarize=run.data.binarize, workers=run.data.workers,
                          rank=info.rank, world=info.world)
    steps_per_epoch = len(train_batches)
    total_steps = t.epochs * steps_per_epoch
    progress = {"epoch": 0, "step": 0, "batch": 0, "best_val": math.inf, "bad_epochs": 0}
    if resume and not (out / "checkpoints" / "latest").is_file() and not quiet:
        warn(f"{out}: no checkpoint to continue from (none was written yet, or they were deleted); training "
             "starts from the beginning")
    if resume and (out / "checkpoints" / "latest").is_file():
        folder, state, tensors = load_checkpoint(out)
        model.load_state_dict(AE.from_pretrained(folder).state_dict())
        progress = restore_training_state(state, tensors, optimizer)
        if info.rank > 0:  # only rank 0's RNG is stored; other ranks continue from a derived seed
            torch.manual_seed(t.seed + info.rank + 7919 * progress["step"])
    log = MetricsLog(out, keep_until_step=progress["step"]) if info.is_main else None
    meta = {"data": to_dict(run.data), "train": to_dict(run.train), "dataset": data.spec, "classes": data.classes}
    ddp_model = DDP(model) if info.world > 1 else model
    if t.compile:
        ddp_model = torch.compile(ddp_model)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=t.bf16 and device.type == "cuda")
    kl_warmup_steps = t.kl_warmup_epochs * steps_per_epoch
    params = list(model.parameters())
    bad_steps = 0
    if not quiet:
        for note in data.notes:
            say(f"data: {note}")
        say(f"data: labels: {data.label_source}")
        say(f"{model.kind.upper()} ({model.config.arch}, latent {model.latent_dim}, "
            f"{sum(p.numel() for p in params):,} parameters) on {data.describe()}, device {device}"
            + (f", {info.world} processes" if info.world > 1 else ""))

    def checkpoint(is_best: bool, metrics: dict[str, Any] | None = None) -> None:
        if bad_steps:  # the current weights just gave a non-finite loss: not worth keeping
            return
        if info.is_main:
            save_checkpoint(out, model, optimizer, dict(progress), {**meta, "metrics": metrics or {}}, is_best)
        info.barrier()

    model.train()
    while progress["epoch"] < t.epochs and progress["bad_epochs"] < (t.patience or math.inf):
        epoch = progress["epoch"]
        started = time.perf_counter()
        sums = torch.zeros(2, device=device)  # recon, kl: accumulated on the device, no per-step sync
        n_images = 0
        with bar(total=steps_per_epoch, initial=progress["batch"], desc=f"epoch {epoch + 1}/{t.epochs}",
                 disable=quiet) as shown:
            for x in train_batches.epoch(epoch, skip=progress["batch"]):
                step = progress["step"]
                lr = lr_at(step, total_steps, run)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                kl_weight = min(1.0, step / kl_warmup_steps) if kl_warmup_steps > 0 else 1.0
                with autocast:
                    loss = ddp_model(x, kl_weight)
                optimizer.zero_grad(set_to_none=True)
                loss.objective.backward()
                grad_norm = gradient_norm(params, t.grad_clip)
                if not torch.isfinite(grad_norm):  # a NaN/inf loss or gradient: skip this update (vdvae)
                    bad_steps += 1
                    if bad_steps >= t.max_bad_steps:
                        raise diverged(out, first_bad=step - bad_steps + 1, count=bad_steps, is_main=info.is_main)
                else:
                    bad_steps = 0
                    optimizer.step()
                sums += torch.stack([loss.recon.detach().sum(), loss.kl.detach().sum()]).float()
                n_images += len(x)
                progress["step"] += 1
                progress["batch"] += 1
                shown.update()
                if not shown.disable and (progress["batch"] % 20 == 0 or progress["batch"] == steps_per_epoch):
                    r, k = (v / n_images for v in sums.tolist())
                    shown.set_postfix(loss=f"{r + k:.2f}", recon=f"{r:.2f}", kl=f"{k:.2f}", refresh=False)
                if t.checkpoint_every and progress["step"] % t.checkpoint_every == 0 \
                        and progress["batch"] < steps_per_epoch:
                    checkpoint(is_best=False)
        seconds = time.perf_counter() - started
        r, k, n = info.sum(torch.cat([sums.double(), torch.tensor([float(n_images)], device=device)])).tolist()
        val = evaluate_loss(model, val_batches, info)
        row = {"epoch": epoch + 1, "step": progress["step"], "train_loss": (r + k) / max(n, 1),
               "train_recon": r / max(n, 1), "train_kl": k / max(n, 1), **{f"val_{k}": v for k, v in val.items()},
               "lr": lr_at(progress["step"] - 1, total_steps, run), "seconds": seconds,
               "images_per_s": n / seconds if seconds > 0 else 0.0}
        is_best = val["nelbo"] < progress["best_val"]
        progress.update(epoch=epoch + 1, batch=0, best_val=min(val["nelbo"], progress["best_val"]),
                        bad_epochs=0 if is_best else progress["bad_epochs"] + 1)
        if log is not None:
            log.add(row)
        if not quiet:
            say(f"epoch {epoch + 1}/{t.epochs}: train loss {row['train_loss']:.2f}  val "
                f"{loss_words(val, model.variational)}  {seconds:.1f}s{'  *best' if is_best else ''}")
        checkpoint(is_best, row)
    if progress["bad_epochs"] >= (t.patience or math.inf) and not quiet:
        say(f"early stop: no validation gain for {t.patience} epochs")
    return finish(out, run, data, device, info, quiet)


def finish(out: Path, run: RunConfig, data: Dataset, device: torch.device, info: distributed.Dist,
           quiet: bool) -> dict[str, Any]:
    """Test metrics of the best checkpoint, samples from N(0, I), summary.json."""
    best = AE.from_pretrained(out, map_location=device)
    test = evaluate_loss(best, Batches(data.test, run.train.eval_batch_size, device, binarize=run.data.binarize,
                                       rank=info.rank, world=info.world, workers=run.data.workers), info)
    summary = {"model": best.kind, "dataset": data.spec, "epochs": best.meta["progress"]["epoch"],
               "step": best.meta["progress"]["step"], "test": test}
    if info.is_main:
        with torch.no_grad():
            samples = best.sample(run.train.samples, generator=torch.Generator(device).manual_seed(run.train.seed))
        save_grid(samples, out / "samples.png")
        write_json(out / "summary.json", summary)
        if not quiet:
            say(f"test {loss_words(test, best.variational)} per image; samples from N(0, I) in "
                f"{out / 'samples.png'}")
    return summary
