"""Training checkpoints: everything needed to continue a run exactly, without pickle.

A run folder keeps `checkpoints/step-NNNNNNNN/` folders, each written under a temporary name and
renamed into place only when complete, and two small pointer files, `checkpoints/latest` and
`checkpoints/best`, each replaced atomically. A crash at any moment leaves the previous complete
checkpoint as the latest one.

Each checkpoint folder holds:
  model.safetensors + config.json   the model (what `VAE.from_pretrained` reads) with run metadata
  state.safetensors + state.json    optimizer tensors and RNG states / the rest of the optimizer state
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vaekit.errors import VaekitError
from vaekit.files import fsync_dir, write_text
from vaekit.models.autoencoder import AE

STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"


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


def save_checkpoint(run_dir: Path, model: AE, optimizer: torch.optim.Optimizer, progress: dict[str, Any],
                    meta: dict[str, Any], is_best: bool, keep: int = 2) -> Path:
    """Write a complete checkpoint folder, then point `latest` (and `best`) at it."""
    from safetensors.torch import save_file

    folder = run_dir / "checkpoints"
    name = f"step-{progress['step']:08d}"
    tmp = folder / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, meta={**meta, "progress": progress})
    tensors: dict[str, Tensor] = {}
    state = {"optimizer": pack(optimizer.state_dict(), tensors, "optimizer"), "rng": pack(rng_state(), tensors, "rng"),
             "progress": progress}
    save_file(tensors, str(tmp / STATE_TENSORS))
    (tmp / STATE_JSON).write_text(json.dumps(state, indent=1), encoding="utf-8")
    for f in tmp.iterdir():
        with open(f, "rb") as handle:
            os.fsync(handle.fileno())
    final = folder / name
    if final.exists():  # the same step again (a resumed run re-saving): replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(folder)
    write_text(folder / "latest", name + "\n")
    if is_best:
        write_text(folder / "best", name + "\n")
    _prune(folder, keep)
    return final


def load_checkpoint(run_dir: Path) -> tuple[Path, dict[str, Any], dict[str, Tensor]]:
    """The latest checkpoint folder of a run, its state JSON and its state tensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    pointer = run_dir / "checkpoints" / "latest"
    if not pointer.is_file():
        raise VaekitError(f"{run_dir}: no checkpoint to resume from (checkpoints/latest is missing)")
    folder = run_dir / "checkpoints" / pointer.read_text().strip()
    try:
        state = json.loads((folder / STATE_JSON).read_text(encoding="utf-8"))
        tensors = load_file(str(folder / STATE_TENSORS))
    except (OSError, json.JSONDecodeError, SafetensorError) as e:
        raise VaekitError(f"{folder}: unreadable training state ({e})") from None
    return folder, state, tensors


def restore_training_state(state: dict[str, Any], tensors: dict[str, Tensor], optimizer: torch.optim.Optimizer) -> dict:
    optimizer.load_state_dict(unpack(state["optimizer"], tensors))
    set_rng_state(unpack(state["rng"], tensors))
    return state["progress"]


def roll_back(run_dir: Path, before_step: int) -> Path | None:
    """Drop checkpoints from `before_step` on and point `latest` at the newest one before it."""
    folder = run_dir / "checkpoints"
    steps = sorted(p for p in folder.glob("step-*") if p.is_dir())
    good = [p for p in steps if int(p.name.split("-")[1]) < before_step]
    for p in steps:
        if p not in good:
            shutil.rmtree(p, ignore_errors=True)
    if not good:
        (folder / "latest").unlink(missing_ok=True)
        return None
    write_text(folder / "latest", good[-1].name + "\n")
    best = folder / "best"
    if best.is_file() and not (folder / best.read_text().strip()).is_dir():
        best.unlink()
    return good[-1]


def _prune(folder: Path, keep: int) -> None:
    """Delete old checkpoint folders, keeping the newest `keep` and the best one."""
    protected = {(folder / p).read_text().strip() for p in ("latest", "best") if (folder / p).is_file()}
    steps = sorted(p.name for p in folder.glob("step-*") if p.is_dir())
    for name in steps[:-keep] if keep else steps:
        if name not in protected:
            shutil.rmtree(folder / name, ignore_errors=True)
    for stale in folder.glob(".step-*.tmp"):  # left by a crash mid-write
        shutil.rmtree(stale, ignore_errors=True)
