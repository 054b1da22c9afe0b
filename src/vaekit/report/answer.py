"""The report's first screen: the answer in plain words, the latent maps and the sample grids that show it; then the
results that contradict the simple story, explained from the numbers."""

from __future__ import annotations

import html

import torch

from vaekit.data import Dataset
from vaekit.evaluation.evaluate import Evaluation
from vaekit.evaluation.results import Comparison, Floor, ModelEvaluation
from vaekit.jobs.compare import MIN_STEPS
from vaekit.models.presets import PLAIN, VARIATIONAL
from vaekit.models.samplers import DENSITY, OWN, caption_of, label_of
from vaekit.report import figures
from vaekit.report.words import COLLAPSED, Section, fmt, img, label, ranked_samplers, seed_pair, unlearned

POOR = 10.0  # best Frechet distance above this many times the real floor (and above 5): call the samples poor


def shown_grids(m: Comparison) -> list[tuple[str, str]]:
    """(model, sampler) of the grids on the first screen: the AE and the VAE from N(0, I) and from the mixture, or
    each model from its own prior and, where one comes far closer to real images, from a sampler fitted to its codes
    (a VQ-VAE's uniformly random codes beside its code prior)."""
    if seed_pair(m):
        return [(n, s) for s in (OWN, DENSITY) for n in (PLAIN, VARIATIONAL) if s in m[n].priors]
    return [(n, s) for n in m.models for s in (OWN, far_better_sampler(m[n])) if s]


def far_better_sampler(model: ModelEvaluation) -> str | None:
    """The fitted sampler whose samples are closest to real images, where its Frechet distance is under half that of
    the model's own prior (None otherwise, or where samples were not measured)."""
    scored = {name: s.frechet for name, s in model.samples.items() if s.frechet is not None}
    if OWN not in scored or len(scored) < 2:
        return None
    best = min((name for name in scored if name != OWN), key=scored.get)
    return best if scored[best] < 0.5 * scored[OWN] else None


def learned_words(m: Comparison, failed: dict[str, dict[str, str]]) -> list[str]:
    """The page's first words when a model has not learned: which, why it shows, and what to do."""
    words = [f"The {label(n)} has not learned: {'; '.join(problems.values())}." for n, problems in failed.items()]
    steps = [m[n].training_steps for n in failed if m[n].training_steps is not None]
    short = f" ({min(steps)} optimisation steps is few: train for more epochs)" if steps and min(steps) < MIN_STEPS \
        else " (more epochs)"
    collapse = any(COLLAPSED in problems for problems in failed.values())
    against = (", or against the collapse with a smaller latent (--latent-dim), KL warm-up (--kl-warmup-epochs) or "
               "free bits (--free-bits)") if collapse else ""
    words.append(f"Before reading any comparison below, train longer{short}{against}. The numbers below are as "
                 "measured; no explanation of why one of these models generates better is given for a model that did "
                 "not learn.")
    return words


def answer_section(m: Comparison, evals: dict[str, Evaluation], data: Dataset, n_show: int = 32) -> Section:
    """The answer first: sentences from the numbers, each model's map of test codes, the sample grids; a model that
    has not learned is said first, and the seed's story is not told over it."""
    maps = "".join(  # one figure a model: side by side, or stacked on a phone
        f"<figure>{img(figures.latent_maps({label(n): e.test_codes}, data.test.labels, data.classes), f'{n} map')}"
        "</figure>" for n, e in evals.items())
    grids = "".join(f"<figure>{img(figures.image_grid_png(spaced(evals[n].samples[s], n_show), 8), f'{n} {s}')}"
                    f"<figcaption>{label(n)}: {html.escape(grid_caption(m[n], s))}</figcaption></figure>"
                    for n, s in shown_grids(m) if s in evals[n].samples)
    failed = unlearned(m)
    title = ("First: not every model here has learned" if failed else
             "The answer: why a VAE can generate from N(0, I) and an AE cannot" if vae_wins(m) else "In short")
    claims = answer_words(m, data)  # the claims, then what the figures are
    if failed:
        claims = learned_words(m, failed) + claims[-1:]
    words = "".join(f"<p>{html.escape(w)}</p>" for w in claims[:-1] + poor_words(m) + claims[-1:])
    return title, f"{words}<div class=maps>{maps}</div><div class=samplers>{grids}</div>", []  # the words first


def grid_caption(model: ModelEvaluation, sampler: str) -> str:
    """Where a grid's z come from: the model's own prior in its own words (N(0, I) for the seed's pair), or the
    sampler's caption."""
    own = model.priors.get(OWN)
    return f"z ~ {own}, its prior" if sampler == OWN and own else caption_of(sampler)


def vae_wins(m: Comparison) -> bool:
    """Whether this run shows the seed's claim: the VAE's samples from N(0, I) measured closer to the data than the
    AE's (the headline says so only then)."""
    return seed_pair(m) and m.real_floor is not None and \
        m[VARIATIONAL].samples[OWN].frechet < m[PLAIN].samples[OWN].frechet


def far(frechet: float, floor: Floor) -> bool:
    """Samples whose Frechet distance is far from the real floor: above max(5, POOR times it)."""
    return frechet > max(5.0, POOR * floor.frechet)


def spaced(images: torch.Tensor, n: int) -> torch.Tensor:
    """n of the images, evenly spaced through them."""
    return images[torch.linspace(0, len(images) - 1, min(n, len(images))).round().long()]


