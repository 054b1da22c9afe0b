"""The words and numbers of vaekit's pages: formatting, names of models and samplers, comparisons in words."""

from __future__ import annotations

import base64
import html

from vaekit.evaluation.results import Comparison
from vaekit.models.presets import PLAIN, PRESETS, VARIATIONAL

Section = tuple[str, str, list[str]]  # a page section: (title, html body, sentences)


def img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def fmt(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def label(name: str) -> str:
    """How a preset is named for people (its own label: AE, VAE, beta-VAE, ...)."""
    return PRESETS[name].label if name in PRESETS else name


def names_words(names: list[str]) -> str:
    """'AE', 'AE and VAE', 'AE, VAE and IWAE'."""
    labels = [label(n) for n in names]
    return labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} and {labels[-1]}"


def ranked_samplers(m: Comparison) -> list[tuple[float, str, str]]:
    """(Frechet distance, model, sampler) for every sampler of every model, the closest to real images first."""
    return sorted((s.frechet, n, sampler) for n in m.models for sampler, s in m[n].samples.items())


def seed_pair(m: Comparison) -> bool:
    """Whether the seed's own comparison, an AE against a VAE, is among the models."""
    return {PLAIN, VARIATIONAL} <= set(m.models)
