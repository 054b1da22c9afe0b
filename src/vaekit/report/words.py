"""The words and numbers of vaekit's pages: formatting, names of models and samplers, comparisons in words."""

from __future__ import annotations

import base64
import html

from vaekit.evaluation.results import Comparison, ModelEvaluation
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


PSNR_MARGIN = 1.0  # dB over the mean image's PSNR that a model's reconstructions must reach to count as learned


COLLAPSED, NO_BETTER = "collapsed", "no better than the mean image"  # what can show that a model did not learn


def learning_problems(r: ModelEvaluation) -> dict[str, str]:
    """What says a model has not learned, each kind with its words and numbers: a collapsed posterior,
    reconstructions no better than the training images' mean image. Empty where nothing says so."""
    problems, rq = {}, r.reconstruction
    if r.test.has_bound and r.latent.active_units == 0:
        problems[COLLAPSED] = (f"none of its {r.latent_dim} latent dimensions is active (the posterior collapsed: its "
                               "codes carry nothing about the image)")
    if rq and rq.mean_image_psnr is not None and rq.psnr < rq.mean_image_psnr + PSNR_MARGIN:
        problems[NO_BETTER] = (f"its reconstructions (PSNR {rq.psnr:.2f} dB) are no better than the training images' "
                               f"mean image ({rq.mean_image_psnr:.2f} dB)")
    return problems


def unlearned(m: Comparison) -> dict[str, dict[str, str]]:
    return {n: problems for n in m.models if (problems := learning_problems(m[n]))}
