"""The training step never waits for the device: no `.item()`, `bool(tensor)` or `.tolist()` in it, so a GPU runs
ahead of Python. Counted here with a TorchFunctionMode that sees every such call (the CPU's equivalent of
`torch.cuda.set_sync_debug_mode`, which these tests also switch on where a GPU exists)."""

from __future__ import annotations

import math
from contextlib import contextmanager

import pytest
import torch
from torch.overrides import TorchFunctionMode

from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaekit.models import build_model
from vaekit.training import train, train_step
from vaekit.training.step import StepLog, StepResult, WeightAverage, make_optimizer

SYNCS = {"item", "__bool__", "tolist", "__float__", "__int__", "__index__", "numpy", "cpu"}
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


class HostReads(TorchFunctionMode):
    """Records every call that copies a tensor's value to the host (each one a wait on a GPU)."""

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in SYNCS:
            self.calls.append(func.__name__)
        return func(*args, **(kwargs or {}))


@contextmanager
def no_cuda_sync(device: str):
    """On a GPU, make any synchronising CUDA call in the block an error."""
    if device != "cuda":
        yield
        return
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_the_counter_sees_host_reads():
    """The check below would prove nothing if the mode missed Tensor methods."""
    t = torch.ones(2)
    with HostReads() as reads:
        bool(t.sum() > 0), t.sum().item(), t.tolist(), float(t[0])
    assert reads.calls == ["__bool__", "item", "tolist", "__float__"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("preset", ["vae", "ae"])
def test_a_training_step_reads_nothing_back_from_the_device(device, preset):
    model = build_model(ModelConfig(kind=preset, image_shape=(1, 8, 8))).to(device)
    optimizer = make_optimizer(model, RunConfig(data=DataConfig(name="digits")))
    fused = optimizer.defaults.get("fused")  # PyTorch < 2.4 has no fused Adam on a CPU: one read a step there
    good, bad = torch.rand(16, 1, 8, 8, device=device), torch.rand(16, 1, 8, 8, device=device)
    bad[0, 0, 0, 0] = float("nan")
    log = StepLog(limit=3, device=torch.device(device))
    average = WeightAverage(model, 0.99)  # --ema-decay's update runs on the device too
    train_step(model, optimizer, good)  # the first step builds the optimizer state (allocations, not reads)
    with HostReads() as reads, no_cuda_sync(device):
        for step, x in enumerate([good, bad, good, bad, bad]):
            result = train_step(model, optimizer, x, grad_clip=1.0, skip_threshold=1e6)
            average.update(model, result.bad)
            log.add(result, len(x), step)
    assert reads.calls == ([] if fused else ["__bool__"] * 5)
    log.flush()  # the one read: two bad in a row, under the limit of 3; the good steps' sums kept
    assert log.tripped is None and log.streak == 2 and log.images == 32 and math.isfinite(log.recon) and log.recon > 0


def test_bad_steps_are_counted_in_a_row_and_report_where_the_streak_began():
    """Streaks span flushes and epochs; bad steps add nothing to the sums."""
    from vaekit.models import Loss

    log = StepLog(limit=3, device=torch.device("cpu"), size=4)
    pattern = [0, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1]  # the first run of three bad steps begins at step 4
    for step, bad in enumerate(pattern):
        value = torch.tensor([float("nan") if bad else 2.0])
        result = StepResult(Loss(value, value / 2, value.mean()), value, torch.tensor(bool(bad)))
        log.add(result, 1, step)
        if step == 5:
            assert log.streak == 0 and log.tripped is None  # read up to step 3 (good); 4 and 5 not yet
            log.new_epoch()
    log.flush()
    assert log.tripped == 4 and log.streak == 3
    assert (log.recon, log.kl, log.images) == (2.0, 1.0, 1)  # since the new epoch: step 8 alone was good


def test_an_epoch_reads_the_device_only_every_few_steps(tmp_path, monkeypatch):
    """A whole training epoch (batches, steps, loss sums, the divergence guard) reads values back once per
    CHECK_EVERY steps, not once per step."""
    from vaekit.training import trainer

    counted = []

    def counting(session):
        with HostReads() as reads:
            result = run_epoch(session)
        counted.append((session.steps_per_epoch, len(reads.calls)))
        return result

    run_epoch = trainer.run_epoch
    monkeypatch.setattr(trainer, "run_epoch", counting)
    train(RunConfig(data=DataConfig(name="digits"), train=TrainConfig(epochs=1, batch_size=8, samples=4,
                                                                      gmm_components=0)), tmp_path / "run", quiet=True)
    (steps, reads), = counted
    assert steps > 100 and steps // trainer.CHECK_EVERY <= reads <= steps // trainer.CHECK_EVERY + 2
