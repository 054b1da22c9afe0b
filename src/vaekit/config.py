"""Configs: typed dataclasses that round-trip through JSON and live inside every checkpoint.

A run is fully described by three configs: what the model is (`ModelConfig`), where the images
come from (`DataConfig`) and how it is trained (`TrainConfig`). Config files (TOML or YAML) use one
section per config; unknown keys and wrong types are refused with a clear message.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union

from vaekit.errors import VaekitError

T = TypeVar("T")


def setting(default: Any, lo: float | None = None, hi: float | None = None, *, open_lo: bool = False,
            open_hi: bool = False) -> Any:
    """A numeric setting with its allowed range, declared once beside its default: every value from a flag,
    a config file or a checkpoint is checked against it (finite, lo <= value <= hi; strict where `open_lo`
    or `open_hi`). For tuples the range applies to each element."""
    return field(default=default, metadata={"range": (lo, hi, open_lo, open_hi)})


class Checked:
    """Configs check their ranges when made, from Python too; `from_dict` checks first, naming the file."""

    def __post_init__(self) -> None:
        check_ranges(type(self), {f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
                     type(self).__name__)


BIG = 2**31 - 1  # upper bound of counts that only need to be "large"


@dataclass
class ModelConfig(Checked):
    """The architecture and the objective; enough to rebuild the model without the command line."""

    kind: str = "vae"  # "vae" or "ae"
    image_shape: tuple[int, int, int] = setting((1, 28, 28), 1, 4096)  # (C, H, W)
    arch: str = "auto"  # "mlp", "conv" or "auto" (chosen from the image shape)
    latent_dim: int = setting(0, 0, 4096)  # 0: a default chosen from the image shape
    hidden: tuple[int, ...] = setting((), 1, 65536)  # MLP hidden widths; (): a default chosen from the image shape
    channels: tuple[int, ...] = setting((), 1, 4096)  # conv channels per down-sampling; (): default
    likelihood: str = "bernoulli"  # "bernoulli" (logits) or "gaussian"
    gaussian_scale: float = setting(0.0, 0.0)  # fixed sigma of the Gaussian decoder; 0: learned
    beta: float = setting(1.0, 0.0)  # weight of the KL term (beta-VAE when != 1)
    free_bits: float = setting(0.0, 0.0)  # nats per latent dimension below which the KL is not penalised
    logvar_min: float = setting(-30.0, -80.0, 80.0)  # clamp of log sigma^2 (exp(+-80) stays finite in float32)
    logvar_max: float = setting(20.0, -80.0, 80.0)


@dataclass
class DataConfig(Checked):
    """Where images come from and how they are read and split."""

    name: str = "fashion-mnist"  # fashion-mnist, mnist, digits, folder:PATH, npz:PATH / npy:PATH
    data_dir: str = ""  # cache folder; "": $VAEKIT_DATA or ~/.cache/vaekit
    image_size: int = setting(0, 0, 4096)  # resize folder images to this square size; 0: keep (all must match)
    channels: int = setting(0, 0, 3)  # 1 or 3 for folders; 0: decided from the images
    resize: str = "crop"  # folder images to a square: "crop" (centre), "pad" (background), "stretch"
    background: str = "white"  # transparent pixels are composited on this: white, black, grey or #RRGGBB
    labels: str = "auto"  # folder labels: "auto" (subfolders that look like categories), "folders", "none"
    val_fraction: float = setting(0.1, 0.0, 1.0, open_lo=True, open_hi=True)  # training images held out for validation
    test_fraction: float = setting(0.1, 0.0, 1.0, open_lo=True, open_hi=True)  # for sets without an official test split
    binarize: bool = False  # dynamic binarization: x ~ Bernoulli(pixel) each time a batch is drawn
    download: bool = True  # allowed to download when no local copy exists
    skip_bad_images: bool = False  # skip unreadable files in image folders (with a warning) instead of stopping
    max_in_memory_gb: float = setting(4.0, 0.0, 1e6, open_lo=True)  # larger folders stream from disk; also the
    # most memory one array file (IDX, .npy, .npz) may declare
    workers: int = setting(2, 0, 64)  # DataLoader workers for streamed folders


@dataclass
class TrainConfig(Checked):
    """How to train: optimisation, schedule, checkpoints, devices."""

    epochs: int = setting(10, 1, 10**6)
    batch_size: int = setting(128, 1, 2**20)
    lr: float = setting(1e-3, 0.0, open_lo=True)
    optimizer: str = "adam"  # "adam" or "adamw"
    weight_decay: float = setting(0.0, 0.0)
    schedule: str = "constant"  # "constant" or "cosine"
    lr_warmup_steps: int = setting(0, 0, BIG)
    kl_warmup_epochs: float = setting(0.0, 0.0, 10**6)  # KL weight ramps linearly from 0 to beta over this many
    grad_clip: float = setting(0.0, 0.0)  # max global gradient norm; 0: no clipping
    patience: int = setting(0, 0, 10**6)  # early stopping after this many epochs without validation gain; 0: off
    seed: int = setting(0, 0, 2**32 - 1)
    device: str = "auto"  # auto, cpu, cuda, cuda:1, mps
    bf16: bool = False  # bf16 autocast (GPU only)
    compile: bool = False  # torch.compile the model for training (costs compile time up front)
    checkpoint_every: int = setting(0, 0, BIG)  # also checkpoint every N steps (for long epochs); 0: per epoch only
    max_bad_steps: int = setting(20, 1, BIG)  # stop after this many consecutive non-finite steps
    eval_batch_size: int = setting(1000, 1, 2**20)
    samples: int = setting(64, 1, 1024)  # images drawn from N(0, I) into samples.png at the end


def short(value: Any, limit: int = 60) -> str:
    """repr(value), cut to `limit` characters: error messages never echo a huge input."""
    text = repr(value) if not isinstance(value, (list, dict)) or len(value) < 50 else f"<{type(value).__name__} " \
        f"of {len(value)} items>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


Bounds = tuple[float | None, float | None, bool, bool]


def check_range(value: float, bounds: Bounds, where: str) -> None:
    """Refuse NaN, infinities and values outside `bounds` (see `setting`), naming where the value came from."""
    lo, hi, open_lo, open_hi = bounds
    if isinstance(value, float) and not math.isfinite(value):
        raise VaekitError(f"{where}: must be a finite number, got {value}")
    too_low = lo is not None and (value <= lo if open_lo else value < lo)
    too_high = hi is not None and (value >= hi if open_hi else value > hi)
    if too_low or too_high:
        low = "" if lo is None else f"{'>' if open_lo else '>='} {lo:.10g}"
        high = "" if hi is None else f"{'<' if open_hi else '<='} {hi:.10g}"
        raise VaekitError(f"{where}: must be {' and '.join(w for w in (low, high) if w)}, got {short(value)}")


def field_range(cls: type, name: str) -> Bounds | None:
    return next(f.metadata.get("range") for f in dataclasses.fields(cls) if f.name == name)


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
            raise VaekitError(f"{where}: expected a list, got {short(value)}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(value) != len(args):
            raise VaekitError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise VaekitError(f"{where}: expected true or false, got {short(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise VaekitError(f"{where}: expected an integer, got {short(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # an integer of hundreds of digits
                raise VaekitError(f"{where}: {short(value)} is too large for a number") from None
        raise VaekitError(f"{where}: expected a number, got {short(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise VaekitError(f"{where}: expected a string, got {short(value)}")
    raise TypeError(f"unsupported config type {tp}")  # a bug in the dataclass, not user input


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build a config dataclass from a plain dict, refusing unknown keys and wrong types."""
    where = where or cls.__name__
    if not isinstance(data, dict):
        raise VaekitError(f"{where}: expected a table of settings, got {short(data)}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(map(str, set(data) - names))
    if unknown:
        raise VaekitError(f"{where}: unknown setting {short(unknown[0])} (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    check_ranges(cls, kwargs, where)
    return cls(**kwargs)


def check_ranges(cls: type, values: dict[str, Any], where: str) -> None:
    """Every value of a field declared with `setting` within its range (tuples: each element)."""
    for name, value in values.items():
        bounds = field_range(cls, name)
        for item in (value if isinstance(value, tuple) else (value,)) if bounds else ():
            check_range(item, bounds, f"{where}.{name}")


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
        unknown = sorted(map(str, set(data) - set(cls.SECTIONS)))
        if unknown:
            raise VaekitError(f"{where}: unknown section {short(unknown[0])} (known: model, data, train)")
        return cls(**{k: from_dict(c, data.get(k, {}), f"{where}: {k}") for k, c in cls.SECTIONS.items()})

    def to_dict(self) -> dict[str, Any]:
        return {k: to_dict(getattr(self, k)) for k in self.SECTIONS}


MAX_CONFIG_BYTES = 1 << 20  # a config file is a few lines; anything larger is not one
MAX_YAML_NODES = 10_000  # YAML aliases may repeat a node; more nodes than this after expansion is a bomb


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (.toml), YAML (.yaml/.yml) or JSON (.json) config file into a dict of sections.

    Bounded: at most 1 MiB of UTF-8 text, and YAML (safe loader only) at most 10,000 nodes with aliases
    expanded, so a few hundred bytes of nested aliases cannot take minutes and gigabytes."""
    path = Path(path)
    if not path.is_file():
        raise VaekitError(f"{path}: config file not found")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise VaekitError(f"{path}: {path.stat().st_size:,} bytes is too large for a config file (at most 1 MiB)")
    parsers = {".toml": _parse_toml, ".yaml": _parse_yaml, ".yml": _parse_yaml, ".json": json.loads}
    if path.suffix not in parsers:
        raise VaekitError(f"{path}: config files must end in .toml, .yaml, .yml or .json")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise VaekitError(f"{path}: not UTF-8 text (a config file is plain text)") from None
    try:
        data = parsers[path.suffix](text)
    except VaekitError as e:
        raise VaekitError(f"{path}: {e}") from None
    except Exception as e:  # the parsers' own exceptions differ; all mean "not valid syntax"
        first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise VaekitError(f"{path}: not a valid {path.suffix[1:].upper()} file ({first})") from None
    if not isinstance(data, dict):
        raise VaekitError(f"{path}: expected sections [model], [data], [train]")
    return data


def _parse_toml(text: str) -> Any:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib.loads(text)


def _parse_yaml(text: str) -> Any:
    try:
        import yaml
    except ModuleNotFoundError:
        raise VaekitError("YAML configs need PyYAML (pip install pyyaml)") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None and _expanded_size(node, MAX_YAML_NODES) > MAX_YAML_NODES:
            raise VaekitError(f"more than {MAX_YAML_NODES:,} YAML nodes once aliases are expanded (an alias bomb?)")
        return (loader.construct_document(node) if node is not None else None) or {}
    finally:
        loader.dispose()


def _expanded_size(node: Any, limit: int) -> int:
    """Nodes in a composed YAML tree with every alias expanded, counting no further than just past `limit`."""
    count, stack = 0, [node]
    while stack and count <= limit:
        n = stack.pop()
        count += 1
        if isinstance(n.value, list):
            stack.extend(item for pair in n.value for item in (pair if isinstance(pair, tuple) else (pair,)))
    return count
