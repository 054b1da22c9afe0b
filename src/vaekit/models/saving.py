"""Model files: safetensors + JSON, never pickle; loading executes no code and trusts no number it reads.

A model folder (layout.py) holds config.json (format, version, the ModelConfig, run metadata),
model.safetensors (the weights) and, when the model has fitted priors, priors.safetensors.

Format versions: 1 (vaekit 0.1.0: no fitted priors; a top-level "kind" beside the model config), 2 (fitted
priors in their own file), 3 (the family: presets beyond ae and vae, their settings, the two-stage prior), 4
(conditioning: `conditional` and the label count `classes`) and 5 (discrete and spatial codes: `latent_channels`, the
codebook's and FSQ's settings, the code prior).
Older formats load; a newer one is refused with a message saying so.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vaekit.config import MAX_CLASSES, ModelConfig, from_dict, to_dict
from vaekit.errors import VaekitError, short
from vaekit.files import atomic_write, parse_json, utf8, write_json
from vaekit.layout import CONFIG_FILE, PRIORS_FILE, WEIGHTS_FILE, RunFolder
from vaekit.models.autoencoder import Autoencoder, check_size
from vaekit.models.samplers import SAMPLERS

FORMAT_VERSION = 5
READS_VERSIONS = (1, 2, 3, 4, 5)
MODEL_KEYS = ("format", "version", "kind", "model")  # config.json keys that are not run metadata


def save_model(model: Autoencoder, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write the model folder `path`: the weights, the fitted priors if any, then config.json (each atomically)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    write_safetensors(path / WEIGHTS_FILE, model.state_dict())
    save_priors(model, path)
    # "kind" repeats model.kind for readers of format 1 (vaekit 0.1.0 looks for it; loading ignores it)
    write_json(path / CONFIG_FILE, {"format": "vaekit", "version": FORMAT_VERSION, "kind": model.kind,
                                    "model": to_dict(model.config), **(meta or {})})
    return path


def save_priors(model: Autoencoder, folder: Path) -> None:
    """The fitted priors into priors.safetensors (one file, replaced atomically: a model never half-has one); a
    model without any leaves none behind from an earlier save into the same folder."""
    fitted = model.fitted_priors()
    if not fitted:
        (folder / PRIORS_FILE).unlink(missing_ok=True)
    else:
        write_safetensors(folder / PRIORS_FILE, {f"{name}.{key}": value for name, prior in fitted.items()
                                                 for key, value in prior.tensors().items()})


def write_safetensors(file: Path, tensors: dict[str, Tensor]) -> None:
    from safetensors.torch import save, save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_write(file) as tmp:
        if utf8(tmp):
            save_file(tensors, str(tmp))
        else:  # through Python's own file, which takes any name
            tmp.write_bytes(save(tensors))


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> Autoencoder:
    """A model folder, or a run folder's best (else latest) checkpoint. The weights file's declared shapes are
    checked against the config before the network is built (a config edited to ask for a huge network is refused
    before it is allocated)."""
    folder = resolve_checkpoint(path)
    config = read_model_config(folder)
    model_config = from_dict(ModelConfig, config["model"], f"{folder / CONFIG_FILE}: model")
    check_shapes(folder, model_config)
    check_size(model_config)
    model = Autoencoder(model_config)
    weights = read_safetensors(folder / WEIGHTS_FILE)
    bad = next((k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise VaekitError(f"{folder / WEIGHTS_FILE}: {bad} holds NaN or infinite values; refusing weights that "
                          "would decode every code to garbage")
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise VaekitError(f"{folder}: weights do not match the config ({what})")
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1].strip()
        raise VaekitError(f"{folder}: weights do not match the config ({first})") from None
    if (folder / PRIORS_FILE).is_file():
        load_priors(model, folder / PRIORS_FILE)
    model.meta = checkpoint_meta(folder, config)
    return model.to(map_location)


def checkpoint_meta(folder: Path, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """A checkpoint's run metadata (config.json beside its model), checked, without building the model or reading
    its weights; `config`: config.json where already read."""
    config = read_model_config(folder) if config is None else config
    return checked_meta({k: v for k, v in config.items() if k not in MODEL_KEYS}, folder / CONFIG_FILE)


COUNTS = ("epoch", "step", "batch", "bad_epochs", "world")  # the progress a checkpoint records


def checked_meta(meta: dict[str, Any], file: Path) -> dict[str, Any]:
    """The run metadata a checkpoint carries beside its model, each field vaekit reads checked as a flag would be:
    the data and training settings against their configs' ranges, the progress as counts, the class names as a
    list of at most MAX_CLASSES, metrics as numbers. A hand-edited or damaged field is one line naming it."""
    from vaekit.config import DataConfig, TrainConfig

    if meta.get("data"):
        from_dict(DataConfig, meta["data"], f"{file}: data")
    train = meta.get("train")
    if train:  # only shown (the card): an older vaekit's settings that this one no longer has are let be
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        from_dict(TrainConfig, {k: v for k, v in train.items() if k in known} if isinstance(train, dict) else train,
                  f"{file}: train")
    progress = meta.get("progress")
    if progress is not None and not (isinstance(progress, dict) and all(
            type(progress.get(k, 0)) is int and progress.get(k, 0) >= 0 for k in COUNTS)):
        raise VaekitError(f"{file}: progress: expected non-negative counts ({', '.join(COUNTS)}), got "
                          f"{short(progress)}")
    classes = meta.get("classes")
    if classes is not None and not (isinstance(classes, list) and len(classes) <= MAX_CLASSES):
        raise VaekitError(f"{file}: classes: expected a list of at most {MAX_CLASSES:,} names, got {short(classes)}")
    for key in ("metrics", "test"):
        value = meta.get(key)
        if value is not None and not (isinstance(value, dict) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) or v is None for v in value.values())):
            raise VaekitError(f"{file}: {key}: expected numbers by name, got {short(value)}")
    split = meta.get("data_split")
    if split is not None and not (isinstance(split, dict) and isinstance(split.get("fingerprint"), str) and all(
            type(split.get(k)) is int and split[k] >= 0 for k in ("train", "val", "test"))):
        raise VaekitError(f"{file}: data_split: expected a fingerprint and three image counts, got {short(split)}")
    if not isinstance(meta.get("dataset", ""), str):
        raise VaekitError(f"{file}: dataset: expected a data set's name, got {short(meta['dataset'])}")
    return meta


def load_priors(model: Autoencoder, file: Path) -> None:
    """Fitted priors from priors.safetensors, each checked against the model's code layout."""
    grouped: dict[str, dict[str, Tensor]] = {}
    for key, value in read_safetensors(file).items():
        name, _, part = key.partition(".")
        grouped.setdefault(name, {})[part] = value
    for name, tensors in grouped.items():
        if name not in SAMPLERS:
            raise VaekitError(f"{file}: unknown prior {name[:40]!r} (this vaekit knows: {', '.join(SAMPLERS)})")
        try:
            model.priors[name] = SAMPLERS[name].load(tensors, model.latent.grid, str(file))
        except ValueError as e:
            raise VaekitError(str(e)) from None


