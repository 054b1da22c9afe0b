"""`vaekit compare`: members of the family with identical networks, data, seed and budget, measured side by side.

The default is the seed's comparison, an AE and a VAE; `--models` takes any presets. Writes a run folder with one
ordinary run per model (ae/, vae/, ...), metrics.json (the typed `Comparison`) and the page the caller's renderer
draws from everything measured (`Compared`), report.html.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from vaekit.config import DataConfig, RunConfig, trained_data_config
from vaekit.data import Dataset, data_paths, evaluation_view, load_dataset
from vaekit.data.sources import data_home
from vaekit.devices import pick_device
from vaekit.errors import VaekitError
from vaekit.evaluation.checks import check_inputs
from vaekit.evaluation.evaluate import (
    EvalSettings,
    Evaluation,
    can_score_samples,
    evaluate_model,
    feature_notes,
    first_labelled,
    reference,
)
from vaekit.evaluation.inception import verified as verified_inception
from vaekit.evaluation.latent import interpolate
from vaekit.evaluation.results import Comparison
from vaekit.files import parse_json, write_json, write_text
from vaekit.layout import METRICS_FILE, REPORT_FILE, RunFolder
from vaekit.models import PRESETS, Autoencoder, load_model
from vaekit.models.conditioning import line_labels
from vaekit.models.presets import PLAIN, VARIATIONAL
from vaekit.models.saving import checkpoint_files
from vaekit.outputs import new_run_folder
from vaekit.progress import say as show
from vaekit.training import train

DEFAULT_MODELS = (PLAIN, VARIATIONAL)  # the seed's comparison
MIN_STEPS = 500  # fewer optimisation steps than this are said when training, and in the report of a model that did
# not learn; a comparison without --epochs trains at least this many
QUICK_EPOCHS = 2  # --quick's training, where the set is large enough
MAX_SIZED_EPOCHS = 200


@dataclass
class Compared:
    """What a comparison measured (`metrics`, as written to metrics.json) and what its page draws beside the numbers:
    the models, their evaluations' samples and codes, the data, the training histories, the settings, the
    interpolations (pairs, steps, C, H, W) of each model."""

    metrics: Comparison
    models: dict[str, Autoencoder]
    evals: dict[str, Evaluation]
    data: Dataset
    histories: dict[str, list[dict]]
    settings: EvalSettings
    interpolations: dict[str, torch.Tensor]


Page = Callable[[Compared], str]  # a comparison's report.html, drawn by report/


def label(name: str) -> str:
    return PRESETS[name].label


def compare(run: RunConfig, out: Path, page: Page, *, names: Sequence[str] = DEFAULT_MODELS, quick: bool = False,
            checkpoints: Mapping[str, str] | None = None, data_name: str | None = None, overwrite: bool = False,
            quiet: bool = False, inputs: Sequence[Path] = (), inception: bool = False,
            epochs_given: bool = False) -> Comparison:
    """Train the presets `names` (or load them: `checkpoints` maps a preset name to a run or checkpoint folder),
    evaluate every one, write metrics.json and the `page` drawn from everything measured (report.html) into `out`.

    Checkpoints are evaluated on the data they were trained on (which must be the same for all), or on `data_name`
    when given; models trained here use that data, for `sized` epochs unless `epochs_given`. Every input is checked
    before `out` is touched; see `files.new_run_folder`."""
    started = time.perf_counter()
    say = (lambda msg: None) if quiet else show
    settings = EvalSettings.chosen(quick, inception)
    if inception:
        verified_inception()  # before any training, as the data check below
    checkpoints = dict(checkpoints or {})
    names = list(dict.fromkeys([*names, *checkpoints]))
    unknown = [n for n in names if n not in PRESETS]
    if unknown or len(names) < 2:
        raise VaekitError(f"unknown model {unknown[0]!r} (choose from {', '.join(PRESETS)})" if unknown else
                          f"a comparison needs at least two models, got {', '.join(names) or 'none'} (--models trains "
                          "others beside a checkpoint)")
    device = pick_device(run.train.device)  # the evaluation runs where the training does
    models = {name: load_checked(name, given, device) for name, given in checkpoints.items()}
    if models:
        trained_on = checkpoints_data(models, checkpoints, check=not data_name)
        run = replace(run, data=replace(trained_on, name=data_name) if data_name else trained_on)
    data = evaluation_view(load_dataset(run.data), run.data)
    check_inputs(data, settings)
    for name, model in models.items():
        if tuple(model.config.image_shape) != data.shape:
            raise VaekitError(f"{checkpoints[name]}: the model takes {tuple(model.config.image_shape)} images, "
                              f"{data.spec} has {data.shape}")
        if not data_name:
            data.check_unchanged(model.meta.get("data_split"), checkpoints[name])
    if quick:  # the samplers are fitted by the evaluation, smaller, and not saved
        run = replace(run, train=replace(run.train, gmm_components=0, two_stage_epochs=0, code_prior_epochs=0))
    if len(models) < len(names):
        run, sizing = sized(run, len(data.train), quick, epochs_given)
        data.notes = [*data.notes, *([sizing] if sizing else [])]  # said by the training, and on the page
    given = [file for path in checkpoints.values() for file in checkpoint_files(path)]
    with new_run_folder(out, overwrite, [*inputs, *given, *data_paths(run.data)]):
        for name in names:
            if name not in models:
                say(f"training the {label(name)} ({training_words(run, len(data.train))})")
                train(replace(run, model=replace(run.model, kind=name)), out / name, quiet=quiet, dataset=data)
                models[name] = load_model(out / name, map_location=device)
        models = {name: models[name] for name in names}
        compared = measure(run, out, models, data, settings, quick, say, quiet, checkpoints)
        compared.metrics.seconds = time.perf_counter() - started
        write_json(out / METRICS_FILE, compared.metrics.to_json())
        write_text(out / REPORT_FILE, page(compared))
        say(summary_line(compared.metrics) + f"\nreport: {out / REPORT_FILE}")
        return compared.metrics


def sized(run: RunConfig, images: int, quick: bool, epochs_given: bool) -> tuple[RunConfig, str | None]:
    """The training's epochs for `images` training images: as given; else --quick's QUICK_EPOCHS (or the default),
    raised on a small set to reach MIN_STEPS (at most MAX_SIZED_EPOCHS). Returns the run and what was done, in words
    (None: nothing)."""
    if epochs_given:
        return run, None
    per_epoch = math.ceil(images / run.train.batch_size)
    epochs = min(run.train.epochs, QUICK_EPOCHS) if quick else run.train.epochs
    note = None
    if epochs * per_epoch < MIN_STEPS:
        needed = min(MAX_SIZED_EPOCHS, math.ceil(MIN_STEPS / per_epoch))
        steps = needed * per_epoch
        short_of = f" (at most {MAX_SIZED_EPOCHS}: {steps} steps)" if steps < MIN_STEPS else ""
        note = (f"trained {needed} epochs instead of {epochs}{short_of}: {images} training images make {per_epoch} "
                f"steps an epoch at batch {run.train.batch_size}, and a model needs about {MIN_STEPS} steps to learn "
                "anything (--epochs sets the number)")
        epochs = needed
    return replace(run, train=replace(run.train, epochs=epochs)), note


def training_words(run: RunConfig, images: int) -> str:
    """A training's length in epochs and steps, and a word where the steps are few."""
    steps = run.train.epochs * math.ceil(images / run.train.batch_size)
    few = ", few: the report checks whether each model learned (--epochs, or a smaller --batch-size, gives more)" \
        if steps < MIN_STEPS else ""
    return f"{run.train.epochs} epochs, {steps} steps{few}"


