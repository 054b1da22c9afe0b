"""Commands over one checkpoint's model: sample, reconstruct, encode, decode (and what they share)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import zipfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from vaekit.config import class_word, short
from vaekit.errors import VaekitError
from vaekit.files import atomic_write, npy_writer
from vaekit.outputs import claim


def load_model(path: str, device: str):
    from vaekit.devices import pick_device
    from vaekit.models import load_model as load

    dev = pick_device(device)
    model = load(path, map_location=dev)
    model.eval()
    return model, dev


def checkpoint_inputs(path: str | Path) -> list[Path]:
    from vaekit.models.saving import checkpoint_files

    return checkpoint_files(path)


def batch_ranges(n: int, batch: int) -> list[tuple[int, int]]:
    return [(i, min(n, i + batch)) for i in range(0, n, batch)]


MAX_GRID = 1024  # images in one PNG grid; more go to --files


def write_images(args: argparse.Namespace, model, n: int, what: str, make: Callable[[int, int], Any],
                 nrow: int | None = None, rows: list[str] | None = None) -> None:
    """Shared by `sample` and `decode`: images made batch by batch by `make(start, stop)`, so memory stays
    bounded for any N, written to a PNG grid (--out), one PNG each (--files) and/or a uint8 array (--npy)."""
    import numpy as np
    import torch

    from vaekit.images import save_files, save_grid, to_uint8
    from vaekit.models.footprint import check_batch
    from vaekit.progress import bar

    check_batch(model.config, min(args.batch_size, n), "--batch-size", device=model.device)
    shape = model.config.image_shape
    if args.out and n > MAX_GRID:
        raise VaekitError(f"{n} images are too many for one grid; write them with --files DIR or --npy FILE")
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
        save_grid(torch.cat(kept), args.out, nrow=nrow, row_labels=rows)
        print(f"{n} {what} -> {args.out}")
    if args.files:
        print(f"{n} PNG files -> {args.files}")
    if args.npy:
        print(f"{n} images as uint8 (N, C, H, W) -> {args.npy}")


def image_outputs(args: argparse.Namespace, default_out: str, inputs: list[Path]):
    """`claim` for the outputs of `sample` and `decode`: the grid (--out, `default_out` when no output is named), the
    array (--npy) and the folder of files (--files)."""
    if args.out is None and args.files is None and args.npy is None:
        args.out = default_out
    return claim([args.out, args.npy], inputs, args.overwrite, folders=[args.files])


def cmd_sample(args: argparse.Namespace) -> int:
    model, device = load_model(args.checkpoint, args.device)
    with image_outputs(args, "samples.png", checkpoint_inputs(args.checkpoint)):
        return sample(model, device, args)


def sample(model, device, args: argparse.Namespace) -> int:
    import torch

    from vaekit.models.samplers import OWN, SAMPLERS

    args.prior = args.prior or OWN
    if args.prior not in model.priors:
        fitted = ", ".join(f"'{name}' ({s.label}) unless --{s.size.replace('_', '-')} is 0"
                           for name, s in SAMPLERS.items() if s.fits(model.latent))
        raise VaekitError(f"{args.checkpoint}: no prior {short(args.prior)} in this checkpoint (its priors: "
                          f"{', '.join(model.priors)}); training saves into a run's best checkpoint {fitted} (none "
                          "when it was trained by compare --quick)")
    n, labels, nrow, what = chosen_labels(model, args, device)
    generator = torch.Generator(device).manual_seed(args.seed)
    write_images(args, model, n, f"samples from {model.priors[args.prior].words}{what}",
                 lambda start, stop: model.sample(stop - start, generator=generator, prior=args.prior,
                                                  y=None if labels is None else labels[start:stop]), nrow,
                 rows=[class_word(c, model.class_names) for c in range(model.classes)] if nrow else None)
    return 0


def chosen_labels(model, args: argparse.Namespace, device):
    """What `sample` draws: (count, labels or None, grid row length, words). --label NAME draws one class; a
    conditional model given none draws a grid with one row per class (-n rounded down to whole rows), or, into
    --files or --npy alone, -n images with the classes in turn."""
    n = args.n
    if args.label is not None:
        index = model.label(args.label)
        return n, model.conditioning.fill(index, n, device), None, f" of class {class_word(index, model.class_names)}"
    if not model.classes:
        return n, None, None, ""
    if args.out is None and (args.files or args.npy):  # files and arrays alone take -n as it is
        return n, model.conditioning.spread(n, device), None, ", the classes in turn"
    n, row = model.conditioning.grid(n)
    if model.classes > MAX_GRID:
        raise VaekitError(f"this model has {model.classes} classes, too many for a grid with one row each (at most "
                          f"{MAX_GRID} images); choose one with --label CLASS, or write them with --files DIR or "
                          "--npy FILE")
    return n, model.conditioning.spread(n, device), row, f", one row per class ({row} of each)"


def data_config_for(model, args: argparse.Namespace):
    """How a command reads its images: the checkpoint's own data and settings, or --data, all of it, read as `vaekit
    ood` reads another set (folders at the model's size and channels)."""
    from vaekit.config import trained_data_config
    from vaekit.data.shifts import other_data_config

    config = trained_data_config(model.meta)
    config = other_data_config(config, args.data, model.config.image_shape) if args.data else config
    asked = vars(args)
    return dataclasses.replace(config, skip_bad_images=config.skip_bad_images or asked.get("skip_bad_images", False),
                               hidden_files=config.hidden_files or asked.get("hidden_files", False))


def data_inputs(model, args: argparse.Namespace) -> list[Path]:
    """The files or folder --data (or the model's own data) is read from."""
    from vaekit.data import data_paths

    return data_paths(data_config_for(model, args))


def dataset_for(model, args: argparse.Namespace, whole: bool = False, labelled: bool = True):
    """The data set a command works on (`data_config_for`; with `whole`, a folder or array file of --data unsplit,
    all of it as the test split); its labels checked against a conditional model's classes where the command uses
    them (`labelled`)."""
    from vaekit.data import evaluation_view, load_dataset

    config = data_config_for(model, args)
    data = evaluation_view(load_dataset(config, whole=whole and bool(args.data)), config)
    if not args.data:
        data.check_unchanged(model.meta.get("data_split"), args.checkpoint)
    for note in data.notes if args.data else ():  # what reading another set did (the model's own: said in training)
        print(f"data: {note}", file=sys.stderr)
    if data.shape != tuple(model.config.image_shape):
        raise VaekitError(f"{config.name}: images are {data.shape}, the model wants {tuple(model.config.image_shape)}")
    for split in (data.train, data.val, data.test) if labelled else ():
        model.conditioning.check(split.labels, data.spec)
    return data, config


def images_for(model, args: argparse.Namespace):
    """What reconstruct and encode read: --split of the model's own data (test unless given), or all of a folder or
    array file given as --data (a built-in set: its test split, unless --split names another)."""
    whole = bool(args.data) and args.split is None
    data = dataset_for(model, args, whole=whole)[0]
    return data.test if whole else data.split(args.split or "test")


def cmd_reconstruct(args: argparse.Namespace) -> int:
    model, device = load_model(args.checkpoint, args.device)
    with claim([args.out], [*checkpoint_inputs(args.checkpoint), *data_inputs(model, args)], args.overwrite):
        return reconstruct(model, device, args)


def reconstruct(model, device, args: argparse.Namespace) -> int:
    import torch

    from vaekit.data import Batches
    from vaekit.images import save_grid

    images = images_for(model, args)
    if not len(images):
        raise VaekitError(f"no {args.split or 'test'} images to reconstruct")
    n = min(args.n, len(images))
    x, y = next(iter(Batches(images.subset(torch.arange(n)), n, device)))
    with torch.no_grad():
        recon = model.reconstruct(x, y)
    cols = min(8, n)
    rows = []  # a row of originals above the row of their reconstructions
    for i in range(0, n, cols):
        rows += [x[i:i + cols], recon[i:i + cols]]
    save_grid(torch.cat(rows), args.out, nrow=cols)
    err = model.likelihood.nll(x, model.decode(model.embed(x, y), y)).mean().item()
    print(f"{n} images (top rows) and their reconstructions (rows below) -> {args.out}; "
          f"-log p(x|z) at the code: {err:.2f} nats/image")
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    model, device = load_model(args.checkpoint, args.device)
    inputs = [*checkpoint_inputs(args.checkpoint), *data_inputs(model, args)]
    with claim([args.out, args.labels], inputs, args.overwrite):
        return encode(model, device, args)


def encode(model, device, args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from vaekit.data import Batches
    from vaekit.models.footprint import check_batch
    from vaekit.progress import bar

    out = Path(args.out)
    images = images_for(model, args)
    check_batch(model.config, max(1, min(args.batch_size, len(images))), "--batch-size", device=device)
    with npy_writer(out, (len(images), model.latent_dim), np.float32) as write, torch.no_grad():  # any N fits
        for x, y in bar(Batches(images, args.batch_size, device), desc="encoding"):
            q = model.encode(x, y)
            write((q.sample() if args.sample else q.mean).cpu().numpy())
    what = ("samples z ~ q(z|x)" if args.sample else "posterior means") if model.has_density else "codes z = E(x)"
    print(f"{len(images)} {what} ({model.latent_dim} dims) -> {out}")
    if args.labels and images.labels is not None:
        with atomic_write(args.labels) as tmp:
            np.save(tmp, images.labels.cpu().numpy())
        print(f"labels -> {args.labels}")
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    model, device = load_model(args.checkpoint, args.device)
    with image_outputs(args, "decoded.png", [*checkpoint_inputs(args.checkpoint), Path(args.codes)]):
        return decode(model, device, args)


def decode(model, device, args: argparse.Namespace) -> int:
    import numpy as np
    import torch

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
    if not len(codes):
        raise VaekitError(f"{args.codes}: holds no codes (shape {codes.shape}); nothing to decode")

    from vaekit.models.conditioning import class_list

    if model.classes and args.label is None:
        raise VaekitError(f"this model is conditional: --label chooses the class to decode (its classes: "
                          f"{class_list(model.classes, model.class_names)})")
    label = None if args.label is None else model.label(args.label)

    def decode_rows(start: int, stop: int) -> torch.Tensor:
        z = torch.from_numpy(np.array(codes[start:stop], dtype=np.float32)).to(device)
        if not torch.isfinite(z).all():
            raise VaekitError(f"{args.codes}: contains NaN or infinite values (rows {start}-{stop - 1})")
        return model.generate(z, None if label is None else model.conditioning.fill(label, len(z), device))

    write_images(args, model, len(codes), "decoded images", decode_rows)
    return 0


PARITY_IMAGES = 256  # test images the ONNX graphs are checked on


def cmd_export(args: argparse.Namespace) -> int:
    """A folder another program can use: config.json + model.safetensors (+ priors), the model card, and with
    --format onnx the encoder and decoder graphs, checked against PyTorch."""
    import shutil
    import tempfile

    from vaekit.files import read_json, write_text
    from vaekit.layout import CARD_FILE, CONFIG_FILE
    from vaekit.models import export
    from vaekit.models.card import model_card
    from vaekit.outputs import check_run_folder, new_run_folder

    if args.format == "onnx" or args.scoring:
        export.require_extra()
    model, _ = load_model(args.checkpoint, "cpu")
    sources = [*checkpoint_inputs(args.checkpoint), *([Path(args.scoring)] if args.scoring else [])]
    check_run_folder(args.out, args.overwrite, sources)  # before the graphs are built
    test = measured_test(Path(args.checkpoint), model.meta)
    with tempfile.TemporaryDirectory(prefix="vaekit-export-") as tmp:
        graphs, extra = {}, []
        if args.format == "onnx":  # made and checked before the output folder is touched
            images, labels, what = parity_images(model, args)
            graphs = export.export_graphs(model, Path(tmp))
            diff = export.parity(model, graphs, images, labels)
            words = f"{export.parity_words(diff)} ({what} and their codes, with as many draws from N(0, I))"
            extra = [export.usage(model) + f"\nChecked at export with onnxruntime (CPU): {words}.\n"]
            print(f"ONNX: {words}")
        if args.scoring:
            graphs["scoring"], section = scoring_export(model, args, Path(tmp))
            extra.append(section)
        with new_run_folder(args.out, args.overwrite, sources, keep_failed=False) as out:
            model.save_pretrained(out, {**model.meta, **({"test": test} if test else {})})
            for file in Path(tmp).iterdir():  # the graphs, and the weights beside a large one's
                shutil.move(file, out / file.name)
            write_text(out / CARD_FILE, model_card(read_json(out / CONFIG_FILE), test, priors=list(model.priors),
                                                   extra=extra))
    print(f"exported {model.preset.label} to {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
    return 0


def scoring_export(model, args: argparse.Namespace, folder: Path) -> tuple[Path, str]:
    """scoring.onnx from `vaekit inspect`'s calibration.json (--scoring), checked against PyTorch; its card section."""
    from vaekit.jobs.inspection import export_scoring, read_calibration, scoring_usage

    chosen = read_calibration(args.scoring, model)
    images, _, what = parity_images(model, args)
    file, words = export_scoring(model, chosen, folder, images)
    print(f"scoring ONNX: {words}")
    return file, scoring_usage(model, chosen) + f"\nChecked at export with onnxruntime (CPU) on {what}: {words}.\n"


def measured_test(path: Path, meta: dict) -> dict | None:
    """The test metrics for the card: a run's summary.json, or an export's own; left out where unreadable (a damaged
    summary costs the card a row, not the export)."""
    from vaekit.files import read_json
    from vaekit.layout import RunFolder

    summary = RunFolder(path).summary
    try:
        test = read_json(summary).get("test") if summary.is_file() else meta.get("test")
    except (VaekitError, AttributeError):
        test = None
    if summary.is_file() and not isinstance(test, dict):
        print(f"({summary} holds no readable test metrics: the card leaves them out)")
    return test if isinstance(test, dict) else None


def parity_images(model, args: argparse.Namespace):
    """The images the graphs are checked on, and their labels: the model's own test images where its data set is at
    hand, else uniform noise of its shape (a checkpoint exported away from its data; labels None: the classes in
    turn)."""
    import torch

    from vaekit.evaluation.evaluate import first_labelled

    try:
        images, labels = first_labelled(dataset_for(model, args)[0].test, PARITY_IMAGES)
        return images, labels if model.classes else None, "the model's test images"
    except VaekitError as e:
        print(f"(the model's data set is not at hand: {e}; the ONNX graphs are checked on uniform noise)")
        noise = torch.rand(PARITY_IMAGES, *model.config.image_shape, generator=torch.Generator().manual_seed(0))
        return noise, None, "images of uniform noise"
