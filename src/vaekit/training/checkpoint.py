"""Training checkpoints: everything needed to continue a run exactly, without pickle.

A run folder (layout.py) keeps `checkpoints/step-NNNNNNNN/` folders, each written under a temporary name
and renamed into place only when complete, and two small pointer files, `checkpoints/latest` and
`checkpoints/best`, each replaced atomically. A crash at any moment leaves the previous complete
checkpoint as the latest one.

Each checkpoint folder holds the model (what `load_model` reads, with run metadata and the training
progress) and the training state: optimizer tensors and RNG states, to continue exactly.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vaekit.config import RunConfig, from_dict, trained_data_config
from vaekit.errors import VaekitError, short
from vaekit.files import fsync_dir, parse_json, read_json, write_json, write_text
from vaekit.layout import CONFIG_FILE, STATE_JSON, STATE_TENSORS, WEIGHTS_FILE, RunFolder, step_of
from vaekit.models import Autoencoder, load_model
from vaekit.models.saving import checkpoint_meta, read_safetensors, write_safetensors


@dataclass
class Progress:
    """Where a run stands: stored in every checkpoint (state.json, and config.json for `info`)."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken (skipped non-finite steps included)
    batch: int = 0  # batches of the current epoch already seen
    best_val: float = math.inf  # the lowest validation loss so far
    bad_epochs: int = 0  # epochs since it last improved (early stopping)
    world: int = 0  # processes it was trained with (each a batch of --batch-size per step); 0: not recorded

    @classmethod
    def from_dict(cls, data: Any, where: str = "progress") -> Progress:
        """The fields this vaekit knows (others are ignored: a newer vaekit may add some), each checked: counts are
        non-negative integers, the best validation loss a number."""
        if not isinstance(data, dict):
            raise VaekitError(f"{where}: progress: expected a table of numbers, got {short(data)}")
        known = {f.name for f in fields(cls)}
        progress = from_dict(cls, {k: v for k, v in data.items() if k in known}, f"{where}: progress")
        if min(progress.epoch, progress.step, progress.batch, progress.bad_epochs) < 0 or progress.world < 0:
            raise VaekitError(f"{where}: progress: counts must not be negative ({short(data)})")
        if math.isnan(progress.best_val):
            raise VaekitError(f"{where}: progress.best_val: must be a number (inf before the first epoch), got nan")
        return progress

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
                    meta: dict[str, Any], is_best: bool, keep: int = 2, weights: dict[str, Tensor] | None = None
                    ) -> Path:
    """Write a complete checkpoint folder, then point `latest` (and `best`) at it. `weights`: the training weights
    where `model` holds their moving average (kept in the training state, for an exact resume)."""
    run = RunFolder(run_dir)
    final = run.step_folder(progress.step)
    folder, name = final.parent, final.name
    tmp = folder / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, meta={**meta, "progress": progress.to_dict()})
    tensors: dict[str, Tensor] = {}
    state = {"optimizer": pack(optimizer.state_dict(), tensors, "optimizer"), "rng": pack(rng_state(), tensors, "rng"),
             "progress": progress.to_dict(), **({"weights": pack(weights, tensors, "weights")} if weights else {})}
    write_safetensors(tmp / STATE_TENSORS, tensors)
    write_json(tmp / STATE_JSON, state)
    if final.exists():  # the same step again (a resumed run re-saving): replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(folder)
    write_text(run.pointer("latest"), name + "\n")
    if is_best:
        write_text(run.pointer("best"), name + "\n")
    _prune(run, keep)
    return final


def complete(folder: Path) -> bool:
    """A checkpoint folder with every file a resume reads."""
    return all((folder / name).is_file() for name in (CONFIG_FILE, WEIGHTS_FILE, STATE_JSON, STATE_TENSORS))


def resume_point(run_dir: Path) -> tuple[Path | None, str | None]:
    """The checkpoint a resumed run continues from: the one `latest` names, else (a pointer lost or damaged) the
    newest complete checkpoint folder, with why in words; (None, None) when the run has none."""
    run = RunFolder(run_dir)
    named = run.pointed("latest")
    if named is not None:
        return named, None
    found = [p for p in run.steps() if complete(p)]
    if not found:
        return None, None
    pointer = run.pointer("latest")
    if pointer.is_symlink() or pointer.exists() and not pointer.is_file():
        kind = "a link" if pointer.is_symlink() else "a folder" if pointer.is_dir() else "a special file"
        raise VaekitError(f"{pointer}: is {kind}, not the pointer file vaekit writes there; move it away and resume "
                          f"again (the newest complete checkpoint is {found[-1].name})")
    try:
        text = pointer.read_text(encoding="utf-8", errors="replace").strip() if pointer.exists() else None
        shown = short(text) if text is not None and re.fullmatch(r"[\w.-]{1,60}", text) else "something else"
        why = "is missing" if text is None else f"names {shown}, which is not a checkpoint of this run"
    except OSError as e:
        why = f"cannot be read ({e.strerror or e})"
    return found[-1], f"{pointer} {why}; continuing from {found[-1].name}, the newest complete checkpoint"


