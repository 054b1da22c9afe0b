"""Commands that train or measure: train, compare, evaluate, serve, info."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from vaekit.cli.flags import given_settings, resume_conflicts, run_config_from_args
from vaekit.cli.models import checkpoint_inputs, data_inputs, dataset_for, load_model
from vaekit.config import DataConfig, RunConfig, short, to_dict
from vaekit.errors import VaekitError, printable
from vaekit.files import read_json, write_json
from vaekit.layout import RunFolder
from vaekit.outputs import claim


def fmt_or_na(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def default_out(run: RunConfig) -> Path:
    data = run.data.name.split(":")[0].replace("/", "-")
    return Path("runs") / f"{run.model.kind}-{data}-{time.strftime('%Y%m%d-%H%M%S')}"


def cmd_train(args: argparse.Namespace) -> int:
    from vaekit.training import train
    from vaekit.training.checkpoint import stored_run

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
    from vaekit.jobs.compare import DEFAULT_MODELS, compare
    from vaekit.report.page import render

    checkpoints = dict(args.use)
    if len(checkpoints) < len(args.use):
        twice = next(name for name, _ in args.use if sum(n == name for n, _ in args.use) > 1)
        raise VaekitError(f"--use names {twice} twice; one checkpoint per model")
    for name in DEFAULT_MODELS:  # their flags, --ae and --vae
        given = getattr(args, name)
        if given is not None and checkpoints.setdefault(name, given) != given:
            raise VaekitError(f"--{name} and --use {name}=... name two different checkpoints")
    run = run_config_from_args(args)
    out = Path(args.out) if args.out else Path("runs") / f"compare-{run.data.name.split(':')[0]}-" \
        f"{time.strftime('%Y%m%d-%H%M%S')}"
    names = args.models if args.models is not None else [] if checkpoints else list(DEFAULT_MODELS)
    metrics = compare(run, out, render, names=names, quick=args.quick, checkpoints=checkpoints,
                      inception=args.inception_fid, data_name=vars(args).get("data.name"), overwrite=args.overwrite,
                      quiet=args.quiet, inputs=[Path(args.config)] if args.config else [],
                      epochs_given="epochs" in given_settings(args).get("train", {}))
    if args.quiet:
        print(json.dumps({"run": str(out), "seconds": metrics.seconds}))
    else:
        print(f"run folder: {out}  (open {out / 'report.html'} in a browser)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from vaekit.evaluation.evaluate import EvalSettings
    from vaekit.evaluation.inception import verified as verified_inception

    settings = EvalSettings.chosen(args.quick, args.inception_fid)
    if settings.inception:
        verified_inception()  # before any data is read
    settings.k = args.k or settings.k
    settings.n_samples = args.samples or settings.n_samples
    model, _ = load_model(args.checkpoint, args.device)
    with claim([args.json], [*checkpoint_inputs(args.checkpoint), *data_inputs(model, args)], args.overwrite):
        return evaluate(model, args, settings)


def evaluate(model, args: argparse.Namespace, settings) -> int:
    """`vaekit evaluate`, its output claimed."""
    from vaekit.data.sources import data_home
    from vaekit.evaluation.evaluate import evaluate_model, feature_notes, reference
    from vaekit.evaluation.results import CheckpointEvaluation

    data, config = dataset_for(model, args)
    ref = reference(data, settings, data_home(config), model.device)
    result = CheckpointEvaluation(**dict(evaluate_model(model, data, settings, ref).result),
                                  real_floor=ref.floor if ref else None,
                                  features=feature_notes(ref, settings) if ref else {})
    if args.json:
        write_json(args.json, result.to_json())
    print("\n".join(evaluation_lines(model, data, result)))
    return 0


def evaluation_lines(model, data, result) -> list[str]:
    """`vaekit evaluate` in words, from its CheckpointEvaluation."""
    import math

    from vaekit.models.likelihoods import bits_note
    from vaekit.training.log import tighter_bound

    t, floor = result.test, result.real_floor
    lines = [f"{model.preset.label} on {data.spec} test set ({t.images} images)",
             *(f"  ({note})" for note in data.notes),
             f"  reconstruction -log p(x|z)  {t.recon:.2f} nats/image"]
    if t.has_bound:
        bpd = t.nelbo / (math.prod(model.config.image_shape) * math.log(2))
        lines.append(f"  -ELBO                       {t.nelbo:.2f} nats/image = recon + KL {t.kl:.2f}  "
                     f"({bpd:.4f} bits/dim)")
        if tighter_bound(t.loss, t.nelbo):
            lines.append(f"  -bound it trains on         {t.loss:.2f} nats/image ({t.bpd:.4f} bits/dim)")
    lines.append(f"  ({bits_note(model.config.likelihood)})")
    if result.is_nll:
        i = result.is_nll
        lines.append(f"  IS-NLL, K={i.k:<5}           {i.nll:.2f} +- {i.stderr:.2f} nats/image on "
                     f"{i.images} images ({i.bpd:.4f} bits/dim; -ELBO on them {i.nelbo_same_images:.2f})")
    if result.reconstruction:
        r = result.reconstruction
        similar = f", SSIM {r.ssim:.3f}" if r.ssim is not None else " (no SSIM under 6 pixels a side)"
        lines.append(f"  reconstructions             PSNR {r.psnr:.2f} dB{similar} against the {r.images} test images")
        if r.frechet is not None or r.inception_fid is not None:
            rfid = f", rFID (Inception) {r.inception_fid:.2f}" if r.inception_fid is not None else ""
            lines.append(f"  reconstructions' distance   Frechet {fmt_or_na(r.frechet)} (classifier features){rfid}, "
                         f"{r.measured_on} reconstructions against the test images")
    la = result.latent
    inside = f"; {100 * la.inside_prior_99:.1f}% of codes inside N(0, I)'s 99% ball" \
        if la.inside_prior_99 is not None else ""
    lines.append(f"  active units                {la.active_units} of {model.latent_dim}{inside}")
    if la.codebook:
        book = la.codebook
        lines.append(f"  codebook                    {book.used} of {book.size} codes used by the test images "
                     f"(perplexity {book.perplexity:.1f}; {book.dead} never used)")
        lines.append(f"  -log p(x), uniform codes <= {book.uniform_bound:.2f} nats/image = recon + "
                     f"{book.code_nats:.2f}, the code's length when its {model.latent.tokens} tokens are drawn "
                     "uniformly (no tighter bound is computed for a discrete code here)")
    rows = [(f"samples from {name}", s, f"z ~ {result.priors[name]}") for name, s in result.samples.items()]
    if floor:
        rows.append((f"real held-out images ({floor.images})", floor, "the floor"))
    notes = result.features
    if "classifier" in notes:
        c = notes["classifier"]
        lines.append(f"  sample quality on the feature classifier's {c['features']} features ({c['real_images']} real "
                     f"test images, {c['samples']} samples; KID over {c['kid']['subsets']} subsets of "
                     f"{c['kid']['size']}; k-NN with k = {c['prdc']['k']} on {c['prdc']['real']} real and "
                     f"{c['prdc']['samples']} generated images):")
    for what, s, words in rows:
        lines.append(f"  {what:<27} {quality_words(s)}  ({words})")
    if rows and "inception" not in notes:
        from vaekit.evaluation.inception import missing_words

        lines.append(f"  {missing_words()}")
    return lines + conditional_lines(result, model.class_names)


def conditional_lines(result, names: list[str]) -> list[str]:
    """A conditional model's samples against the classes they were drawn as, overall and per class (samples from
    its own prior), beside real held-out images of each class."""
    from vaekit.config import class_word
    from vaekit.models.samplers import OWN
    from vaekit.report.conditional import SHOWN_CLASSES, shown_classes

    drawn, floor = result.conditional, result.real_floor and result.real_floor.conditional
    if not drawn:
        return []
    overall = ", ".join(f"{100 * c.accuracy:.1f}% of samples from {name}" for name, c in drawn.items())
    real = f" (real held-out images: {100 * floor.accuracy:.1f}%)" if floor else ""
    lines = [f"  conditional accuracy: the feature classifier names the requested class for {overall}{real}",
             "  per class, samples from prior: class, conditional accuracy, Frechet distance to that class's test "
             "images" + (" (real held-out images of it)" if floor else "")]
    real_rows = floor.by_class() if floor else {}
    classes = drawn.get(OWN, next(iter(drawn.values()))).by_class()
    for row in (classes[c] for c in shown_classes(list(classes), real_rows)):
        c, ref = row.klass, real_rows.get(row.klass)
        fd = f"{row.frechet:8.2f}" if row.frechet is not None else "     n/a"
        floor_words = f"  ({100 * ref.accuracy:.1f}%, {ref.frechet:.2f})" if ref and ref.frechet is not None else ""
        lines.append(f"    {class_word(c, names):<18} {100 * row.accuracy:6.1f}% {fd}{floor_words}")
    if len(classes) > SHOWN_CLASSES:
        lines.append(f"    ... {len(classes) - SHOWN_CLASSES} more classes (all of them in the output of --json FILE)")
    return lines


def quality_words(s) -> str:
    """One sampler's sample-quality numbers on a line (those measured)."""
    from vaekit.evaluation.evaluate import QUALITY_MEASURES

    words = [f"{name} {s.value(key):.{digits}f}" + (f" +- {s.kid_std:.3f}" if key == "kid" else "")
             for key, name, digits in QUALITY_MEASURES if s.value(key) is not None]
    return ", ".join(words)


