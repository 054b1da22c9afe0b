"""The training loop: plain PyTorch, readable top to bottom.

for each epoch:
    for each batch x:        train_step: the preset's objective (e.g. recon + kl_weight * beta * KL),
                             backward, clip, skip the update if the loss or gradient is not finite, Adam step
    validation loss, metrics row, checkpoint (best and latest), early stopping
then: test metrics of the best checkpoint, samples from its prior, and the ex-post samplers fitted to its
training codes (a Gaussian mixture, a second-stage VAE), saved with it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from vaekit.config import RunConfig, to_dict
from vaekit.data import Batches, Dataset, data_paths, evaluation_view, load_dataset, map_batches
from vaekit.errors import VaekitError, warn
from vaekit.files import read_json, write_json, write_text
from vaekit.images import save_grid
from vaekit.layout import CARD_FILE, CONFIG_FILE, RunFolder
from vaekit.models import Autoencoder, build_model, load_model
from vaekit.models.card import model_card
from vaekit.models.footprint import check_batch, check_training_state
from vaekit.models.likelihoods import bits_note
from vaekit.models.objectives import mean_loss
from vaekit.models.samplers import FIT_CODES, fit_samplers, sizes
from vaekit.models.saving import resolve_checkpoint, save_priors
from vaekit.outputs import new_run_folder, resuming
from vaekit.progress import bar, say
from vaekit.training import distributed
from vaekit.training.checkpoint import (
    Progress,
    load_checkpoint,
    restore_training_state,
    restore_weights,
    resume_point,
    roll_back,
    save_checkpoint,
    stored_run,
)
from vaekit.training.log import MetricsLog, loss_words
from vaekit.training.step import StepLog, WeightAverage, check_train_config, lr_at, make_optimizer, train_step

CHECK_EVERY = 20  # steps between host reads of the steps' loss sums and finiteness (StepLog's buffer)


def diverged(out: Path, first_bad: int, count: int, is_main: bool) -> VaekitError:
    """The error that stops a diverged run, after dropping checkpoints of the weights that failed.

    Those weights came from the update just before the first failing step, so every checkpoint from
    that step on holds them; `latest` goes back to the newest one before it."""
    kept = roll_back(out, before_step=first_bad) if is_main else None
    where = f"the last good checkpoint is {kept}" if kept else "no checkpoint came before it"
    return VaekitError(f"training diverged: {count} steps in a row with a non-finite loss or gradient, or one over "
                       f"--skip-threshold (from step {first_bad}); {where}; try a lower --lr or --grad-clip")


def train(run: RunConfig | None, out: str | Path, *, resume: bool = False, epochs: int | None = None,
          overwrite: bool = False, quiet: bool = False, dataset: Dataset | None = None,
          inputs: Sequence[Path] = ()) -> dict[str, Any]:
    """Train the model described by `run`, writing everything into the run folder `out`.

    With `resume`, the run's stored settings are used (`run` may be None) and training continues from
    its latest checkpoint, or from the start if it was stopped before the first one; `epochs` may
    raise the total. The data and the model are checked before `out` is touched; `overwrite` replaces
    only a vaekit run, and only once the new one is complete; `inputs` (files the run reads, besides its
    data) may not lie in `out`. `run` itself is never changed. Returns the summary (test metrics of the best
    checkpoint), also in summary.json."""
    out = Path(out)
    if resume:
        run = stored_run(out, epochs)
    elif run is None:
        raise ValueError("train() needs a RunConfig unless it resumes")
    check_train_config(run)
    info, device = distributed.setup(run.train.device)
    try:
        data = dataset or evaluation_view(load_dataset(run.data), run.data)
        torch.manual_seed(run.train.seed + info.rank)
        classes = data.label_count(why="--conditional") if run.model.conditional else 0
        model = build_model(replace(run.model, image_shape=data.shape, classes=classes)).to(device)
        run = replace(run, model=model.config)  # with the defaults filled in: run.json says what was built
        check_batches(run, data, device)
        with ExitStack() as stack:
            if info.is_main:  # the run folder is this run's alone while it runs
                stack.enter_context(resuming(out) if resume else new_run_folder(out, overwrite,
                                                                                [*inputs, *data_paths(run.data)]))
            info.barrier()
            session = start(run, model, data, RunFolder(out), info, device, resume, quiet or not info.is_main)
            while session.more_epochs():
                end_epoch(session, *run_epoch(session))
            summary = finish(session)
            info.barrier()  # every rank done before any tears down: gloo aborts a rank that leaves first
        return summary
    finally:
        distributed.teardown()


def check_batches(run: RunConfig, data: Dataset, device: torch.device) -> None:
    """A training step and an evaluation batch fit in the memory the device has free, or the run is refused before
    it starts."""
    t = run.train
    check_training_state(run.model, device, average=t.ema_decay > 0)
    check_batch(run.model, max(1, min(t.batch_size, len(data.train))), "--batch-size", training=True, device=device)
    check_batch(run.model, max(1, min(t.eval_batch_size, max(len(data.val), len(data.test)))), "--eval-batch-size",
                device=device)


@dataclass
class Session:
    """What one training run holds while it runs."""

    run: RunConfig
    model: Autoencoder
    step_model: nn.Module  # the model wrapped for training: DDP and/or torch.compile
    optimizer: torch.optim.Optimizer
    data: Dataset
    out: RunFolder
    info: distributed.Dist
    device: torch.device
    quiet: bool
    progress: Progress
    log: MetricsLog | None
    train_batches: Batches
    val_batches: Batches
    steps_per_epoch: int  # len(train_batches), counted once: it builds an epoch's permutation
    steps: StepLog  # the steps' loss sums and bad-step count, read from the device every CHECK_EVERY steps
    average: WeightAverage | None = None  # the weights' moving average (--ema-decay), what is validated and kept

    @property
    def kept(self) -> Autoencoder:
        """The model validated and saved: the weights' moving average where there is one."""
        return self.average.model if self.average else self.model

    def more_epochs(self) -> bool:
        t, p = self.run.train, self.progress
        return p.epoch < t.epochs and p.bad_epochs < (t.patience or math.inf)

    @property
    def total_steps(self) -> int:
        return self.run.train.epochs * self.steps_per_epoch

    def checkpoint(self, is_best: bool, metrics: dict[str, Any] | None = None) -> None:
        self.steps.flush()
        if self.steps.streak:  # the current weights just gave a non-finite loss: not worth keeping
            return
        if self.info.is_main:
            meta = {"data": to_dict(self.run.data), "train": to_dict(self.run.train), "dataset": self.data.spec,
                    "classes": self.data.classes, "data_split": self.data.split_record(), "metrics": metrics or {}}
            save_checkpoint(self.out.root, self.kept, self.optimizer, self.progress, meta, is_best,
                            weights=self.model.state_dict() if self.average else None)
        self.info.barrier()


