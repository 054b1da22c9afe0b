"""The `vaekit` command line: train, sample, reconstruct, encode, decode, info.

Settings come from the config dataclasses: defaults, then a config file (--config, TOML or YAML),
then flags. A user error prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
import time
import typing
import zipfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from vaekit.config import (
    Bounds,
    DataConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    check_range,
    read_config_file,
    short,
    to_dict,
)
from vaekit.errors import VaekitError
from vaekit.files import atomic_write, npy_writer, write_json

# Flag name for each config field where it is not simply the field name with dashes.
FLAG_NAMES = {("model", "kind"): "model", ("data", "name"): "data", ("model", "channels"): "conv-channels",
              ("data", "channels"): "image-channels", ("train", "samples"): "samples"}

HELP = {
    "model.kind": "vae (encoder returns q(z|x) = N(mu, sigma^2), loss = recon + KL) or ae (deterministic code, "
                  "reconstruction only)",
    "model.arch": "network family: mlp, conv, or auto (MLP for small grey images, conv otherwise)",
    "model.latent_dim": "size of z (0: 8 for 8x8 images, 20 up to 32x32 grey, else 64)",
    "model.hidden": "MLP hidden widths, comma-separated, e.g. 400 or 512,256; auto: chosen from the image size",
    "model.channels": "conv channels per stride-2 layer, comma-separated, e.g. 32,64; auto: from the image size",
    "model.likelihood": "decoder likelihood p(x|z): bernoulli (logits, for grey levels in [0, 1]) or gaussian",
    "model.gaussian_scale": "fixed sigma of the Gaussian decoder; 0 learns one shared sigma",
    "model.beta": "weight of the KL term (1: the VAE; other values: beta-VAE)",
    "model.free_bits": "nats per latent dimension of KL left unpenalised (against posterior collapse)",
    "model.logvar_min": "lower clamp of log sigma^2",
    "model.logvar_max": "upper clamp of log sigma^2",
    "model.image_shape": "set from the data; not a flag",
    "data.name": "fashion-mnist (default), mnist, digits (8x8, shipped), folder:PATH, npz:PATH or npy:PATH",
    "data.data_dir": "where data sets are cached (default $VAEKIT_DATA or ~/.cache/vaekit)",
    "data.image_size": "resize folder images to N x N (needed when their sizes differ)",
    "data.channels": "1 (grey) or 3 (RGB) for folder images; 0 decides from the images",
    "data.resize": "folder images of another shape: crop (keep the aspect, cut the centre square), pad (keep the "
                   "aspect, fill with --background) or stretch",
    "data.background": "colour under transparent pixels (alpha is composited on it): white, black, grey or #RRGGBB",
    "data.labels": "labels of folder images: auto (first-level subfolders, unless their names look like image sizes "
                   "such as 16x16), folders (always the subfolders), none",
    "data.val_fraction": "part of the training images held out for validation",
    "data.test_fraction": "part held out for testing, for sets without an official test split",
    "data.binarize": "dynamic binarization: resample binary pixels x ~ Bernoulli(grey level) per batch",
    "data.download": "allow downloading a missing data set from its official source (checksums verified)",
    "data.skip_bad_images": "skip unreadable images in a folder with a warning instead of stopping",
    "data.max_in_memory_gb": "image folders larger than this stream from disk instead of loading into memory; "
                             "also the most memory one array file (IDX, .npy, .npz) may declare",
    "data.workers": "DataLoader worker processes for streamed folders",
    "train.epochs": "passes over the training set",
    "train.batch_size": "images per step (per process under torchrun)",
    "train.lr": "learning rate",
    "train.optimizer": "adam or adamw (fused where supported)",
    "train.weight_decay": "weight decay",
    "train.schedule": "learning-rate schedule: constant or cosine",
    "train.lr_warmup_steps": "linear learning-rate warm-up steps",
    "train.kl_warmup_epochs": "KL weight ramps from 0 to beta over this many epochs (0: off)",
    "train.grad_clip": "clip the global gradient norm to this value (0: off)",
    "train.patience": "early stopping after this many epochs without validation gain (0: off)",
    "train.seed": "random seed (weights, batch order, reparameterization noise)",
    "train.device": "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps",
    "train.bf16": "bf16 autocast on GPU",
    "train.compile": "torch.compile the training forward pass; on 2 CPU cores it did not speed up the default "
                     "networks (bench/RESULTS.md), on a GPU it may",
    "train.checkpoint_every": "also checkpoint every N steps within an epoch (0: once per epoch)",
    "train.max_bad_steps": "stop after this many consecutive steps with a non-finite loss or gradient",
    "train.eval_batch_size": "batch size for validation and test",
    "train.samples": "images drawn from N(0, I) into samples.png at the end",
}

SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


def flag_name(section: str, name: str) -> str:
    return "--" + FLAG_NAMES.get((section, name), name.replace("_", "-"))


def parse_int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {short(text)}") from None


def number(tp: type, lo: float | None = None, hi: float | None = None, *, open_lo: bool = False,
           bounds: Bounds | None = None) -> Callable[[str], Any]:
    """An argparse type: parse `tp` (int, float or an int list) and check the range, so a bad value is refused
    where the flag is declared, in one line naming the flag."""
    bounds = bounds or (lo, hi, open_lo, False)

    def parse(text: str) -> Any:
        try:
            value = parse_int_list(text) if tp is tuple else tp(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if tp is int else 'a number'}, got "
                                             f"{short(text)}") from None
        try:
            for item in value if tp is tuple else (value,):
                check_range(item, bounds, "value")
        except VaekitError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix("value: ")) from None
        return value

    parse.__name__ = tp.__name__  # argparse names the type in its messages
    return parse


# Settings that name something, and the registry (module, attribute) holding the names they accept; a
# registry is imported only when its flag is parsed, so `vaekit --help` does not load torch.
REGISTRIES = {("model", "kind"): ("vaekit.models.autoencoder", "MODELS"),
              ("model", "arch"): ("vaekit.models.networks", "ARCHS"),
              ("model", "likelihood"): ("vaekit.models.likelihoods", "LIKELIHOODS"),
              ("train", "optimizer"): ("vaekit.training.trainer", "OPTIMIZERS"),
              ("train", "schedule"): ("vaekit.training.trainer", "SCHEDULES"),
              ("data", "resize"): ("vaekit.data.folder", "RESIZE"),
              ("data", "labels"): ("vaekit.data.folder", "LABELS")}


def one_of(section: str, name: str) -> Callable[[str], str]:
    """An argparse type: a name from the registry of this setting, refused where the flag is declared."""

    def parse(text: str) -> str:
        module, attribute = REGISTRIES[section, name]
        known = list(getattr(importlib.import_module(module), attribute))
        if text not in known:
            raise argparse.ArgumentTypeError(f"invalid choice: {short(text)} (choose from {', '.join(known)})")
        return text

    parse.__name__ = name
    return parse


def add_config_flags(parser: argparse.ArgumentParser, skip: set[tuple[str, str]] = frozenset()) -> None:
    """One flag per config field, defaulting to 'not given' so that config files can fill them."""
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(f"{section} settings ([{section}] in a config file)")
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if (section, f.name) == ("model", "image_shape") or (section, f.name) in skip:
                continue
            flag = flag_name(section, f.name)
            kwargs: dict[str, Any] = {"dest": f"{section}.{f.name}", "default": argparse.SUPPRESS,
                                      "help": f"{HELP[f'{section}.{f.name}']} (default: {_show(f.default)})"}
            tp, bounds = hints[f.name], f.metadata.get("range")
            if tp is bool:
                kwargs["action"] = argparse.BooleanOptionalAction
            elif typing.get_origin(tp) is tuple:
                kwargs.update(type=number(tuple, bounds=bounds), metavar="N,N")
            elif (section, f.name) in REGISTRIES:
                kwargs.update(type=one_of(section, f.name), metavar=f.name.upper())
            else:
                kwargs.update(type=number(tp, bounds=bounds) if bounds else tp, metavar=f.name.split("_")[-1].upper())
            group.add_argument(flag, **kwargs)


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "auto"
    return str(value)


def given_settings(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The settings the user gave: the config file's (checked on its own first, so errors name it), then flags."""
    data: dict[str, dict[str, Any]] = read_config_file(args.config) if args.config else {}
    RunConfig.from_dict(data, str(args.config or "config"))
    for key, value in vars(args).items():
        if "." in key:
            section, name = key.split(".")
            data.setdefault(section, {})[name] = list(value) if isinstance(value, tuple) else value
    return data