def answer_words(m: Comparison, data: Dataset) -> list[str]:
    """The claim and its reason, in plain words, each number with what it is measured on."""
    maps = ("Below: each model's test codes, one dot per image" + (" coloured by class" if data.test.labels is not None
                                                                 else "") + ", with the circles of N(0, I) at 1, 2 "
            "and 3 standard deviations; then samples, each grid captioned with where its z come from.")
    if not seed_pair(m):
        return [maps]
    ae, vae, floor = m[PLAIN], m[VARIATIONAL], m.real_floor
    words = []
    if floor is not None:
        a, v = ae.samples[OWN].frechet, vae.samples[OWN].frechet
        verdict = "are closer to real images than" if v < a else "are not closer to real images than"
        words.append(f"Decode random codes z ~ N(0, I): the VAE's images {verdict} the AE's (Frechet distance to the "
                     f"real test images, lower is better: VAE {fmt(v)}, AE {fmt(a)}, real held-out images "
                     f"{fmt(floor.frechet)}).")
    inside = [ae.latent.inside_prior_99, vae.latent.inside_prior_99]
    if None not in inside:
        words.append(f"Why: the VAE's loss has a KL term that pulls every code towards N(0, I), and "
                     f"{100 * inside[1]:.1f}% of its test codes lie inside N(0, I)'s 99% ball. Nothing in the AE's "
                     f"loss does that: {100 * inside[0]:.1f}% of its codes are in that ball, so most z drawn from "
                     "N(0, I) land where its decoder never saw a code.")
    if floor is not None and DENSITY in ae.samples:
        gmm = ae.samples[DENSITY].frechet
        how = "it generates well" if not far(gmm, floor) else "it does better, though still far from real images"
        words.append(f"But the AE is not hopeless: draw its z from a mixture fitted to its own codes and {how} "
                     f"(Frechet distance {fmt(gmm)}). What sampling needs is to know where the codes are; the VAE's KL "
                     "puts them where N(0, I) looks.")
    return [*words, maps]


def poor_words(m: Comparison) -> list[str]:
    """Say so when even the best samples are far from real images, or when sample quality was not measured."""
    floor = m.real_floor
    if floor is None:
        return ["Sample quality is not measured here (the data set has no labels for the feature classifier), so no "
                "sentence above can say whether the samples look like data: judge the grids with your own eyes."]
    best = ranked_samplers(m)[0][0]
    if far(best, floor):
        return [f"Even the best samples are far from real images (Frechet distance {fmt(best)} against "
                f"{fmt(floor.frechet)} for real held-out images): every sampler here generates poorly, so read the "
                "rankings as 'less bad', and look at the grids."]
    vae = m[VARIATIONAL].samples[OWN].frechet if vae_wins(m) else None
    if vae is not None and far(vae, floor):
        return [f"Closer is not close: the VAE's samples from N(0, I) are still far from real images (Frechet distance "
                f"{fmt(vae)} against {fmt(floor.frechet)}); look at the grids, and at the samplers fitted to the "
                "codes, which come closer (below)."]
    return []


def lessons_section(m: Comparison) -> Section | None:
    """The results that contradict the simple story, each explained from the numbers; None when none shows."""
    if not seed_pair(m) or m.real_floor is None or unlearned(m):
        return None
    words = [w for w in (mixture_wins(m), prior_gap(m), interpolation_twist(m)) if w]
    return ("What the simple story misses", "", words) if words else None


def mixture_wins(m: Comparison) -> str | None:
    best, name, sampler = ranked_samplers(m)[0]
    if sampler == OWN or m[name].test.has_bound:  # the twist: a deterministic model, sampled ex post
        return None
    recon = ", ".join(f"{label(n)} {fmt(m[n].test.recon)}" for n in m.models)
    source = m[name].priors.get(sampler, label_of(sampler))
    return (f"The best generator here is the {label(name)} sampled from {source} (Frechet distance {fmt(best)}), not "
            f"a model sampled from N(0, I). Generating needs codes where the decoder was "
            f"trained, not N(0, I) as such: a sampler fitted to the codes finds them for any model, and a model "
            f"without the KL's noise keeps more detail in its codes (reconstruction, nats per image: {recon}).")


def prior_gap(m: Comparison) -> str | None:
    s, latent = m[VARIATIONAL].samples, m[VARIATIONAL].latent
    if DENSITY not in s or s[OWN].frechet < 1.5 * s[DENSITY].frechet:
        return None
    dims = len(latent.std)
    inactive = dims - latent.active_units
    holes = (f"{inactive} of its {dims} dimensions are inactive (the encoder ignores them, so N(0, I)'s draws in them "
             "mean nothing), and " if inactive else "")
    times = s[OWN].frechet / s[DENSITY].frechet
    return (f"The VAE's own prior N(0, I) gives samples {times:.1f} times further "
            f"from real images than a mixture fitted to its codes (Frechet distance {fmt(s[OWN].frechet)} "
            f"against {fmt(s[DENSITY].frechet)}). The KL pulls each "
            "q(z|x) towards N(0, I), but the codes of all images together (the aggregate posterior) are not N(0, I): "
            f"{holes}the used dimensions leave holes between the classes (the map above) that N(0, I) draws into and "
            "the mixture does not.")


def interpolation_twist(m: Comparison) -> str | None:
    ic = m.interpolation_confidence
    if not ic or ic[PLAIN] <= ic[VARIATIONAL]:
        return None
    return (f"The AE's interpolations score a higher classifier confidence than the VAE's ({fmt(ic[PLAIN], 3)} "
            f"against {fmt(ic[VARIATIONAL], 3)}): a line between the codes of two real images stays near codes the "
            "AE's decoder was trained on, and its sharper images are easier to classify. The VAE's advantage is where "
            "z comes from, not the path between two images.")
