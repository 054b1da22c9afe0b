"""Commands over one checkpoint's model: sample, reconstruct, encode, decode (and what they share)."""

from __future__ import annotations

import argparse
import dataclasses
import zipfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from vaekit.config import short
from vaekit.errors import VaekitError
from vaekit.files import atomic_write, npy_writer


def load_model(path: str, device: str):
    from vaekit.devices import pick_device
    from vaekit.models import load_model as load

    dev = pick_device(device)
    model = load(path, map_location=dev)
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
                 make: Callable[[int, int], Any], nrow: int | None = None) -> None:
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
        save_grid(torch.cat(kept), args.out, nrow=nrow)
        print(f"{n} {what} -> {args.out}")
    if args.files:
        print(f"{n} PNG files -> {args.files}")
    if args.npy:
        print(f"{n} images as uint8 (N, C, H, W) -> {args.npy}")


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    model, device = load_model(args.checkpoint, args.device)
    if args.prior not in model.priors:
        raise VaekitError(f"{args.checkpoint}: no prior {short(args.prior)} in this checkpoint (its priors: "
                          f"{', '.join(model.priors)}); training saves a Gaussian mixture 'gmm' and a second-stage "
                          "VAE 'two-stage' into a run's best checkpoint unless --gmm-components or --two-stage-epochs "
                          "is 0 (or it was trained by compare --quick)")
    n, labels, nrow, what = chosen_labels(model, args, device)
    generator = torch.Generator(device).manual_seed(args.seed)
    write_images(args, n, model.config.image_shape, f"samples from {model.priors[args.prior].words}{what}",
                 "samples.png", lambda start, stop: model.sample(stop - start, generator=generator, prior=args.prior,
                                                                 y=None if labels is None else labels[start:stop]),
                 nrow)
    return 0


def chosen_labels(model, args: argparse.Namespace, device):
    """What `sample` draws: (count, labels or None, grid row length, words). --label NAME draws one class; a
    conditional model given none draws a grid with one row per class (-n rounded down to whole rows), or, into
    --files or --npy alone, -n images with the classes in turn."""
    from vaekit.config import class_word

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


def dataset_for(model, args: argparse.Namespace, whole: bool = False, labelled: bool = True):
    """The data set a command works on: the checkpoint's own, or --data (same loading settings; with `whole`, a
    folder or array file unsplit, all of it as the test split); its labels checked against a conditional model's
    classes where the command uses them (`labelled`)."""
    from vaekit.config import trained_data_config
    from vaekit.data import evaluation_view, load_dataset

    config = trained_data_config(model.meta)
    if args.data:
        config = dataclasses.replace(config, name=args.data, classes="")  # another set: all of it
    data = evaluation_view(load_dataset(config, whole=whole and bool(args.data)), config)
    if data.shape != tuple(model.config.image_shape):
        raise VaekitError(f"{config.name}: images are {data.shape}, the model wants {tuple(model.config.image_shape)}")
    for split in (data.train, data.val, data.test) if labelled else ():
        model.conditioning.check(split.labels, data.spec)
    return data, config


def cmd_reconstruct(args: argparse.Namespace) -> int:
    import torch

    from vaekit.data import Batches
    from vaekit.images import save_grid

    model, device = load_model(args.checkpoint, args.device)
    check_output(Path(args.out), args.overwrite)
    images = dataset_for(model, args)[0].split(args.split)
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

    from vaekit.models.conditioning import class_list

    if model.classes and args.label is None:
        raise VaekitError(f"this model is conditional: --label chooses the class to decode (its classes: "
                          f"{class_list(model.classes, model.class_names)})")
    label = None if args.label is None else model.label(args.label)

    def decode(start: int, stop: int) -> torch.Tensor:
        z = torch.from_numpy(np.array(codes[start:stop], dtype=np.float32)).to(device)
        if not torch.isfinite(z).all():
            raise VaekitError(f"{args.codes}: contains NaN or infinite values (rows {start}-{stop - 1})")
        return model.generate(z, None if label is None else model.conditioning.fill(label, len(z), device))

    write_images(args, len(codes), model.config.image_shape, "decoded images", "decoded.png", decode)
    return 0


PARITY_IMAGES = 256  # test images the ONNX graphs are checked on


def cmd_export(args: argparse.Namespace) -> int:
    """A folder another program can use: config.json + model.safetensors (+ priors), the model card, and with
    --format onnx the encoder and decoder graphs, checked against PyTorch."""
    import shutil
    import tempfile

    from vaekit.card import model_card
    from vaekit.files import check_run_folder, new_run_folder, read_json, write_text
    from vaekit.layout import CARD_FILE, CONFIG_FILE
    from vaekit.models import export
    from vaekit.models.saving import resolve_checkpoint

    if args.format == "onnx":
        export.require_extra()
    model, _ = load_model(args.checkpoint, "cpu")
    source = resolve_checkpoint(args.checkpoint)
    check_run_folder(args.out, args.overwrite, [source])  # before the graphs are built
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
        with new_run_folder(args.out, args.overwrite, [source]) as out:
            model.save_pretrained(out, {**model.meta, **({"test": test} if test else {})})
            for file in graphs.values():
                shutil.move(file, out / file.name)
            write_text(out / CARD_FILE, model_card(read_json(out / CONFIG_FILE), test, priors=list(model.priors),
                                                   extra=extra))
    print(f"exported {model.kind.upper()} to {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
    return 0


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