def start(run: RunConfig, model: Autoencoder, data: Dataset, out: RunFolder, info: distributed.Dist,
          device: torch.device, resume: bool, quiet: bool) -> Session:
    """Everything a run needs before its first step: optimizer, batches, the resumed state, the log."""
    t = run.train
    optimizer = make_optimizer(model, run)
    if info.is_main:
        write_json(out.run_json, run.to_dict())
    average = WeightAverage(model, t.ema_decay) if t.ema_decay else None
    progress = resumed(run, model, optimizer, out, info, average) if resume else Progress(world=info.world)
    step_model = DDP(model) if info.world > 1 else model  # DDP gives every rank rank 0's weights
    if average and progress.step == 0:  # a run from its start (a resume without a checkpoint too)
        average.model.load_state_dict(model.state_dict())  # so the average starts from them too
    if t.compile:
        step_model = torch.compile(step_model)
    shared = {"binarize": run.data.binarize, "workers": run.data.workers, "rank": info.rank, "world": info.world}
    train_batches = Batches(data.train, t.batch_size, device, shuffle=True, seed=t.seed, lockstep=True, **shared)
    session = Session(run, model, step_model, optimizer, data, out, info, device, quiet, progress,
                      MetricsLog(out, keep_until_step=progress.step) if info.is_main else None, train_batches,
                      Batches(data.val, t.eval_batch_size, device, **shared), len(train_batches),
                      StepLog(t.max_bad_steps, device, CHECK_EVERY), average)
    if resume:
        check_progress(session)
    if not quiet:
        announce(session)
    return session


def check_progress(s: Session) -> None:
    """A resumed run's progress fits the run: a batch within an epoch (else one line naming the state file); a run
    that has no epochs left to train says so."""
    p, t = s.progress, s.run.train
    if p.batch >= s.steps_per_epoch > 0:
        raise VaekitError(f"{s.out.root}: its training state stands at batch {p.batch} of an epoch, and an epoch of "
                          f"this run has {s.steps_per_epoch} batches; the state is not this run's")
    if p.epoch >= t.epochs and s.info.is_main:
        warn(f"{s.out.root}: nothing left to train: it has run {p.epoch} epochs and --epochs asks for {t.epochs} "
             "(raise --epochs to train more); its best checkpoint is measured again")


