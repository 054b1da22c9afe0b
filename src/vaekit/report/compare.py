"""`vaekit compare`: an AE and a VAE with identical networks, data, seed and budget, measured side by side.

Writes a run folder with ae/ and vae/ (ordinary runs), metrics.json and a self-contained report.html.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from vaekit.config import DataConfig, RunConfig, trained_data_config
from vaekit.data import Dataset, data_paths, evaluation_view, load_dataset
from vaekit.data.sources import data_home
from vaekit.errors import VaekitError
from vaekit.evaluation.classifier import load_or_train_classifier
from vaekit.evaluation.evaluate import (
    EvalSettings,
    can_score_samples,
    evaluate_model,
    real_reference,
    test_tensor,
)
from vaekit.evaluation.latent import interpolate
from vaekit.files import new_run_folder, write_json, write_text
from vaekit.layout import RunFolder
from vaekit.models import Autoencoder, load_model
from vaekit.progress import say as show
from vaekit.report.page import render
from vaekit.training import train


def compare(run: RunConfig, out: Path, *, quick: bool = False, checkpoints: tuple[str, str] | None = None,
            data_name: str | None = None, overwrite: bool = False, quiet: bool = False,
            inputs: Sequence[Path] = ()) -> dict[str, Any]:
    """Train (or load) an AE and a VAE, evaluate both, write metrics.json and report.html into `out`.

    Two `checkpoints` are evaluated on the data they were trained on (which must be the same), or on
    `data_name` when given. Every input is checked before `out` is touched; see `files.new_run_folder`."""
    started = time.perf_counter()
    say = (lambda msg: None) if quiet else show
    models = {kind: load_checked(kind, given) for kind, given in zip(("ae", "vae"), checkpoints or ())}
    if models:
        trained_on = checkpoints_data(models, checkpoints, check=not data_name)
        run = replace(run, data=replace(trained_on, name=data_name) if data_name else trained_on)
    data = evaluation_view(load_dataset(run.data), run.data)
    for given, model in zip(checkpoints or (), models.values()):
        if tuple(model.config.image_shape) != data.shape:
            raise VaekitError(f"{given}: the model takes {tuple(model.config.image_shape)} images, {data.spec} has "
                              f"{data.shape}")
    if quick:  # about a minute on 2 CPU cores: fewer epochs, fewer importance samples and generated images
        run = replace(run, train=replace(run.train, epochs=min(run.train.epochs, 2)))
    with new_run_folder(out, overwrite, [*inputs, *map(Path, checkpoints or ()), *data_paths(run.data)]):
        for kind in ("ae", "vae"):
            if kind not in models:
                say(f"training the {kind.upper()} ({run.train.epochs} epochs)")
                train(replace(run, model=replace(run.model, kind=kind)), out / kind, quiet=quiet, dataset=data)
                models[kind] = load_model(out / kind)
        return measure(run, out, models, data, quick, started, say, quiet, checkpoints)


def load_checked(kind: str, given: str) -> Autoencoder:
    model = load_model(given)
    if model.kind != kind:
        article = {"ae": "an", "vae": "a"}
        raise VaekitError(f"{given}: expected {article[kind]} {kind.upper()} checkpoint, found "
                          f"{article[model.kind]} {model.kind.upper()}")
    return model


def checkpoints_data(models: dict[str, Autoencoder], paths: tuple[str, str], check: bool = True) -> DataConfig:
    """The data set both checkpoints were trained on; two different ones are refused, naming both (unless
    `check` is off: the caller names the data set)."""
    configs = [trained_data_config(m.meta) for m in models.values()]
    if not check:
        return configs[0]
    keys = ("name", "binarize", "image_size", "channels", "resize", "background")
    seen = [{k: getattr(c, k) for k in keys} for c in configs]
    if seen[0] != seen[1]:
        diff = next(k for k in keys if seen[0][k] != seen[1][k])
        raise VaekitError(f"the checkpoints were trained on different data ({diff}: {seen[0][diff]!r} in {paths[0]}, "
                          f"{seen[1][diff]!r} in {paths[1]}); pass --data to evaluate both on one set")
    return configs[0]


def measure(run: RunConfig, out: Path, models: dict[str, Autoencoder], data: Dataset, quick: bool, started: float, say,
            quiet: bool, checkpoints: tuple[str, str] | None) -> dict[str, Any]:
    """Evaluate both models, write metrics.json and report.html."""
    settings = EvalSettings.quick() if quick else EvalSettings()
    settings.seed = run.train.seed
    classifier, real_features, floor, accuracy = None, None, None, None
    if can_score_samples(data):
        say("feature classifier for sample quality (cached after the first run)")
        classifier, accuracy = load_or_train_classifier(data, data_home(run.data), quiet=quiet)
        real_features, floor = real_reference(data, classifier, settings.n_samples)
    evals = {kind: evaluate_model(model, data, settings, classifier, real_features, quiet=quiet)
             for kind, model in models.items()}
    metrics = {"checkpoints": checkpoint_paths(out, checkpoints),
               "data": data.spec, "labels": data.label_source, "data_notes": data.notes, "quick": quick,
               "settings": settings.__dict__, "classifier_accuracy": accuracy,
               "real_floor": floor, "ae": evals["ae"].metrics, "vae": evals["vae"].metrics,
               "same_networks": same_networks(models["ae"], models["vae"])}
    histories = {kind: read_history(out / kind) for kind in models}
    pairs = test_tensor(data, 2 * INTERPOLATION_PAIRS)
    interpolations = {kind: interpolate_pairs(model, pairs) for kind, model in models.items()}
    if classifier is not None:
        metrics["interpolation_confidence"] = {
            kind: classifier.features_and_confidence(imgs[:, 1:-1].flatten(0, 1))[1].mean().item()
            for kind, imgs in interpolations.items()}
    metrics["seconds"] = time.perf_counter() - started
    write_json(out / "metrics.json", metrics)
    write_text(out / "report.html", render(metrics, models, evals, data, histories, settings, interpolations))
    say(summary_line(metrics) + f"\nreport: {out / 'report.html'}")
    return metrics


def checkpoint_paths(out: Path, checkpoints: tuple[str, str] | None) -> dict[str, str]:
    """Where each model's run folder is, relative to `out` (its own ae/ and vae/ when it trained them)."""
    given = checkpoints or (out / "ae", out / "vae")
    return {kind: os.path.relpath(Path(path).resolve(), out.resolve()) for kind, path in zip(("ae", "vae"), given)}


