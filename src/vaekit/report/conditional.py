"""The report's conditional section, for models trained with --conditional: samples drawn class by class, and how
well they match the class they were drawn as (the feature classifier's agreement, the Frechet distance per class)."""

from __future__ import annotations

import html
from collections.abc import Collection

import torch

from vaekit.config import class_word
from vaekit.data import Dataset
from vaekit.evaluation.evaluate import Evaluation
from vaekit.evaluation.results import Comparison
from vaekit.models.samplers import OWN
from vaekit.report import figures
from vaekit.report.words import Section, fmt, img, label, names_words

PER_CLASS = 8  # samples shown per class in the grid
SHOWN_CLASSES = 30  # classes shown in the grid and the tables (all of them are in metrics.json)


def shown_classes(classes: list[int], present: Collection[int]) -> list[int]:
    """The classes a grid or a table shows: at most SHOWN_CLASSES, those with real test images (`present`) first (a
    model may know labels its data never uses)."""
    return sorted(classes, key=lambda c: (c not in present, c))[:SHOWN_CLASSES]


def class_grid(evaluation: Evaluation, present: Collection[int], sampler: str = OWN) -> torch.Tensor:
    """The first PER_CLASS samples of each shown class, class after class: a grid with one row per class."""
    images, labels = evaluation.samples[sampler], evaluation.sample_labels
    rows = [torch.nonzero(labels == c).flatten()[:PER_CLASS] for c in shown_classes(labels.unique().tolist(), present)]
    return images[torch.cat(rows)]


def conditional_section(m: Comparison, evals: dict[str, Evaluation], data: Dataset) -> Section | None:
    """A class-by-sample grid per conditional model, and the per-class table; None when no model is conditional."""
    names = [n for n in m.models if m[n].conditional]
    if not names:
        return None
    present = set(data.test.labels.unique().tolist()) if data.test.labels is not None else set()
    figures_html = "".join(
        f"<figure>{img(figures.image_grid_png(class_grid(evals[n], present), PER_CLASS), f'{n} samples by class')}"
        f"<figcaption>{label(n)}: one row per class, z ~ its prior</figcaption></figure>" for n in names)
    body = f"<div class=samplers>{figures_html}</div>" + class_table(m, names, data)
    return "Conditional generation: draw me a class", body, conditional_words(m, names)


def class_table(m: Comparison, names: list[str], data: Dataset) -> str:
    """Per class: each model's conditional accuracy and Frechet distance (samples from its prior), and the same for
    real held-out images of the class."""
    floor = m.real_floor and m.real_floor.conditional
    real = floor.by_class() if floor else {}
    per_model = {n: m[n].conditional[OWN].by_class() for n in names}
    head = "".join(f"<th>{label(n)}<br>accuracy</th><th>{label(n)}<br>Frechet</th>" for n in names)
    head += "<th>real images<br>accuracy</th><th>real images<br>Frechet</th>" if floor else ""
    rows, classes = [], sorted(per_model[names[0]])
    for c in shown_classes(classes, real):
        cells = [per_model[n].get(c) for n in names] + ([real.get(c)] if floor else [])
        tds = "".join(f"<td>{percent(r and r.accuracy)}</td><td>{fmt(r and r.frechet)}</td>" for r in cells)
        rows.append(f"<tr><th>{html.escape(class_word(c, data.classes))}</th>{tds}</tr>")
    more = f"{SHOWN_CLASSES} of {len(classes)} classes, those with test images first; metrics.json has all. " \
        if len(classes) > SHOWN_CLASSES else ""
    return (f"<table><tr><th>class</th>{head}</tr>{''.join(rows)}</table><p class=meta>{more}Accuracy: the share of "
            "images the feature classifier assigns to the class they were drawn as. Frechet: between the features of "
            "those images and of the real test images of that class (lower is better).</p>")


def percent(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.1f}%"


def conditional_words(m: Comparison, names: list[str]) -> list[str]:
    """The overall agreement of each model's samples with the requested class, against real images."""
    floor = m.real_floor and m.real_floor.conditional
    listed = ", ".join(f"{label(n)} {100 * m[n].conditional[OWN].accuracy:.1f}%" for n in names)
    words = [f"{names_words(names)} {'was' if len(names) == 1 else 'were'} trained with the label as a second input "
             f"to encoder and decoder (a conditional VAE, or its AE counterpart): each row above asks for one class. "
             f"The feature classifier names the requested class for {listed} of the samples from the prior"
             + (f"; for real held-out images it names their own class {100 * floor.accuracy:.1f}% of the time, "
                "the ceiling these numbers can reach." if floor else ".")]
    chance = 100 / max(1, len(m[names[0]].conditional[OWN].classes))
    worst = min((m[n].conditional[OWN].accuracy, n) for n in names)
    if 100 * worst[0] < 2 * chance:
        words.append(f"{label(worst[1])}'s samples match the requested class at most twice as often as chance "
                     f"({chance:.0f}%): its decoder makes little use of the label (train longer, or with a smaller "
                     "KL weight).")
    return words