def load_checked(name: str, given: str, device: torch.device) -> Autoencoder:
    model = load_model(given, map_location=device)
    if model.kind != name:
        raise VaekitError(f"{given}: expected {article(name)} {label(name)} checkpoint, found {article(model.kind)} "
                          f"{label(model.kind)}")
    return model


def article(name: str) -> str:
    return "an" if label(name)[0] in "AEIOUR" else "a"  # an AE, an IWAE, an RAE; a VAE, a beta-VAE


def checkpoints_data(models: dict[str, Autoencoder], paths: Mapping[str, str], check: bool = True) -> DataConfig:
    """The data set all checkpoints were trained on; two different ones are refused, naming both (unless
    `check` is off: the caller names the data set)."""
    configs = {name: trained_data_config(m.meta) for name, m in models.items()}
    first = next(iter(configs))
    if check:
        keys = ("name", "binarize", "image_size", "channels", "resize", "background")
        for name, config in configs.items():
            diff = next((k for k in keys if getattr(config, k) != getattr(configs[first], k)), None)
            if diff is not None:
                raise VaekitError(f"the checkpoints were trained on different data ({diff}: "
                                  f"{getattr(configs[first], diff)!r} in {paths[first]}, {getattr(config, diff)!r} in "
                                  f"{paths[name]}); pass --data to evaluate them on one set")
    return configs[first]