def resumed(run: RunConfig, model: Autoencoder, optimizer: torch.optim.Optimizer, out: RunFolder,
            info: distributed.Dist, average: WeightAverage | None = None) -> Progress:
    """The weights (and their moving average), optimizer and random state of the checkpoint a resumed run continues
    from (`resume_point`), and where it stood; every change from an uninterrupted run is said in one line (never
    under --quiet's silence)."""
    folder, why = resume_point(out.root)
    if folder is None:
        if info.is_main:
            warn(f"{out.root}: no checkpoint to continue from (none was written yet, or they were deleted); training "
                 "starts from the beginning")
        return Progress(world=info.world)
    if why and info.is_main:
        warn(why)
        write_text(out.pointer("latest"), folder.name + "\n")
    state, tensors = load_checkpoint(folder)
    restore_weights(folder, state, tensors, model, average)
    progress = restore_training_state(folder, state, tensors, optimizer)
    if progress.world and progress.world != info.world and info.is_main:
        b = run.train.batch_size
        warn(f"{out.root} was trained with {progress.world} process{'es' * (progress.world > 1)} ({b} images each, "
             f"{b * progress.world} a step) and continues with {info.world} ({b * info.world} a step): the steps see "
             "other batches than an uninterrupted run would, so it no longer reproduces one")
    if info.rank > 0:  # only rank 0's RNG is stored; other ranks continue from a derived seed
        torch.manual_seed(run.train.seed + info.rank + 7919 * progress.step)
    return replace(progress, world=info.world)


def announce(s: Session) -> None:
    for note in s.data.notes:
        say(f"data: {note}")
    say(f"data: labels: {s.data.label_source}")
    m = s.model
    conditional = f", conditional on {m.classes} classes" if m.classes else ""
    say(f"{m.preset.label} ({m.config.arch}, latent {m.latent_dim}{conditional}, "
        f"{sum(p.numel() for p in m.parameters()):,} parameters) on {s.data.describe()}, device {s.device}"
        + (f", {s.info.world} processes" if s.info.world > 1 else ""))


def run_epoch(s: Session) -> tuple[float, int]:
    """One pass over this rank's batches; returns the seconds it took and the images seen. Nothing in a step
    waits for the device: each step's loss sums and finiteness go to `s.steps`, read every CHECK_EVERY steps."""
    t, p = s.run.train, s.progress
    steps_per_epoch, total_steps = s.steps_per_epoch, s.total_steps
    kl_warmup_steps = t.kl_warmup_epochs * steps_per_epoch
    autocast = torch.autocast(s.device.type, dtype=torch.bfloat16, enabled=t.bf16 and s.device.type == "cuda")
    s.model.train()
    s.steps.new_epoch()
    started, n_images = time.perf_counter(), 0
    with bar(total=steps_per_epoch, initial=p.batch, desc=f"epoch {p.epoch + 1}/{t.epochs}", disable=s.quiet) as shown:
        for x, y in s.train_batches.epoch(p.epoch, skip=p.batch):
            for group in s.optimizer.param_groups:
                group["lr"] = lr_at(p.step, total_steps, s.run)
            kl_weight = min(1.0, p.step / kl_warmup_steps) if kl_warmup_steps > 0 else 1.0
            result = train_step(s.step_model, s.optimizer, x, y=y, kl_weight=kl_weight, grad_clip=t.grad_clip,
                                skip_threshold=t.skip_threshold, autocast=autocast)
            if s.average:
                s.average.update(s.model, result.bad)
            s.steps.add(result, len(x), p.step)
            n_images += len(x)
            p.step, p.batch = p.step + 1, p.batch + 1
            shown.update()
            checkpoint_due = bool(t.checkpoint_every) and p.step % t.checkpoint_every == 0
            if p.batch % CHECK_EVERY == 0 or p.batch == steps_per_epoch or checkpoint_due:
                stop_if_diverged(s)
                n = max(s.steps.images, 1)
                shown.set_postfix(loss=f"{s.steps.total / n:.2f}", recon=f"{s.steps.recon / n:.2f}",
                                  kl=f"{s.steps.kl / n:.2f}", refresh=False)
            if checkpoint_due and p.batch < steps_per_epoch:
                s.checkpoint(is_best=False)
    stop_if_diverged(s)  # the steps since the last read (an epoch can end early: batches of unreadable images)
    return time.perf_counter() - started, n_images


def stop_if_diverged(s: Session) -> None:
    """Raise once `max_bad_steps` steps in a row were not finite (one host read of the steps since the last)."""
    s.steps.flush()
    if s.steps.tripped is not None:
        raise diverged(s.out.root, first_bad=s.steps.tripped, count=s.steps.limit, is_main=s.info.is_main)