def run_config_from_args(args: argparse.Namespace) -> RunConfig:
    """Defaults < config file < flags."""
    return RunConfig.from_dict(given_settings(args), "flags")


def resume_conflicts(args: argparse.Namespace, stored: RunConfig) -> list[str]:
    """Given settings (other than --epochs) whose values differ from the run's stored ones, as flag names. A
    value equal to the default ("auto", 0, []) asks for what the run filled in, so it never differs."""
    given = given_settings(args)
    wanted, default = RunConfig.from_dict(given, "flags"), RunConfig()

    def value(config: RunConfig, section: str, name: str) -> Any:
        return getattr(getattr(config, section), name)

    return [f"{flag_name(section, name)} {value(wanted, section, name)!r} (stored: {value(stored, section, name)!r})"
            for section, values in given.items() for name in values if (section, name) != ("train", "epochs")
            and value(wanted, section, name) not in (value(stored, section, name), value(default, section, name))]


def default_out(run: RunConfig) -> Path:
    data = run.data.name.split(":")[0].replace("/", "-")
    return Path("runs") / f"{run.model.kind}-{data}-{time.strftime('%Y%m%d-%H%M%S')}"


# --- commands -------------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from vaekit.training import train
    from vaekit.training.trainer import stored_run

    if args.resume:
        if args.out is None:
            raise VaekitError("--resume needs --out RUN_FOLDER (the run to continue)")
        out = Path(args.out)
        conflicts = resume_conflicts(args, stored_run(out, None))
        if conflicts:
            raise VaekitError(f"--resume continues with the run's stored settings; only --epochs may change (got "
                              f"{'; '.join(conflicts)})")
        summary = train(None, out, resume=True, epochs=vars(args).get("train.epochs"), quiet=args.quiet)
    else:
        run = run_config_from_args(args)
        out = Path(args.out) if args.out else default_out(run)
        summary = train(run, out, overwrite=args.overwrite, quiet=args.quiet,
                        inputs=[Path(args.config)] if args.config else [])
    if args.quiet:
        print(json.dumps({"run": str(out), **summary}))
    else:
        print(f"run folder: {out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from vaekit.report.compare import compare

    if (args.ae is None) != (args.vae is None):
        raise VaekitError("--ae and --vae go together (two checkpoints to compare)")
    run = run_config_from_args(args)
    out = Path(args.out) if args.out else Path("runs") / f"compare-{run.data.name.split(':')[0]}-" \
        f"{time.strftime('%Y%m%d-%H%M%S')}"
    metrics = compare(run, out, quick=args.quick, checkpoints=(args.ae, args.vae) if args.ae else None,
                      data_name=vars(args).get("data.name"), overwrite=args.overwrite, quiet=args.quiet,
                      inputs=[Path(args.config)] if args.config else [])
    if args.quiet:
        print(json.dumps({"run": str(out), "seconds": metrics["seconds"]}))
    else:
        print(f"run folder: {out}  (open {out / 'report.html'} in a browser)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from vaekit.data.sources import data_home
    from vaekit.evaluation.classifier import load_or_train_classifier
    from vaekit.evaluation.evaluate import EvalSettings, can_score_samples, evaluate_model, real_reference

    model, _ = load_model(args.checkpoint, args.device)
    if args.json:
        check_output(Path(args.json), args.overwrite)
    data, config = dataset_for(model, args)
    settings = EvalSettings.quick() if args.quick else EvalSettings()
    if args.k is not None:
        settings.k = args.k
    classifier = features = floor = None
    if can_score_samples(data):
        classifier, _ = load_or_train_classifier(data, data_home(config))
        features, floor = real_reference(data, classifier, settings.n_samples)
    metrics = evaluate_model(model, data, settings, classifier, features).metrics
    metrics["real_floor"] = floor
    if args.json:
        write_json(args.json, metrics)
    t = metrics["test"]
    lines = [f"{model.kind.upper()} on {data.spec} test set ({t['images']} images)",
             *(f"  ({note})" for note in data.notes),
             f"  reconstruction -log p(x|z)  {t['recon']:.2f} nats/image"]
    if model.variational:
        lines.append(f"  -ELBO                       {t['nelbo']:.2f} nats/image = recon + KL {t['kl']:.2f}  "
                     f"({t['bpd']:.4f} bits/dim)")
    if "is_nll" in metrics:
        i = metrics["is_nll"]
        lines.append(f"  IS-NLL, K={i['k']:<5}           {i['nll']:.2f} +- {i['stderr']:.2f} nats/image "
                     f"on {i['images']} "
                     f"images ({i['bpd']:.4f} bits/dim; -ELBO on them {i['nelbo_same_images']:.2f})")
    la = metrics["latent"]
    lines.append(f"  active units                {la['active_units']} of {model.latent_dim}; "
                 f"{100 * la['inside_prior_99']:.1f}% of codes inside N(0, I)'s 99% ball")
    for name, s in metrics.get("samples", {}).items():
        lines.append(f"  samples from {name:<6}         Frechet distance {s['frechet']:.2f}, classifier confidence "
                     f"{s['confidence']:.3f}")
    if floor:
        lines.append(f"  real held-out images        Frechet distance {floor['frechet']:.2f}, classifier confidence "
                     f"{floor['confidence']:.3f}")
    print("\n".join(lines))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from vaekit.web.app import serve

    serve(args.paths, host=args.host, port=args.port, quiet=args.quiet, allow_remote=args.allow_remote,
          token=args.token)
    return 0


def load_model(path: str, device: str):
    from vaekit.models import AE
    from vaekit.training.distributed import pick_device

    dev = pick_device(device)
    model = AE.from_pretrained(path, map_location=dev)
    model.eval()
    return model, dev


def check_output(path: Path, overwrite: bool) -> None:
    """An output file may be new, or an existing regular file with --overwrite; nothing else is written over."""
    if path.exists() and not path.is_file():
        raise VaekitError(f"{path}: exists and is not a regular file; vaekit writes only files")
    if path.exists() and not overwrite:
        raise VaekitError(f"{path}: exists; pass --overwrite to replace it")


def batch_ranges(n: int, batch: int) -> list[tuple[int, int]]:
    return [(i, min(n, i + batch)) for i in range(0, n, batch)]


MAX_GRID = 1024  # images in one PNG grid; more go to --files


def write_images(args: argparse.Namespace, n: int, shape: Sequence[int], what: str, default_out: str,
                 make: Callable[[int, int], Any]) -> None:
    """Shared by `sample` and `decode`: images made batch by batch by `make(start, stop)`, so memory stays
    bounded for any N, written to a PNG grid (--out), one PNG each (--files) and/or a uint8 array (--npy)."""
    import numpy as np
    import torch

    from vaekit.images import save_files, save_grid, to_uint8
    from vaekit.progress import bar

    if args.out is None and args.files is None and args.npy is None:
        args.out = default_out
    if args.out and n > MAX_GRID:
        raise VaekitError(f"{n} images are too many for one grid; write them with --files DIR or --npy FILE")
    for path in (args.out, args.npy):
        if path:
            check_output(Path(path), args.overwrite)
    if args.files and Path(args.files).is_dir() and any(Path(args.files).iterdir()) and not args.overwrite:
        raise VaekitError(f"{args.files}: folder is not empty; pass --overwrite to write into it")
    kept = []
    with ExitStack() as stack, torch.no_grad():
        write_npy = None
        if args.npy:  # (N, C, H, W) uint8, what `--data npy:FILE` reads back
            write_npy = stack.enter_context(npy_writer(args.npy, (n, *shape), np.uint8))
        for start, stop in bar(batch_ranges(n, args.batch_size), desc=what, disable=n <= args.batch_size):
            images = make(start, stop)
            if args.files:
                save_files(images, args.files, start)
            if args.out:
                kept.append(images.cpu())
            if write_npy is not None:
                write_npy(to_uint8(images).transpose(0, 3, 1, 2))
    if args.out:
        save_grid(torch.cat(kept), args.out)
        print(f"{n} {what} -> {args.out}")
    if args.files:
        print(f"{n} PNG files -> {args.files}")
    if args.npy:
        print(f"{n} images as uint8 (N, C, H, W) -> {args.npy}")


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    model, device = load_model(args.checkpoint, args.device)
    generator = torch.Generator(device).manual_seed(args.seed)
    write_images(args, args.n, model.config.image_shape, "samples from N(0, I)", "samples.png",
                 lambda start, stop: model.sample(stop - start, generator=generator))
    return 0


def dataset_for(model, args: argparse.Namespace):
    """The data set a command works on: the checkpoint's own, or --data (same loading settings)."""
    from vaekit.config import trained_data_config
    from vaekit.data import evaluation_view, load_dataset

    config = trained_data_config(model.meta)
    if args.data:
        config = dataclasses.replace(config, name=args.data)
    data = evaluation_view(load_dataset(config), config)
    if data.shape != tuple(model.config.image_shape):
        raise VaekitError(f"{config.name}: images are {data.shape}, the model wants {tuple(model.config.image_shape)}")
    return data, config


def cmd_reconstruct(args: argparse.Namespace) -> int:
    import torch

    from vaekit.data import Batches
    from vaekit.images import save_grid

    model, device = load_model(args.checkpoint, args.device)
    check_output(Path(args.out), args.overwrite)
    images = dataset_for(model, args)[0].split(args.split)
    n = min(args.n, len(images))
    x = next(iter(Batches(images.subset(torch.arange(n)), n, device)))
    with torch.no_grad():
        recon = model.reconstruct(x)
    cols = min(8, n)
    rows = []  # a row of originals above the row of their reconstructions
    for i in range(0, n, cols):
        rows += [x[i:i + cols], recon[i:i + cols]]
    save_grid(torch.cat(rows), args.out, nrow=cols)
    err = model.likelihood.nll(x, model.decode(model.embed(x))).mean().item()
    print(f"{n} images (top rows) and their reconstructions (rows below) -> {args.out}; "
          f"-log p(x|z) at the code: {err:.2f} nats/image")
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from vaekit.data import Batches
    from vaekit.progress import bar

    model, device = load_model(args.checkpoint, args.device)
    out = Path(args.out)
    for path in (args.out, args.labels):
        if path:
            check_output(Path(path), args.overwrite)
    images = dataset_for(model, args)[0].split(args.split)
    with npy_writer(out, (len(images), model.latent_dim), np.float32) as write, torch.no_grad():  # any N fits
        for x in bar(Batches(images, args.batch_size, device), desc="encoding"):
            q = model.encode(x)
            z = q.sample() if args.sample and model.kind == "vae" else model.embed(x)
            write(z.cpu().numpy())
    what = "samples z = mu + sigma * eps" if args.sample and model.kind == "vae" else \
        ("posterior means mu(x)" if model.kind == "vae" else "codes z = E(x)")
    print(f"{len(images)} {what} ({model.latent_dim} dims) -> {out}")
    if args.labels and images.labels is not None:
        with atomic_write(args.labels) as tmp:
            np.save(tmp, images.labels.cpu().numpy())
        print(f"labels -> {args.labels}")
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    model, device = load_model(args.checkpoint, args.device)
    if not Path(args.codes).is_file():
        raise VaekitError(f"{args.codes}: no such file")
    if zipfile.is_zipfile(args.codes):
        raise VaekitError(f"{args.codes}: an .npz archive; decode takes one .npy array of codes (N, latent)")
    try:  # memory-mapped: any N decodes in bounded memory; numpy checks the header against the file size
        codes = np.load(args.codes, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise VaekitError(f"{args.codes}: not a readable .npy array ({str(e)[:200]})") from None
    if codes.ndim != 2 or codes.shape[1] != model.latent_dim:
        raise VaekitError(f"{args.codes}: expected codes shaped (N, {model.latent_dim}), got {codes.shape}")
    if codes.dtype.kind not in "fiu":
        raise VaekitError(f"{args.codes}: expected numbers, got dtype {codes.dtype}")

    def decode(start: int, stop: int) -> torch.Tensor:
        z = torch.from_numpy(np.array(codes[start:stop], dtype=np.float32)).to(device)
        if not torch.isfinite(z).all():
            raise VaekitError(f"{args.codes}: contains NaN or infinite values (rows {start}-{stop - 1})")
        return model.generate(z)

    write_images(args, len(codes), model.config.image_shape, "decoded images", "decoded.png", decode)
    return 0


def network_words(c: ModelConfig) -> str:
    return f"hidden {','.join(map(str, c.hidden))}" if c.arch == "mlp" else f"channels {','.join(map(str, c.channels))}"


def cmd_info(args: argparse.Namespace) -> int:
    from vaekit.models.autoencoder import resolve_checkpoint
    from vaekit.training.trainer import loss_words

    model, _ = load_model(args.checkpoint, "cpu")
    folder = resolve_checkpoint(args.checkpoint)
    summary_file = Path(args.checkpoint) / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else None
    info = {"checkpoint": str(folder), "model": model.kind, "config": to_dict(model.config),
            "parameters": sum(p.numel() for p in model.parameters()), "dataset": model.meta.get("dataset"),
            "progress": model.meta.get("progress"), "metrics": model.meta.get("metrics"), "summary": summary}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    c = model.config
    lines = [f"checkpoint   {folder}",
             f"model        {model.kind.upper()}  {c.arch}  latent {c.latent_dim}  "
             f"{network_words(c)}"
             f"  {c.likelihood} likelihood  {info['parameters']:,} parameters",
             f"objective    recon{'' if model.kind == 'ae' else f' + {c.beta:g} * KL'}"
             f"{f'  free bits {c.free_bits:g}' if c.free_bits else ''}",
             f"data         {info['dataset'] or 'unknown'}  image {'x'.join(map(str, c.image_shape))}"]
    progress = info["progress"] or {}
    if progress:
        lines.append(f"trained      {progress.get('epoch')} epochs, {progress.get('step')} steps")
    metrics = info["metrics"] or {}
    if "val_recon" in metrics:
        lines.append(f"validation   {loss_words(metrics, model.variational, 'val_')}")
    if summary:
        t = summary["test"]
        lines.append(f"test         {loss_words(t, model.variational)} on {t['images']} images")
    print("\n".join(lines))
    return 0


# --- parser ---------------------------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    """argparse, with its errors in vaekit's one-line form."""

    def error(self, message: str) -> typing.NoReturn:
        raise VaekitError(f"{message} (see '{self.prog} --help')")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except where there is none to show (None, off switches) or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or "(default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="vaekit", description="Train, evaluate and compare Variational AutoEncoders and plain AutoEncoders.",
        epilog="Run 'vaekit COMMAND --help' for a command's options.")
    from vaekit import __version__

    parser.add_argument("--version", action="version", version=f"vaekit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, fn: Callable[[argparse.Namespace], int], help: str, description: str,
                parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=description, parents=list(parents),
                           formatter_class=HelpFormatter)
        p.set_defaults(fn=fn)
        return p

    run_flags = argparse.ArgumentParser(add_help=False)  # commands that create a run folder
    run_flags.add_argument("--config", help="TOML or YAML file with [model], [data], [train] sections; flags "
                           "override it")
    run_flags.add_argument("--out", help="run folder (default: runs/NAME-DATA-TIMESTAMP)")
    run_flags.add_argument("--overwrite", action="store_true", help="replace an existing run folder")

    p = command("train", cmd_train, "train a VAE or an AE",
                "Train a VAE (default) or a plain AE on a data set, writing a run folder with checkpoints, "
                "metrics.jsonl/csv, summary.json (test negative ELBO) and samples.png (decoded z ~ N(0, I)).",
                [run_flags])
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint "
                   "(--epochs may raise the total)")
    p.add_argument("--quiet", action="store_true", help="no progress bars; print the summary as JSON")
    add_config_flags(p)

    p = command("compare", cmd_compare, "the AE vs VAE report: train both, measure, write report.html",
                "Train an AE and a VAE with identical networks, data, seed and epochs (or take two checkpoints), "
                "evaluate both (reconstruction, -ELBO, importance-sampled NLL, latent diagnostics, Frechet "
                "distance and confidence of a feature classifier for samples from N(0, I) and from a Gaussian "
                "mixture fitted to the codes) and write metrics.json and a self-contained report.html.", [run_flags])
    p.add_argument("--quick", action="store_true", help="about a minute on 2 CPU cores: 2 epochs, K=100, "
                   "2000 samples")
    p.add_argument("--ae", help="an AE checkpoint or run folder to use instead of training one")
    p.add_argument("--vae", help="a VAE checkpoint or run folder to use instead of training one")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_flags(p, skip={("model", "kind")})

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("checkpoint", help="run folder (its best checkpoint) or checkpoint folder")
    common.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    common.add_argument("--overwrite", action="store_true", help="replace existing output files")

    p = command("sample", cmd_sample, "generate images by decoding z ~ N(0, I)",
                "Generation from scratch: draw z ~ N(0, I) and decode it. Works for a VAE; for a plain AE, "
                "whose codes were never pulled towards N(0, I), it usually gives poor images.", [common])
    p.add_argument("-n", type=number(int, 1, 2**31 - 1), default=64, help="number of images")
    p.add_argument("--out", help="PNG grid to write (default samples.png unless --files or --npy is given)")
    p.add_argument("--files", help="also write one PNG per image into this folder")
    p.add_argument("--npy", help="also write all images to this .npy as uint8 (N, C, H, W), streamed")
    p.add_argument("--seed", type=number(int, 0, 2**32 - 1), default=0, help="seed of the z draws")
    p.add_argument("--batch-size", type=number(int, 1, 2**20), default=1000, help="images decoded at a time")

    data_flags = argparse.ArgumentParser(add_help=False)
    data_flags.add_argument("--data", help="data set to take images from (default: the one the model was trained on)")
    data_flags.add_argument("--split", default="test", choices=["train", "val", "test"], help="which split")

    p = command("reconstruct", cmd_reconstruct, "reconstruct images through the model",
                "Encode images and decode their codes (the VAE's posterior mean): originals above, "
                "reconstructions below.", [common, data_flags])
    p.add_argument("-n", type=number(int, 1, MAX_GRID // 2), default=16, help="number of images")
    p.add_argument("--out", default="reconstructions.png", help="PNG to write")

    p = command("encode", cmd_encode, "images to latent codes (.npy)",
                "Write the codes of a split's images to an .npy array (N, latent): the VAE's posterior means "
                "mu(x) (or samples with --sample), the AE's z = E(x).", [common, data_flags])
    p.add_argument("--out", default="codes.npy", help=".npy file to write")
    p.add_argument("--sample", action="store_true", help="VAE: draw z = mu + sigma * eps instead of mu")
    p.add_argument("--labels", help="also write the images' labels to this .npy")
    p.add_argument("--batch-size", type=number(int, 1, 2**20), default=1000, help="images encoded at a time")

    p = command("decode", cmd_decode, "latent codes (.npy) to images",
                "Decode an .npy array of codes shaped (N, latent) into images.", [common])
    p.add_argument("codes", help=".npy file of codes")
    p.add_argument("--out", help="PNG grid to write (default decoded.png unless --files or --npy is given)")
    p.add_argument("--files", help="also write one PNG per image into this folder")
    p.add_argument("--npy", help="also write all images to this .npy as uint8 (N, C, H, W), streamed")
    p.add_argument("--batch-size", type=number(int, 1, 2**20), default=1000, help="codes decoded at a time")

    p = command("evaluate", cmd_evaluate, "measure a checkpoint on its test set",
                "Test -ELBO split into reconstruction and KL, importance-sampled NLL (VAE), latent diagnostics, "
                "and sample quality from N(0, I) and from a fitted mixture.", [common])
    p.add_argument("--data", help="data set (default: the one the model was trained on)")
    p.add_argument("-k", type=number(int, 1, 100_000),
                   help="importance samples per image (default 1000, 100 with --quick)")
    p.add_argument("--quick", action="store_true", help="fewer samples: seconds instead of minutes")
    p.add_argument("--json", help="also write the metrics to this JSON file")

    p = command("serve", cmd_serve, "the latent explorer: a web page and HTTP API over an AE and a VAE",
                "Serve a web page (and a JSON/PNG API, OpenAPI schema at /docs) to draw z ~ N(0, I) through the AE "
                "and the VAE side by side, drag sliders through the latent space, reconstruct your own images "
                "and interpolate between test images.")
    p.add_argument("paths", nargs="+", metavar="RUN_OR_CHECKPOINT",
                   help="a `vaekit compare` run folder (uses its ae/ and vae/), or one or two checkpoints")
    p.add_argument("--host", default="127.0.0.1", help="address to bind; anything but loopback (127.0.0.1, localhost, "
                   "::1) needs --allow-remote")
    p.add_argument("--allow-remote", action="store_true", help="really serve beyond this machine (e.g. --host "
                   "0.0.0.0); a token is then required, printed in the link")
    p.add_argument("--token", help="require this token (header 'Authorization: Bearer TOKEN', or open the page "
                   "once with ?token=TOKEN); default: none on loopback, a random one otherwise")
    p.add_argument("--port", type=number(int, 1, 65535), default=8000, help="port")
    p.add_argument("--quiet", action="store_true", help="log warnings only")

    p = command("info", cmd_info, "what a checkpoint is",
                "Show a checkpoint's model, data, training progress and metrics.")
    p.add_argument("checkpoint", help="run folder or checkpoint folder")
    p.add_argument("--json", action="store_true", help="print JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The one boundary: every failure a user can cause ends here as one line on stderr and exit status 2."""
    try:
        args = build_parser().parse_args(argv)
        status = args.fn(args)
        sys.stdout.flush()  # inside the boundary: a closed pipe is noticed here, not at exit
        return status
    except VaekitError as e:
        return fail(str(e))
    except MemoryError:
        return fail("out of memory; try a smaller --batch-size, -n or --image-size")
    except OSError as e:  # a full disk, a folder without write permission, a broken pipe, ...
        if isinstance(e, BrokenPipeError):  # `vaekit info --json | head`: the reader left, nothing is wrong
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        where = f"{e.filename}: " if e.filename else ""
        return fail(f"{where}{e.strerror or e}")
    except KeyboardInterrupt:
        print("vaekit: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug in vaekit: still one line, the traceback on request
        if os.environ.get("VAEKIT_DEBUG"):
            raise
        fail(f"unexpected {type(e).__name__}: {str(e)[:300]} (a bug in vaekit; VAEKIT_DEBUG=1 shows the "
             "traceback)")
        return 1


def fail(message: str, limit: int = 400) -> int:
    """One line on stderr; a message echoing a huge input (a path, a value) is cut in the middle."""
    message = " ".join(message.split())
    if len(message) > limit:
        message = f"{message[:limit // 2]} ... {message[-limit // 2:]}"
    print(f"vaekit: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