def measure(run: RunConfig, out: Path, models: dict[str, Autoencoder], data: Dataset, settings: EvalSettings,
            quick: bool, say, quiet: bool, checkpoints: Mapping[str, str]) -> Compared:
    """Evaluate every model, and what the page draws beside the numbers."""
    settings.seed = run.train.seed
    if can_score_samples(data):
        say("feature classifier for sample quality (cached after the first run)")
    device = next(iter(models.values())).device
    ref = reference(data, settings, data_home(run.data), device, quiet)
    evals = {name: evaluate_model(model, data, settings, ref, quiet=quiet) for name, model in models.items()}
    histories = {name: read_history(Path(checkpoints.get(name, out / name))) for name in models}
    for name, e in evals.items():
        e.result.training_seconds = training_seconds(histories[name])
        e.result.training_steps = training_steps(histories[name])
    metrics = Comparison(models=list(models), checkpoints=checkpoint_paths(out, models, checkpoints),
                         data=data.spec, labels=data.label_source, data_notes=data.notes, quick=quick,
                         settings=settings.__dict__, classifier_accuracy=ref and ref.accuracy,
                         real_floor=ref.floor if ref and ref.classifier else None,
                         inception_floor=ref.floor.inception_fid if ref else None,
                         features=feature_notes(ref, settings) if ref else {},
                         results={name: e.result for name, e in evals.items()},
                         same_networks=same_networks(list(models.values())))
    pairs = first_labelled(data.test, 2 * INTERPOLATION_PAIRS)
    interpolations = {name: interpolate_pairs(model, *pairs) for name, model in models.items()}
    if ref and ref.classifier:
        metrics.interpolation_confidence = {
            name: ref.classifier.features_and_confidence(imgs[:, 1:-1].flatten(0, 1))[1].mean().item()
            for name, imgs in interpolations.items()}
    return Compared(metrics, models, evals, data, histories, settings, interpolations)


def checkpoint_paths(out: Path, models: Mapping[str, Autoencoder], checkpoints: Mapping[str, str]) -> dict[str, str]:
    """Where each model's run folder is, relative to `out` (its own subfolder when it was trained here)."""
    return {name: os.path.relpath(Path(checkpoints.get(name, out / name)).resolve(), out.resolve()) for name in models}


def training_steps(history: list[dict]) -> int | None:
    """The optimisation steps of a run, from its last row (None where the history is not at hand)."""
    step = history[-1].get("step") if history else None
    return int(step) if isinstance(step, (int, float)) and 0 <= step < 2**62 else None


def training_seconds(history: list[dict]) -> float | None:
    """The training epochs' seconds, summed (None for a checkpoint whose history is not at hand)."""
    return sum(row["seconds"] for row in history) if history else None


def same_networks(models: Sequence[Autoencoder]) -> bool:
    """Whether all models have the same architecture, layer sizes, latent dimension and likelihood (the numbers of
    models with other likelihoods are in other units)."""
    shapes = {(c.arch, c.hidden, c.channels, c.res_blocks, c.attention, c.latent_dim, c.latent_channels, c.classes,
               c.likelihood, c.mixture_components)
              for c in (m.config for m in models)}
    return len(shapes) == 1


INTERPOLATION_PAIRS, INTERPOLATION_STEPS = 50, 10


@torch.no_grad()
def interpolate_pairs(model: Autoencoder, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Decodings along straight lines between the codes of image pairs: (pairs, steps, C, H, W). A conditional model
    encodes each image with its label and decodes the first half of a line as the first image's class, the rest as
    the second's."""
    y = None if labels is None else labels.to(model.device)
    z = model.embed(images.to(model.device), y).cpu()
    lines = [interpolate(z[i], z[i + 1], INTERPOLATION_STEPS) for i in range(0, len(z) - 1, 2)]
    labels = None if y is None else \
        torch.cat([line_labels(y[i:i + 2], INTERPOLATION_STEPS) for i in range(0, len(z) - 1, 2)])
    decoded = model.generate(torch.cat(lines).to(model.device), labels).cpu()
    return decoded.reshape(len(lines), INTERPOLATION_STEPS, *decoded.shape[1:])


HISTORY_KEYS = ("epoch", "seconds", "val_recon", "val_kl", "val_loss")  # what the report reads of each row


def read_history(run_dir: Path) -> list[dict]:
    """A run's metrics.jsonl rows; none for a checkpoint folder, or for a log that is not one vaekit wrote."""
    f = RunFolder(run_dir).metrics_jsonl
    try:
        rows = [parse_json(line) for line in f.read_text().splitlines() if line.strip()] if f.is_file() else []
    except (OSError, ValueError):
        return []
    numbers = all(isinstance(r, dict) and all(isinstance(r.get(k), (int, float)) for k in HISTORY_KEYS) for r in rows)
    return rows if numbers else []


def summary_line(m: Comparison) -> str:
    if m.real_floor is None:
        return "(no labels: sample quality not scored)"
    scores = ", ".join(f"{label(name)}-{sampler} {s.frechet:.2f}" for name in m.models
                       for sampler, s in m[name].samples.items())
    return f"Frechet distance to real test images (lower is better): {scores}, real {m.real_floor.frechet:.2f}"
