"""Configs: typed dataclasses that round-trip through JSON and live inside every checkpoint.

A run is fully described by three configs: what the model is (`ModelConfig`), where the images
come from (`DataConfig`) and how it is trained (`TrainConfig`). Config files (TOML or YAML) use one
section per config; unknown keys and wrong types are refused with a clear message.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union

from vaekit.errors import VaekitError

T = TypeVar("T")


@dataclass
class ModelConfig:
    """The architecture and the objective; enough to rebuild the model without the command line."""

    kind: str = "vae"  # "vae" or "ae"
    image_shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W)
    arch: str = "auto"  # "mlp", "conv" or "auto" (chosen from the image shape)
    latent_dim: int = 0  # 0: a default chosen from the image shape
    hidden: tuple[int, ...] = ()  # MLP hidden widths; (): a default chosen from the image shape
    channels: tuple[int, ...] = ()  # conv channels per down-sampling; (): default
    likelihood: str = "bernoulli"  # "bernoulli" (logits) or "gaussian"
    gaussian_scale: float = 0.0  # fixed sigma of the Gaussian decoder; 0: learned
    beta: float = 1.0  # weight of the KL term (beta-VAE when != 1)
    free_bits: float = 0.0  # nats per latent dimension below which the KL is not penalised
    logvar_min: float = -30.0
    logvar_max: float = 20.0


@dataclass
class DataConfig:
    """Where images come from and how they are split."""

    name: str = "fashion-mnist"  # fashion-mnist, mnist, digits, folder:PATH, npz:PATH / npy:PATH
    data_dir: str = ""  # cache folder; "": $VAEKIT_DATA or ~/.cache/vaekit
    image_size: int = 0  # resize folder images to this square size; 0: keep (all must match)
    channels: int = 0  # 1 or 3 for folders; 0: decided from the images
    val_fraction: float = 0.1  # part of the training set held out for validation
    test_fraction: float = 0.1  # for sets without an official test split
    binarize: bool = False  # dynamic binarization: x ~ Bernoulli(pixel) each time a batch is drawn
    download: bool = True  # allowed to download when no local copy exists
    skip_bad_images: bool = False  # skip unreadable files in image folders (with a warning) instead of stopping
    max_in_memory_gb: float = 4.0  # larger folders stream from disk through a DataLoader
    workers: int = 2  # DataLoader workers for streamed folders


@dataclass
class TrainConfig:
    """How to train: optimisation, schedule, checkpoints, devices."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"  # "adam" or "adamw"
    weight_decay: float = 0.0
    schedule: str = "constant"  # "constant" or "cosine"
    lr_warmup_steps: int = 0
    kl_warmup_epochs: float = 0.0  # KL weight ramps linearly from 0 to beta over this many epochs
    grad_clip: float = 0.0  # max global gradient norm; 0: no clipping
    patience: int = 0  # early stopping after this many epochs without validation gain; 0: off
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:1, mps
    bf16: bool = False  # bf16 autocast (GPU only)
    compile: bool = False  # torch.compile the model for training (costs compile time up front)
    checkpoint_every: int = 0  # also checkpoint every N steps (for long epochs); 0: per epoch only
    max_bad_steps: int = 20  # stop after this many consecutive non-finite steps
    eval_batch_size: int = 1000
    samples: int = 64  # images drawn from N(0, I) into samples.png at the end


def _is_optional(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType) and type(None) in typing.get_args(tp)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp` (JSON/TOML/YAML/CLI values), converting lists to tuples."""
    origin = typing.get_origin(tp)
    if _is_optional(tp):
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(value, inner, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise VaekitError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(value) != len(args):
            raise VaekitError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise VaekitError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise VaekitError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise VaekitError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise VaekitError(f"{where}: expected a string, got {value!r}")
    raise TypeError(f"unsupported config type {tp}")  # a bug in the dataclass, not user input


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build a config dataclass from a plain dict, refusing unknown keys and wrong types."""
    where = where or cls.__name__
    if not isinstance(data, dict):
        raise VaekitError(f"{where}: expected a table of settings, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise VaekitError(f"{where}: unknown setting {unknown[0]!r} (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def trained_data_config(meta: dict[str, Any]) -> DataConfig:
    """The DataConfig a checkpoint was trained with (its `data` entry), or the defaults if it has none."""
    stored = meta.get("data") or {}
    return from_dict(DataConfig, stored, "checkpoint data config") if stored else DataConfig()


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


@dataclass
class RunConfig:
    """Everything a run needs; stored as `run.json` in the run folder and in each checkpoint."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> RunConfig:
        unknown = sorted(set(data) - set(cls.SECTIONS))
        if unknown:
            raise VaekitError(f"{where}: unknown section {unknown[0]!r} (known: model, data, train)")
        return cls(**{k: from_dict(c, data.get(k, {}), f"{where}: {k}") for k, c in cls.SECTIONS.items()})

    def to_dict(self) -> dict[str, Any]:
        return {k: to_dict(getattr(self, k)) for k in self.SECTIONS}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (.toml) or YAML (.yaml/.yml) config file into a dict of sections."""
    path = Path(path)
    if not path.is_file():
        raise VaekitError(f"{path}: config file not found")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ModuleNotFoundError:
                raise VaekitError(f"{path}: YAML configs need PyYAML (pip install pyyaml)") from None
            data = yaml.safe_load(text) or {}
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise VaekitError(f"{path}: config files must end in .toml, .yaml, .yml or .json")
    except VaekitError:
        raise
    except Exception as e:  # the parsers' own exceptions differ; all mean "not valid syntax"
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise VaekitError(f"{path}: not a valid {path.suffix[1:].upper()} file ({first})") from None
    if not isinstance(data, dict):
        raise VaekitError(f"{path}: expected sections [model], [data], [train]")
    return data