def end_epoch(s: Session, seconds: float, n_images: int) -> None:
    """Validation, the metrics row, early-stopping bookkeeping and the epoch's checkpoint."""
    p, t, log = s.progress, s.run.train, s.steps
    where = s.device if s.info.world > 1 else "cpu"  # the all-reduce needs the device; MPS has no float64
    r, k, b, n, seen = s.info.sum(torch.tensor([log.recon, log.kl, log.total, log.images, n_images],
                                               dtype=torch.float64, device=where)).tolist()
    n = n or math.nan  # no step updated the weights: the epoch's training loss is not a number
    val = mean_loss(s.kept, s.val_batches, s.info.sum)
    row = {"epoch": p.epoch + 1, "step": p.step, "train_loss": b / n, "train_recon": r / n,
           "train_kl": k / n, **{f"val_{key}": v for key, v in val.items()},
           "lr": lr_at(p.step - 1, s.total_steps, s.run), "seconds": seconds,
           "images_per_s": seen / seconds if seconds > 0 else 0.0}
    is_best = val["loss"] < p.best_val
    p.epoch, p.batch, p.best_val = p.epoch + 1, 0, min(val["loss"], p.best_val)
    p.bad_epochs = 0 if is_best else p.bad_epochs + 1
    if s.log is not None:
        s.log.add(row)
    if not s.quiet:
        latent = s.model.latent
        used = f"  codes used {val['codes_used']}/{latent.codebook_size}" if latent.discrete else ""
        say(f"epoch {p.epoch}/{t.epochs}: train loss {row['train_loss']:.2f}  val "
            f"{loss_words(val, s.model.has_density)}{used}  {seconds:.1f}s{'  *best' if is_best else ''}")
    s.checkpoint(is_best, row)
    if not s.more_epochs() and p.bad_epochs >= (t.patience or math.inf) and not s.quiet:
        say(f"early stop: no validation gain for {t.patience} epochs")


def finish(s: Session) -> dict[str, Any]:
    """Test metrics of the best checkpoint, samples from its prior, summary.json, and the ex-post samplers fitted
    to its training codes, saved beside its weights."""
    run, out, device = s.run, s.out, s.device
    if out.pointed("latest") is None:  # every checkpoint was skipped: the weights never gave a finite step
        raise VaekitError(f"training diverged: none of its {s.progress.step} steps had a finite loss and gradient, so "
                          "no checkpoint was written; try a lower --lr or --grad-clip")
    best = load_model(out.root, map_location=device)
    shared = {"binarize": run.data.binarize, "workers": run.data.workers}
    test = mean_loss(best, Batches(s.data.test, run.train.eval_batch_size, device, rank=s.info.rank,
                                   world=s.info.world, **shared), s.info.sum)
    summary = {"model": best.kind, "dataset": s.data.spec, "epochs": best.meta["progress"]["epoch"],
               "step": best.meta["progress"]["step"], "test": test}
    if s.info.is_main:
        with torch.no_grad():
            n, row = best.conditioning.grid(run.train.samples)  # conditional: one row per class
            samples = best.sample(n, generator=torch.Generator(device).manual_seed(run.train.seed))
        save_grid(samples, out.samples, nrow=row)
        write_json(out.summary, summary)
        if not s.quiet:
            say(f"test {loss_words(test, best.has_density)} per image ({bits_note(best.config.likelihood)}); "
                f"samples from {best.prior.words} in {out.samples}")
        add_samplers(best, s)
        write_cards(best, s.out, summary["test"])
    return summary


def write_cards(best: Autoencoder, out: RunFolder, test: dict[str, Any]) -> None:
    """The model card, in the run folder and in its best checkpoint's folder (the one to push to a hub)."""
    folder = resolve_checkpoint(out.root)
    card = model_card(read_json(folder / CONFIG_FILE), test, priors=list(best.priors))
    for target in (out.card, folder / CARD_FILE):
        write_text(target, card)


def add_samplers(best: Autoencoder, s: Session) -> None:
    """Fit the ex-post samplers the run asks for to the best model's training codes and save them into its
    checkpoint folder; a fit that fails (codes that are not finite) costs the run nothing but that sampler."""
    t = s.run.train
    codes = lambda: map_batches(best.embed, s.data.train, t.eval_batch_size, best.device, limit=FIT_CODES)  # noqa: E731
    for name, prior in fit_samplers(codes, sizes(t), t.seed, best.latent, best.device, s.quiet).items():
        best.priors[name] = prior
        if not s.quiet:
            say(f"prior {name!r}: {best.priors[name].words}, saved with the best checkpoint "
                f"(vaekit sample {s.out.root} --prior {name})")
    if best.fitted_priors():
        save_priors(best, resolve_checkpoint(s.out.root))