def load_checkpoint(folder: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """A checkpoint folder's training state: its JSON and its tensors."""
    try:
        state = parse_json((folder / STATE_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise VaekitError(f"{folder}: unreadable training state ({str(e)[:200]})") from None
    tensors = read_safetensors(folder / STATE_TENSORS)
    if not isinstance(state, dict) or not {"optimizer", "rng", "progress"} <= set(state):
        raise VaekitError(f"{folder / STATE_JSON}: not a vaekit training state (needs optimizer, rng, progress)")
    return state, tensors


def restore_weights(folder: Path, state: dict[str, Any], tensors: dict[str, Tensor], model: Autoencoder,
                    average: Any = None) -> None:
    """The checkpoint's weights into `model`: its training weights where it kept them beside their moving average
    (which goes into `average`), else the model it saved; a state that does not fit is refused in one line."""
    saved = load_model(folder).state_dict()
    if (average is None) != ("weights" not in state):
        raise VaekitError(f"{folder}: its training state {'lacks' if average else 'holds'} the training weights "
                          "kept beside a moving average (--ema-decay), which this run " +
                          ("keeps" if average else "does not keep") + "; start it again with --overwrite")
    try:
        model.load_state_dict(unpack(state["weights"], tensors) if average else saved)
        if average:
            average.model.load_state_dict(saved)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise VaekitError(f"{folder}: its weights do not fit this run ({type(e).__name__}: {str(e)[:200]}); start it "
                          "again with --overwrite") from None


def restore_training_state(folder: Path, state: dict[str, Any], tensors: dict[str, Tensor],
                           optimizer: torch.optim.Optimizer) -> Progress:
    """The optimizer's state and the random generators as the checkpoint in `folder` left them, and where the run
    stood; a state that does not fit this run is refused in one line naming the folder."""
    progress = Progress.from_dict(state["progress"], str(folder / STATE_JSON))
    try:
        saved = unpack(state["optimizer"], tensors)
        check_optimizer_state(saved, optimizer, progress.step)
        optimizer.load_state_dict(saved)
        set_rng_state(unpack(state["rng"], tensors))
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as e:
        raise VaekitError(f"{folder}: its training state does not fit this run ({type(e).__name__}: "
                          f"{str(e)[:200]}); start it again with --overwrite") from None
    return progress


def check_optimizer_state(saved: dict[str, Any], optimizer: torch.optim.Optimizer, step: int) -> None:
    """The optimizer state of a checkpoint holds what PyTorch would silently skip or take as it comes: a state for
    each parameter its groups name, none for any other, and every tensor of one the shape of its parameter (a state
    edited or from another run would make the resumed run no longer the uninterrupted one). Raises ValueError."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    ids = [i for group in saved["param_groups"] for i in group["params"]]
    if len(ids) != len(params) or len(set(ids)) != len(ids):
        raise ValueError(f"its optimizer names {len(ids)} parameters, this model has {len(params)}")
    shapes = dict(zip(ids, (p.shape for p in params)))
    kept = saved["state"]
    if set(kept) - set(ids) or step > 0 and set(kept) != set(ids):
        raise ValueError("its optimizer state is not one per parameter of its groups")
    for i, values in kept.items():
        for name, value in values.items():
            if isinstance(value, Tensor) and value.dim() and value.shape != shapes[i]:
                raise ValueError(f"its optimizer's {name} of parameter {i} has shape {tuple(value.shape)}, the "
                                 f"parameter {tuple(shapes[i])}")


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


def stored_run(out: Path, epochs: int | None) -> RunConfig:
    """The settings of the run in `out` (its run.json), with the total epochs raised to `epochs` if given."""
    file = RunFolder(out).run_json
    if not file.is_file():
        raise VaekitError(f"{out}: nothing to resume (no {file.name})")
    run = RunConfig.from_dict(read_json(file), str(file))
    check_data_of_checkpoint(out, run, file)
    return replace(run, train=replace(run.train, epochs=epochs or run.train.epochs))


IMAGES_READ = ("name", "image_size", "channels", "resize", "background", "labels", "classes", "val_fraction",
               "test_fraction", "binarize")  # the data settings that decide which images a run sees, and how


def check_data_of_checkpoint(out: Path, run: RunConfig, file: Path) -> None:
    """The data run.json names is the data its checkpoint was trained on, checked before any data is read (an edited
    run.json could name a huge folder, or another data set)."""
    folder, _ = resume_point(out)
    if folder is None:
        return  # nothing trained yet: the run starts again from run.json
    meta = checkpoint_meta(folder)  # its config.json alone: the weights are read once, by the resume itself
    if not meta.get("data"):
        return  # a checkpoint from before the data settings were kept
    trained = trained_data_config(meta)
    differs = next((k for k in IMAGES_READ if getattr(trained, k) != getattr(run.data, k)), None)
    if differs is not None:
        raise VaekitError(f"{file}: data.{differs} is {short(getattr(run.data, differs))}, but its checkpoint "
                          f"{folder.name} was trained with {short(getattr(trained, differs))}; resume cannot change "
                          "the data (train a new run for other data)")