def read_safetensors(file: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load, load_file

    try:
        return load_file(str(file)) if utf8(file) else load(file.read_bytes())
    except (SafetensorError, OSError, ValueError) as e:
        raise VaekitError(f"{file}: not a readable safetensors file ({str(e)[:200]})") from None


MAX_HEADER = 100 << 20  # a safetensors header (JSON of names, types and shapes) is a few kB per thousand tensors


def declared_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    """The tensors a safetensors file declares, by name and shape, from its header alone (8 bytes of length, then
    JSON): nothing is allocated for the data."""
    try:
        with open(file, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 2 <= size <= min(MAX_HEADER, file.stat().st_size - 8):
                raise ValueError(f"a header of {size} bytes")
            header = parse_json(f.read(size).decode("utf-8"))
        return {name: tuple(entry["shape"]) for name, entry in header.items() if name != "__metadata__"}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise VaekitError(f"{file}: not a readable safetensors file ({str(e)[:200]})") from None


def check_shapes(folder: Path, config: ModelConfig) -> None:
    """The weights file declares the tensors of the network `config` describes, shape for shape (the network counted
    on the meta device), or the checkpoint is refused before anything is built."""
    declared = declared_shapes(folder / WEIGHTS_FILE)
    with torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in Autoencoder(config).state_dict().items()}
    wrong = next((n for n in sorted(expected) if declared.get(n) != expected[n]), None) or \
        next((n for n in sorted(declared) if n not in expected), None)
    if wrong is not None:
        what = f"{wrong!r}: {declared.get(wrong, 'missing')} where the config makes {expected.get(wrong, 'none')}"
        raise VaekitError(f"{folder}: weights do not match the config ({what[:200]})")


def checkpoint_files(path: str | Path) -> list[Path]:
    """What a command reading this checkpoint reads, where no output may go: the checkpoint folder and, for a run
    folder, all of it (its checkpoints, settings and summary, and the log and card a later --resume extends)."""
    run = RunFolder(Path(path))
    return [resolve_checkpoint(path), *((run.root,) if run.looks_like_run() else ())]


def resolve_checkpoint(path: str | Path) -> Path:
    """A model folder, a checkpoint folder, or a run folder (its best, else latest, checkpoint)."""
    path = Path(path)
    if not path.exists():
        raise VaekitError(f"{path}: no such checkpoint or run folder")
    if path.is_file():
        if path.name in (WEIGHTS_FILE, CONFIG_FILE):
            return path.parent
        named = RunFolder(path.parent.parent).pointed(path.name) if path.name in ("best", "latest") else None
        if named is not None:  # checkpoints/best: the step it names
            return named
        raise VaekitError(f"{path}: expected a checkpoint folder (model.safetensors + config.json), not a file; "
                          "vaekit never loads pickled checkpoints")
    if (path / CONFIG_FILE).is_file():
        return path
    run = RunFolder(path)
    for which in ("best", "latest"):
        target = run.pointed(which)
        if target is not None and (target / CONFIG_FILE).is_file():
            return target
    raise VaekitError(f"{path}: not a vaekit checkpoint or run folder (no config.json, no checkpoints/latest)")


def read_model_config(folder: Path) -> dict[str, Any]:
    """config.json, checked: a vaekit file of a format this version reads, with a consistent model section."""
    file = folder / CONFIG_FILE
    try:
        config = parse_json(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # not UTF-8, not JSON, nested too deep, or an integer of thousands of digits
        raise VaekitError(f"{file}: not a readable JSON config ({str(e)[:200]})") from None
    if not isinstance(config, dict) or config.get("format") != "vaekit":
        raise VaekitError(f"{file}: not a vaekit model config")
    version = config.get("version")
    if type(version) is not int or version < 1:
        raise VaekitError(f"{file}: no valid format version ({str(version)[:20]!r})")
    if version not in READS_VERSIONS:
        raise VaekitError(f"{file}: written by a newer vaekit (format {version}; this one reads formats "
                          f"{', '.join(map(str, READS_VERSIONS))}); upgrade vaekit to load it")
    if not isinstance(config.get("model"), dict):
        raise VaekitError(f"{file}: the 'model' section is missing")
    kind = config["model"].get("kind", ModelConfig.kind)
    if "kind" in config and config["kind"] != kind:  # format 1 wrote the kind twice
        raise VaekitError(f"{file}: says kind {str(config['kind'])[:20]!r} and model.kind {str(kind)[:20]!r}")
    return config
