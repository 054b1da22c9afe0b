"""Training checkpoints: everything needed to continue a run exactly, without pickle.

A run folder (layout.py) keeps `checkpoints/step-NNNNNNNN/` folders, each written under a temporary name
and renamed into place only when complete, and two small pointer files, `checkpoints/latest` and
`checkpoints/best`, each replaced atomically. A crash at any moment leaves the previous complete
checkpoint as the latest one.

Each checkpoint folder holds the model (what `load_model` reads, with run metadata and the training
progress) and the training state: optimizer tensors and RNG states, to continue exactly.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vaekit.errors import VaekitError
from vaekit.files import fsync_dir, write_text
from vaekit.layout import STATE_JSON, STATE_TENSORS, RunFolder, step_of
from vaekit.models import Autoencoder


@dataclass
class Progress:
    """Where a run stands: stored in every checkpoint (state.json, and config.json for `info`)."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken (skipped non-finite steps included)
    batch: int = 0  # batches of the current epoch already seen
    best_val: float = math.inf  # the lowest validation loss so far
    bad_epochs: int = 0  # epochs since it last improved (early stopping)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Progress:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pack(obj: Any, tensors: dict[str, Tensor], key: str = "t") -> Any:
    """Split a state dict into JSON-able structure and a flat dict of tensors for safetensors."""
    if isinstance(obj, Tensor):
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if obj and all(isinstance(k, int) for k in obj):  # optimizer state is keyed by parameter index
            return {"__int_keys__": [[k, pack(v, tensors, f"{key}.{k}")] for k, v in obj.items()]}
        return {str(k): pack(v, tensors, f"{key}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [pack(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]
    return obj


def unpack(obj: Any, tensors: dict[str, Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__int_keys__" in obj:
            return {int(k): unpack(v, tensors) for k, v in obj["__int_keys__"]}
        return {k: unpack(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unpack(v, tensors) for v in obj]
    return obj


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, model: Autoencoder, optimizer: torch.optim.Optimizer, progress: Progress,
                    meta: dict[str, Any], is_best: bool, keep: int = 2) -> Path:
    """Write a complete checkpoint folder, then point `latest` (and `best`) at it."""
    from safetensors.torch import save_file

    run = RunFolder(run_dir)
    final = run.step_folder(progress.step)
    folder, name = final.parent, final.name
    tmp = folder / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, meta={**meta, "progress": progress.to_dict()})
    tensors: dict[str, Tensor] = {}
    state = {"optimizer": pack(optimizer.state_dict(), tensors, "optimizer"), "rng": pack(rng_state(), tensors, "rng"),
             "progress": progress.to_dict()}
    save_file(tensors, str(tmp / STATE_TENSORS))
    (tmp / STATE_JSON).write_text(json.dumps(state, indent=1), encoding="utf-8")
    for f in tmp.iterdir():
        with open(f, "rb") as handle:
            os.fsync(handle.fileno())
    if final.exists():  # the same step again (a resumed run re-saving): replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(folder)
    write_text(run.pointer("latest"), name + "\n")
    if is_best:
        write_text(run.pointer("best"), name + "\n")
    _prune(run, keep)
    return final


def load_checkpoint(run_dir: Path) -> tuple[Path, dict[str, Any], dict[str, Tensor]]:
    """The latest checkpoint folder of a run, its state JSON and its state tensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = RunFolder(run_dir).pointed("latest")
    if folder is None:
        raise VaekitError(f"{run_dir}: no checkpoint to resume from (checkpoints/latest is missing)")
    try:
        state = json.loads((folder / STATE_JSON).read_text(encoding="utf-8"))
        tensors = load_file(str(folder / STATE_TENSORS))
    except (OSError, json.JSONDecodeError, SafetensorError) as e:
        raise VaekitError(f"{folder}: unreadable training state ({e})") from None
    return folder, state, tensors


def restore_training_state(state: dict[str, Any], tensors: dict[str, Tensor],
                           optimizer: torch.optim.Optimizer) -> Progress:
    optimizer.load_state_dict(unpack(state["optimizer"], tensors))
    set_rng_state(unpack(state["rng"], tensors))
    return Progress.from_dict(state["progress"])


def roll_back(run_dir: Path, before_step: int) -> Path | None:
    """Drop checkpoints from `before_step` on and point `latest` at the newest one before it."""
    run = RunFolder(run_dir)
    steps = run.steps()
    good = [p for p in steps if step_of(p) < before_step]
    for p in steps:
        if p not in good:
            shutil.rmtree(p, ignore_errors=True)
    if not good:
        run.pointer("latest").unlink(missing_ok=True)
        return None
    write_text(run.pointer("latest"), good[-1].name + "\n")
    if run.pointer("best").is_file() and run.pointed("best") is None:
        run.pointer("best").unlink()
    return good[-1]


def _prune(run: RunFolder, keep: int) -> None:
    """Delete old checkpoint folders, keeping the newest `keep` and the ones `latest` and `best` name."""
    protected = {run.pointed("latest"), run.pointed("best")}
    steps = run.steps()
    for folder in steps[:-keep] if keep else steps:
        if folder not in protected:
            shutil.rmtree(folder, ignore_errors=True)
    for stale in run.checkpoints.glob(".step-*.tmp"):  # left by a crash mid-write
        shutil.rmtree(stale, ignore_errors=True)