def same_networks(ae: Autoencoder, vae: Autoencoder) -> bool:
    """Whether the two models have the same architecture, layer sizes and latent dimension."""
    a, v = ae.config, vae.config
    return a.arch == v.arch and a.hidden == v.hidden and a.channels == v.channels and ae.latent_dim == vae.latent_dim


INTERPOLATION_PAIRS, INTERPOLATION_STEPS = 50, 10


@torch.no_grad()
def interpolate_pairs(model: Autoencoder, images: torch.Tensor) -> torch.Tensor:
    """Decodings along straight lines between the codes of image pairs: (pairs, steps, C, H, W)."""
    z = model.embed(images.to(model.device)).cpu()
    lines = [interpolate(z[i], z[i + 1], INTERPOLATION_STEPS) for i in range(0, len(z) - 1, 2)]
    decoded = model.generate(torch.cat(lines).to(model.device)).cpu()
    return decoded.reshape(len(lines), INTERPOLATION_STEPS, *decoded.shape[1:])


def read_history(run_dir: Path) -> list[dict]:
    f = RunFolder(run_dir).metrics_jsonl
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()] if f.is_file() else []


def summary_line(m: dict) -> str:
    if m["real_floor"] is None:
        return "(no labels: sample quality not scored)"
    s = {k: m[k]["samples"] for k in ("ae", "vae")}
    return (f"Frechet distance to real test images (lower is better): AE-prior {s['ae']['prior']['frechet']:.2f}, "
            f"VAE-prior {s['vae']['prior']['frechet']:.2f}, AE-GMM {s['ae']['gmm']['frechet']:.2f}, "
            f"VAE-GMM {s['vae']['gmm']['frechet']:.2f}, real {m['real_floor']['frechet']:.2f}")