def cmd_serve(args: argparse.Namespace) -> int:
    from vaekit.web.app import serve

    serve(args.paths, host=args.host, port=args.port, quiet=args.quiet, allow_remote=args.allow_remote,
          token=args.token, header_seconds=args.header_timeout)
    return 0


def objective_words(model) -> str:
    """The settings that weigh the preset's objective and prior (its words say what they are)."""
    used = [f"{name.replace('_', ' ')} {getattr(model.config, name):g}" for name in model.preset.uses]
    return ", ".join(used) or "reconstruction alone"


def cmd_info(args: argparse.Namespace) -> int:
    from vaekit.models.saving import resolve_checkpoint
    from vaekit.training.checkpoint import Progress

    model, _ = load_model(args.checkpoint, "cpu")
    summary_file = RunFolder(args.checkpoint).summary
    stored = model.meta.get("progress")
    progress = Progress.from_dict(stored) if isinstance(stored, dict) else None
    info = {"checkpoint": str(resolve_checkpoint(args.checkpoint)), "model": model.kind,
            "config": to_dict(model.config), "priors": {name: p.words for name, p in model.priors.items()},
            "parameters": sum(p.numel() for p in model.parameters()), "dataset": model.meta.get("dataset"),
            "progress": progress.to_dict() if progress else None, "metrics": model.meta.get("metrics"),
            "summary": read_json(summary_file) if summary_file.is_file() else None}
    info["trained_epochs"] = trained_epochs(args.checkpoint)
    print(json.dumps(info, indent=2) if args.json else "\n".join(info_lines(model, info, progress)))
    return 0


