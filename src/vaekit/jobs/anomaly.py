"""Anomaly jobs: per-image scores to CSV (`vaekit score`), one model against OOD sets (`vaekit ood`), and the
one-class protocol over every class of a labelled set (`vaekit oneclass`); their pages are drawn by the renderer the
caller hands in (report/ood_page.py)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from vaekit.config import MAX_K, RunConfig, short, to_dict, trained_data_config
from vaekit.data import Dataset, ImageSet, evaluation_view, load_dataset
from vaekit.data.classes import class_words, keep_classes
from vaekit.data.sets import pick
from vaekit.data.sources import data_paths
from vaekit.devices import pick_device
from vaekit.errors import VaekitError, path_text
from vaekit.evaluation.detection import flagged
from vaekit.evaluation.ood import OodResult, OodSettings, measure_ood, ood_images
from vaekit.evaluation.results import OneClassReport, OneClassRow, OodReport
from vaekit.evaluation.scores import (
    SCORES,
    ScoreSettings,
    check_scorable,
    fingerprint,
    score_images,
    scores_available,
)
from vaekit.files import csv_writer, read_record, write_json, write_text
from vaekit.layout import METRICS_FILE, REPORT_FILE, THRESHOLDS_FILE
from vaekit.models import PRESETS, Autoencoder, load_model
from vaekit.models.saving import checkpoint_files, resolve_checkpoint
from vaekit.outputs import new_run_folder
from vaekit.progress import say as show

THRESHOLDS_KIND = "vaekit-thresholds"
Flag = tuple[str, float]  # (score name, threshold)


def csv_header(names: list[str], flag: Flag | None) -> list[str]:
    return ["split", "index", "label", "class", "file", *names, *(["flagged"] if flag else [])]


def append_scores(write: Callable[[Iterable[list[Any]]], None], split: str, images: ImageSet,
                  batches: Iterable[dict[str, np.ndarray]], names: list[str], classes: list[str],
                  flag: Flag | None = None) -> int:
    """CSV rows of scored images, in order, with each image's index in its split, label, class and file where known;
    returns how many."""
    start = 0
    for scores in batches:
        n = len(scores[names[0]])
        at = torch.arange(start, start + n)
        labels = pick(images.labels, at)
        files = pick(images.names, at)
        marks = flagged(scores[flag[0]], flag[1]) if flag else None
        rows = []
        for i in range(n):
            y = None if labels is None else int(labels[i])
            rows.append([split, start + i, "" if y is None else y, classes[y] if y is not None and y < len(classes)
                         else "", "" if files is None else files[i], *(f"{scores[s][i]:.8g}" for s in names),
                         *([int(marks[i])] if flag else [])])
        write(rows)
        start += n
    return start


ScoreName = Literal[tuple(SCORES)]  # type: ignore[valid-type]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class Thresholds(BaseModel):
    """thresholds.json, as `vaekit ood` writes it and `vaekit score --threshold` reads it back: every field checked
    (a number where a number goes, in its range, finite; only known score names), so an edited or damaged file is
    one line naming the field, never a detector that silently never fires."""

    model_config = ConfigDict(strict=True, frozen=True)
    kind: Literal["vaekit-thresholds"]
    version: Literal[1]
    checkpoint: str
    model_sha1: Annotated[str, Field(pattern=r"^[0-9a-f]{40}$")]
    k: Annotated[int, Field(ge=0, le=MAX_K)] | None
    fpr: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
    chosen_on: str = "held-out images"
    score: ScoreName | None = None
    thresholds: Annotated[dict[ScoreName, Finite], Field(min_length=1)]


def read_thresholds(path: str, model: Autoencoder) -> Thresholds:
    """A thresholds.json that `vaekit ood` wrote for this very model (its weights' SHA-1), every field checked."""
    chosen = read_record(path, Thresholds, "thresholds file written by `vaekit ood`")
    if chosen.model_sha1 != fingerprint(model):
        raise VaekitError(f"{path}: its thresholds were chosen for another model ({short(chosen.checkpoint)}); "
                          "run `vaekit ood` on this one")
    return chosen


def score_file(model: Autoencoder, parts: list[tuple[str, ImageSet]], classes: list[str], out: Path,
               s: ScoreSettings, mixture: torch.nn.Module | None, flag: Flag | None = None,
               quiet: bool = False) -> dict[str, Any]:
    """Every score of every image of the named `parts`, streamed into the CSV file `out` a batch at a time. Returns
    the count of images, the mean of each score and how many the threshold flagged."""
    names = scores_available(model, s.k, mixture is not None)
    totals = {"images": 0, "sums": dict.fromkeys(names, 0.0), "flagged": 0}

    def tally(batches: Iterable[dict[str, np.ndarray]]) -> Iterable[dict[str, np.ndarray]]:
        for scores in batches:
            totals["images"] += len(scores[names[0]])
            for name in names:
                totals["sums"][name] += float(np.sum(scores[name]))
            totals["flagged"] += int(flagged(scores[flag[0]], flag[1]).sum()) if flag else 0
            yield scores

    with csv_writer(out, csv_header(names, flag)) as write:
        for split, images in parts:
            append_scores(write, split, images, tally(score_images(model, images, s, mixture, f"scoring {split}",
                                                                   quiet)), names, classes, flag)
    n = max(totals["images"], 1)
    return {"images": totals["images"], "means": {k: v / n for k, v in totals["sums"].items()},
            "flagged": totals["flagged"], "scores": names}


def safe_name(spec: str) -> str:
    """A file name for an OOD set's name ('folder:/a/b' -> 'folder-a-b')."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", spec).strip("-.")[:80] or "set"


def own_data(model: Autoencoder) -> Dataset:
    """The model's data as it was trained and evaluated (the checkpoint's settings)."""
    config = trained_data_config(model.meta)
    data = evaluation_view(load_dataset(config), config)
    data.check_unchanged(model.meta.get("data_split"), "the model")
    if data.shape != tuple(model.config.image_shape):
        raise VaekitError(f"{config.name}: images are {data.shape}, the model wants {tuple(model.config.image_shape)}")
    return data


OodPage = Callable[[OodResult, str, list[str]], str]  # report.html of `vaekit ood`: (result, title, meta paragraphs)
OneClassPage = Callable[[OneClassReport, str, list[str]], str]  # report.html of `vaekit oneclass`


def ood(checkpoint: str, specs: list[str], out: Path, s: OodSettings, device: torch.device, page: OodPage, *,
        overwrite: bool = False, quiet: bool = False, reading: dict[str, Any] | None = None) -> OodReport:
    """Score the model's test images and each OOD set (folders read with `reading`: skip_bad_images, hidden_files);
    write metrics.json, thresholds.json, scores/*.csv and the `page` (report.html) into the folder `out`. Every input
    is read before `out` is touched; a failure leaves no half-written folder."""
    model = load_model(checkpoint, map_location=device).eval()
    check_scorable(model.classes)
    data, config = own_data(model), trained_data_config(model.meta)
    images, described = ood_images(model, data, replace(config, **(reading or {})), specs, s)  # names checked here
    inputs = [*checkpoint_files(checkpoint), *data_paths(config), *(p for spec in specs for p in spec_paths(spec))]
    names = {spec: path_text(spec) for spec in specs}  # a path that is not UTF-8, as text for pages and files
    images = {names.get(k, k): v for k, v in images.items()}
    described = {names[k]: v for k, v in described.items()}
    specs = list(names.values())
    with new_run_folder(out, overwrite, inputs, keep_failed=False):
        result = measure_ood(model, data, images, described, s, quiet)
        m = result.report
        m.checkpoint, m.data, m.notes = str(resolve_checkpoint(checkpoint)), data.spec, data.notes
        write_json(out / METRICS_FILE, m.to_json())
        write_json(out / THRESHOLDS_FILE, {
            "kind": THRESHOLDS_KIND, "version": 1, "checkpoint": m.checkpoint, "model_sha1": fingerprint(model),
            "k": m.k, "fpr": s.fpr, "chosen_on": f"{m.sizes['val']} validation images of {data.spec}",
            "score": m.best, "thresholds": m.thresholds})
        files: dict[str, str] = {}
        for name in ("test", *specs):  # two sets whose names map to one file name get a number each
            base = safe_name(name)
            files[name] = base if base not in files.values() else f"{base}-{len(files)}"
        for name in ("test", *specs):
            with csv_writer(out / "scores" / f"{files[name]}.csv", csv_header(m.scores, None)) as write:
                append_scores(write, name, images[name], [result.scores[name]], m.scores, data.classes)
        write_text(out / REPORT_FILE, page(result, f"vaekit: {model.preset.label} on {data.spec}, "
                                                   f"against {', '.join(specs)}", ood_meta(m, model, s)))
    return m


def spec_paths(spec: str) -> list[Path]:
    """Files an OOD set is read from, which the output folder may not overlap."""
    from vaekit.config import DataConfig
    from vaekit.data.shifts import CORRUPTIONS

    if spec in CORRUPTIONS or spec == "held-out":
        return []
    return data_paths(DataConfig(name=spec))


def ood_meta(m: OodReport, model: Autoencoder, s: OodSettings) -> list[str]:
    k = f"the IS-NLL with K = {s.k} draws per image; " if model.has_density and s.k else ""
    codes = f"code_nll under {m.mixture or 'no mixture'}." if not model.classes else (
        f"Conditional on {model.classes} classes: no image's own label is used; is_nll and nelbo take the label out "
        "of p(x) = the mean of p(x|y) over the classes, recon is the error under the class that reconstructs best, "
        "and code_nll is left out.")
    return [f"Checkpoint {m.checkpoint}: a {model.preset.label} with {model.latent_dim} latent dimensions. "
            f"In-distribution: {m.sizes['test']} test images of {m.data}; thresholds chosen on its "
            f"{m.sizes['val']} validation images. {k}{codes}",
            *(f"{spec}: {words} ({m.sizes[spec]} images)." for spec, words in m.described.items())]


def one_class(run: RunConfig, out: Path, s: OodSettings, page: OneClassPage, *, protocol: str = "one",
              overwrite: bool = False, quiet: bool = False, inputs: Iterable[Path] = ()) -> OneClassReport:
    """For each class of the data set, train a model on it (`protocol` 'one', Ruff et al.'s one-class protocol) or
    on every other class ('all-but-one'), score the test images of the classes it did not see as anomalies; write
    every run under `out`, and metrics.json and the `page` (report.html) with the AUROC of each score per class."""
    if run.model.conditional:
        raise VaekitError("--conditional learns every class, and the one-class protocol trains each model on some of "
                          "them: leave --conditional out")
    full = load_dataset(replace(run.data, classes=""))
    labels = full.test.labels
    if labels is None or full.train.labels is None:
        raise VaekitError(f"{full.spec}: has no labels; the one-class protocol needs classes")
    present = sorted(set(full.train.labels.tolist()) & set(labels.tolist()))
    if len(present) < 2:
        raise VaekitError(f"{full.spec}: needs at least two classes with training and test images")
    started = time.perf_counter()
    rows = []
    with new_run_folder(out, overwrite, [*inputs, *data_paths(run.data)]):
        for c in present:
            rows.append(one_class_row(run, full, c, present, protocol, out, s, quiet))
        m = one_class_metrics(run, full, rows, protocol, s, time.perf_counter() - started)
        write_json(out / METRICS_FILE, m.to_json())
        title = f"vaekit: one-class AUROC of a {PRESETS[run.model.kind].label} on {full.spec}"
        write_text(out / REPORT_FILE, page(m, title, [m.settings_words]))
    return m


def one_class_row(run: RunConfig, full: Dataset, c: int, present: list[int], protocol: str, out: Path,
                  s: OodSettings, quiet: bool) -> OneClassRow:
    """Train the model of class `c`, then measure it against the classes it did not see."""
    from vaekit.training import train

    kept = str(c) if protocol == "one" else ",".join(str(k) for k in present if k != c)
    config = replace(run.data, classes=kept)
    data = evaluation_view(keep_classes(full, kept), config)
    folder = out / f"class-{c}"
    if not quiet:
        show(f"class {class_words([c], full)}: training on {class_words([int(k) for k in kept.split(',')], full)}")
    train(replace(run, data=config), folder, quiet=True, dataset=data)
    model = load_model(folder, map_location=pick_device(run.train.device)).eval()
    images, described = ood_images(model, data, config, ["held-out"], s)
    result: OodResult = measure_ood(model, data, images, described, s, quiet=True)
    by_score = result.report.sets["held-out"]
    return OneClassRow(klass=c, name=class_words([c], full), run=folder.name, sizes=result.report.sizes,
                       auroc={n: v.auroc for n, v in by_score.items()}, detection=by_score,
                       scores=result.report.scores)


def one_class_metrics(run: RunConfig, full: Dataset, rows: list[OneClassRow], protocol: str, s: OodSettings,
                      seconds: float) -> OneClassReport:
    names = [n for n in rows[0].scores if all(n in r.auroc for r in rows)]  # a mixture may fail for one
    mean = {n: float(np.mean([r.auroc[n] for r in rows])) for n in names}
    words = ("Each class in turn is the normal one: a model is trained on its training images alone, and the test "
             "images of every other class are the anomalies (the one-class protocol of Ruff et al., 2018)."
             if protocol == "one" else "Each class in turn is the anomaly: a model is trained on every other class, "
             "and the test images of the left-out class are scored against the test images of the rest.")
    k = f"IS-NLL with K = {s.k}; " if "is_nll" in names else ""
    settings = (f"{PRESETS[run.model.kind].label}, {run.train.epochs} epochs per class, seed {run.train.seed}; {k}"
                "AUROC of the held-out classes' test images against the trained classes' test images. "
                f"{seconds:.0f} s in all.")
    return OneClassReport(protocol=protocol, protocol_words=words, settings_words=settings, data=full.spec,
                          scores=names, classes=rows, mean_auroc=mean, run=to_dict(run), seconds=seconds)
