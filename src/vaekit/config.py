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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, Union

from vaekit.errors import VaekitError, printable, short  # noqa: F401  (short: re-exported)

T = TypeVar("T")


def setting(default: Any, lo: float | None = None, hi: float | None = None, *, open_lo: bool = False,
            open_hi: bool = False, help: str) -> Any:
    """A numeric setting with its allowed range and its help, declared once beside its default: every value from
    a flag, a config file or a checkpoint is checked against it (finite, lo <= value <= hi; strict where `open_lo`
    or `open_hi`); the help is what `--help` shows. For tuples the range applies to each element."""
    return field(default=default, metadata={"range": (lo, hi, open_lo, open_hi), "help": help})


def option(default: Any, help: str) -> Any:
    """A setting that is a name or a switch, with its help (what `--help` shows), declared once."""
    return field(default=default, metadata={"help": help})


class Checked:
    """Configs check their ranges when made, from Python too; `from_dict` checks first, naming the file."""

    def __post_init__(self) -> None:
        check_ranges(type(self), {f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
                     type(self).__name__)


BIG = 2**31 - 1  # upper bound of counts that only need to be "large"
MAX_K = 100_000  # importance samples per image (IS-NLL, anomaly scores), from a flag or a file vaekit reads alike
PRDC_K = 5  # the k of the k-NN balls of precision, recall, density and coverage (Naeem et al.'s default)
MAX_CLASSES = 10_000  # labels lie in 0..MAX_CLASSES - 1, from a data file or a checkpoint alike
MAX_LATENT = 4096  # numbers in a code
MIN_SAMPLES = PRDC_K + 2  # samples per sampler for every sample-quality measure: the k-NN radii need k + 2 rows


@dataclass
class ModelConfig(Checked):
    """The architecture and the objective; enough to rebuild the model without the command line."""

    kind: str = option("vae",
        "the family member: ae (deterministic code, reconstruction only), vae (q(z|x) = N(mu, sigma^2), loss = recon + "
        "KL), beta-vae, iwae (k-sample importance-weighted bound), vamp (VampPrior), wae (WAE-MMD), rae (regularized "
        "AE), vqvae (a codebook of discrete codes), fsq (finite scalar quantization)")
    image_shape: tuple[int, int, int] = setting((1, 28, 28), 1, 4096, help="set from the data; not a flag")
    arch: str = option("auto", "network family: mlp, conv, resnet (residual blocks with GroupNorm and SiLU, "
        "channels per resolution as conv's), or auto (MLP for small grey images, resnet for colour ones, conv "
        "otherwise)")
    latent_dim: int = setting(0, 0, MAX_LATENT, help="size of z (0: 8 for 8x8 images, 20 up to 32x32 grey, else 64)")
    hidden: tuple[int, ...] = setting((), 1, 65536,
        help="MLP hidden widths, comma-separated, e.g. 400 or 512,256; auto: chosen from the image size")
    channels: tuple[int, ...] = setting((), 1, 4096,
        help="conv channels per stride-2 layer, comma-separated, e.g. 32,64; auto: from the image size")
    res_blocks: int = setting(2, 1, 16, help="resnet: residual blocks at each resolution")
    attention: bool = option(False, "resnet: self-attention over the positions of the lowest resolution")
    likelihood: str = option("bernoulli", "p(x|z): bernoulli or gaussian on grey levels in [0, 1], optimal-gaussian "
        "(each image's best sigma: the sigma-VAE); for 8-bit values, bits/dim a code length: logistic-mixture "
        "(discretized, as PixelCNN++), categorical (256 values; small grey images)")
    gaussian_scale: float = setting(0.0, 0.0, help="fixed sigma of the Gaussian decoder; 0 learns one shared sigma")
    mixture_components: int = setting(10, 1, 64, help="logistic-mixture: components per pixel value (3 numbers each)")
    beta: float | None = setting(None, 0.0,
        help="weight of the KL term (not given: the preset's, 1 for the VAE and IWAE, 4 for beta-vae)")
    free_bits: float = setting(0.0, 0.0,
        help="nats per latent dimension of KL left unpenalised (against posterior collapse)")
    logvar_min: float = setting(-30.0, -80.0, 80.0, help="lower clamp of log sigma^2")
    logvar_max: float = setting(20.0, -80.0, 80.0, help="upper clamp of log sigma^2")
    iwae_k: int = setting(5, 1, 1000,
        help="iwae: importance-weighted draws per image in the training bound (1: the ELBO)")
    pseudo_inputs: int = setting(100, 1, 100_000, help="vamp: learned pseudo-inputs, the VampPrior's components "
        "(Tomczak & Welling used 500 on MNIST; each costs an encoder pass per step)")
    mmd_weight: float = setting(100.0, 0.0, help="wae: weight lambda of the MMD between the codes and N(0, I)")
    code_l2: float = setting(1.0, 0.0, help="rae: weight of ||z||^2 / 2, the penalty on the codes' size")
    decoder_l2: float = setting(1e-4, 0.0, help="rae: weight of the squared norm of the decoder's weights")
    latent_channels: int | None = setting(None, 0, 4096,
        help="C: a conv net's code is then a C x h x w grid at its lowest resolution (latent_dim = C*h*w), an MLP's "
        "latent_dim / C tokens; vqvae and fsq quantize each token (not given: 16 for vqvae, 4 for fsq, else 0: flat)")
    codebook_size: int = setting(512, 2, 65536, help="vqvae: codes in the codebook")
    commitment: float = setting(0.25, 0.0, 100.0, help="vqvae: weight of the commitment loss ||E(x) - sg(z_q)||^2")
    codebook_decay: float = setting(0.99, 0.0, 1.0, open_hi=True, help="vqvae: decay of the codebook's moving averages")
    dead_code: float = setting(2.0, 0.0, 1e6,
        help="vqvae: a code used fewer times per batch (moving average) is revived as an encoder output; 0: never")
    fsq_levels: tuple[int, ...] = setting((8, 5, 5, 5), 3, 256, help="fsq: levels of each number of a token (a token "
        "of another size is projected to as many numbers and back); the codebook is their product (8,5,5,5: 1000)")
    conditional: bool = option(False,
        "condition encoder and decoder on the image's label (a CVAE is --model vae --conditional): then `vaekit sample "
        "--label NAME` draws that class; needs labelled data")
    classes: int = setting(0, 0, MAX_CLASSES, help="labels a conditional model knows; set from the data, not a flag")


@dataclass
class DataConfig(Checked):
    """Where images come from and how they are read and split."""

    name: str = option("fashion-mnist",
        "fashion-mnist (default), mnist, digits (8x8, shipped), cifar10 (the official binary archive), folder:PATH, "
        "npz:PATH, npy:PATH, or mvtec:PATH (images with defect masks: the MVTec AD or a normal/abnormal/masks layout)")
    data_dir: str = option("", "where data sets are cached (default $VAEKIT_DATA or ~/.cache/vaekit)")
    image_size: int = setting(0, 0, 4096, help="resize folder images to N x N (needed when their sizes differ)")
    channels: int = setting(0, 0, 3, help="1 (grey) or 3 (RGB) for folder images; 0 decides from the images")
    resize: str = option("crop",
        "folder images of another shape: crop (keep the aspect, cut the centre square), pad (keep the aspect, fill "
        "with --background) or stretch")
    background: str = option("white",
        "colour under transparent pixels (alpha is composited on it): white, black, grey or #RRGGBB")
    labels: str = option("auto",
        "labels of folder images: auto (first-level subfolders, unless their names look like image sizes such as "
        "16x16), folders (always the subfolders), none")
    classes: str = option("",
        "keep only the images of these classes, comma-separated indices or names (e.g. 7 or Sneaker,Bag): a model "
        "of some classes, whose other classes are anomalies (`vaekit ood RUN --ood held-out`); empty: all")
    val_fraction: float = setting(0.1, 0.0, 1.0, open_lo=True, open_hi=True,
        help="part of the training images held out for validation")
    test_fraction: float = setting(0.1, 0.0, 1.0, open_lo=True, open_hi=True,
        help="part held out for testing, for sets without an official test split")
    binarize: bool = option(False, "dynamic binarization: resample binary pixels x ~ Bernoulli(grey level) per batch")
    download: bool = option(True, "allow downloading a missing data set from its official source (checksums verified)")
    skip_bad_images: bool = option(False, "skip unreadable images in a folder with a warning instead of stopping")
    hidden_files: bool = option(False,
        "also read hidden files and folders of an image folder (names starting with '.', such as .thumbnails/ and "
        "macOS's ._ files), which are skipped by default")
    max_in_memory_gb: float = setting(4.0, 0.0, 1e6, open_lo=True,
        help="image folders larger than this are read from disk a batch at a time instead of held in memory; also the "
        "most memory one array file (IDX, .npy, .npz) may declare")
    folder_cache: bool = option(True,
        "decode a folder larger than --max-in-memory-gb once into one uint8 file under the data directory "
        "(VAEKIT_DATA, else ~/.cache/vaekit; `vaekit cache` lists and clears them) and read batches from it; "
        "--no-folder-cache decodes every image again every epoch")
    workers: int = setting(2, 0, 64, help="processes that decode folder images (the first decode, and streamed "
                                          "folders with --no-folder-cache)")


@dataclass
class TrainConfig(Checked):
    """How to train: optimisation, schedule, checkpoints, devices."""

    epochs: int = setting(10, 1, 10**6, help="passes over the training set")
    batch_size: int = setting(128, 1, 2**20, help="images per step (per process under torchrun)")
    lr: float = setting(1e-3, 0.0, open_lo=True, help="learning rate")
    optimizer: str = option("adam", "adam or adamw (fused where supported)")
    weight_decay: float = setting(0.0, 0.0, help="weight decay")
    schedule: str = option("constant", "learning-rate schedule: constant or cosine")
    lr_warmup_steps: int = setting(0, 0, BIG, help="linear learning-rate warm-up steps")
    kl_warmup_epochs: float = setting(0.0, 0.0, 10**6,
        help="KL weight ramps from 0 to beta over this many epochs (0: off)")
    grad_clip: float = setting(0.0, 0.0, help="clip the global gradient norm to this value (0: off)")
    ema_decay: float = setting(0.0, 0.0, 1.0, open_hi=True, help="keep an exponential moving average of the "
        "weights with this decay (e.g. 0.999): validation, checkpoints, samples and every later command use it "
        "(buffers, a VQ codebook's too, are copied); the training weights are kept for an exact resume (0: off)")
    skip_threshold: float = setting(0.0, 0.0, help="skip the update of a step whose gradient norm (before clipping) "
        "is above this, as VDVAE does against rare huge gradients (0: off); counted with the non-finite steps")
    patience: int = setting(0, 0, 10**6, help="early stopping after this many epochs without validation gain (0: off)")
    seed: int = setting(0, 0, 2**32 - 1, help="random seed (weights, batch order, reparameterization noise)")
    device: str = option("auto", "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    bf16: bool = option(False, "bf16 autocast on GPU")
    compile: bool = option(False,
        "torch.compile the training forward pass; on 2 CPU cores it did not speed up the default networks "
        "(bench/RESULTS.md), on a GPU it may")
    checkpoint_every: int = setting(0, 0, BIG, help="also checkpoint every N steps within an epoch (0: once per epoch)")
    max_bad_steps: int = setting(20, 1, BIG,
        help="stop after this many consecutive steps with a non-finite loss or gradient (or over --skip-threshold)")
    eval_batch_size: int = setting(1000, 1, 2**20, help="batch size for validation and test")
    samples: int = setting(64, 1, 1024,
        help="images drawn from the model's prior (N(0, I)) into samples.png at the end")
    two_stage_epochs: int = setting(30, 0, 10_000,
        help="epochs of the second VAE fitted to the training codes after training (Dai & Wipf, 2019) and saved with "
        "the best checkpoint, so `vaekit sample --prior two-stage` works from the file (0: none)")
    code_prior_epochs: int = setting(20, 0, 10_000,
        help="vqvae, fsq: epochs of the PixelCNN fitted to the training codes' indices after training, so `vaekit "
        "sample --prior code-prior` draws from it (0: none)")
    gmm_components: int = setting(10, 0, 100,
        help="components of the Gaussian mixture fitted to the training codes after training and saved with the best "
        "checkpoint, so `vaekit sample --prior gmm` works from the file (0: none)")


def class_index(text: str, names: Sequence[str]) -> int | None:
    """The class a user names (`--classes`, `--label`): an index in ASCII digits, or one of `names` (case and
    surrounding spaces ignored); None when it is neither. Whether the index is one they have, callers check."""
    text = str(text).strip()
    if text.isascii() and text.isdigit():
        return int(text) if len(text) <= 9 else None  # "²" is a digit to str.isdigit, and 10^4300 is too long for int
    return next((i for i, name in enumerate(names) if name.strip().lower() == text.lower()), None)


def class_word(index: int, names: list[str]) -> str:
    """'7 (Sneaker)', or '7' where the class has no name of its own."""
    return f"{index} ({printable(names[index])})" if index < len(names) and names[index] != str(index) else str(index)


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
        for item in (value if isinstance(value, tuple) else (value,)) if bounds and value is not None else ():
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