def trained_epochs(path: str) -> int | None:
    """The epochs a run folder's latest checkpoint has trained (None for a checkpoint folder, or unreadable)."""
    from vaekit.models.saving import checkpoint_meta

    latest = RunFolder(path).pointed("latest") if Path(path).is_dir() else None
    try:
        epoch = checkpoint_meta(latest).get("progress", {}).get("epoch") if latest else None
    except (VaekitError, AttributeError):
        return None
    return epoch if isinstance(epoch, int) else None


def info_lines(model, info: dict, progress) -> list[str]:
    """`vaekit info` in words."""
    from vaekit.models.networks import network_words
    from vaekit.training.log import loss_words

    c = model.config
    lines = [f"checkpoint   {info['checkpoint']}",
             f"model        {model.preset.label}  {c.arch}  latent {c.latent_dim}  {network_words(c)}"
             f"  {c.likelihood} likelihood  {info['parameters']:,} parameters",
             f"preset       {model.preset.words}",
             f"settings     {objective_words(model)}",
             f"priors       {', '.join(f'{name}: {words}' for name, words in info['priors'].items())}",
             f"data         {info['dataset'] or 'unknown'}  image {'x'.join(map(str, c.image_shape))}"]
    if model.classes:
        from vaekit.models.conditioning import class_list

        names = class_list(model.classes, model.class_names)
        lines.append(f"conditional  on the label, {model.classes} classes: {names} (vaekit sample --label CLASS)")
    metrics, summary = info["metrics"], info["summary"]
    if progress:
        run = info.get("trained_epochs")
        whole = f" (the best validation loss; the run trained {run} epochs)" if run not in (None, progress.epoch) \
            else ""
        lines.append(f"trained      {progress.epoch} epochs, {progress.step} steps at this checkpoint{whole}")
    try:
        if isinstance(metrics, dict) and "val_recon" in metrics:
            lines.append(f"validation   {loss_words(metrics, model.has_density, 'val_')}")
        if isinstance(summary, dict) and "test" in summary:
            t = summary["test"]
            lines.append(f"test         {loss_words(t, model.has_density)} on {t.get('images', '?')} images")
    except (KeyError, TypeError, ValueError) as e:
        lines.append(f"(the stored metrics lack {e} or hold it in another form: shown as stored with --json)")
    return lines


def cmd_cache(args: argparse.Namespace) -> int:
    from vaekit.data.cache import clear, entries
    from vaekit.data.sources import data_home

    if args.data_dir is not None and not (args.data_dir and Path(args.data_dir).is_dir()):
        raise VaekitError(f"--data-dir {short(args.data_dir)}: no such folder")
    folder = data_home(DataConfig(data_dir=args.data_dir or "")) / "folders"
    if args.action == "clear":
        removed, freed = clear(folder)
        print(f"removed {removed} decoded folder{'' if removed == 1 else 's'} ({freed / 2**20:,.1f} MiB) from {folder}")
        return 0
    found = entries(folder)
    for entry, meta in found:  # the description is a file on disk: nothing in it reaches the terminal raw
        print(f"{printable(meta['source'], 500)}: {meta['count']:,} images of {'x'.join(map(str, meta['shape']))}, "
              f"{meta['bytes'] / 2**20:,.1f} MiB, decoded {printable(meta['created'])} in {meta['seconds']:.1f} s "
              f"({entry})")
    copies = f"{len(found)} decoded folder{'' if len(found) == 1 else 's'}"
    print(f"{copies} in {folder}; `vaekit cache clear` removes them" if found else f"no decoded folders in {folder}")
    return 0
