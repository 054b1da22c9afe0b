"""The self-contained report.html of `vaekit compare`: one function per section of the page.

Each section function returns (title, html body, sentences); `render` puts a header above them.
"""

from __future__ import annotations

import html
from collections.abc import Callable

import torch

from vaekit.data import Dataset
from vaekit.evaluation.evaluate import EvalSettings, Evaluation, first_labelled
from vaekit.evaluation.results import Comparison, ModelEvaluation
from vaekit.jobs.compare import Compared
from vaekit.models import Autoencoder
from vaekit.models.likelihoods import bits_note
from vaekit.models.networks import network_words
from vaekit.models.presets import PLAIN, PRESETS, VARIATIONAL
from vaekit.models.samplers import OWN, caption_of
from vaekit.report import figures
from vaekit.report.answer import answer_section, lessons_section, spaced
from vaekit.report.conditional import conditional_section
from vaekit.report.quality import quality_section
from vaekit.report.words import Section, fmt, img, label, names_words, seed_pair, unlearned


def render(compared: Compared) -> str:
    """The whole page: a header, then one <section> per part of the comparison."""
    c = compared
    m, models, evals, data, histories, settings = c.metrics, c.models, c.evals, c.data, c.histories, c.settings
    sections = [answer_section(m, evals, data),
                *filter(None, [lessons_section(m)]),
                metrics_section(m, settings),
                quality_section(m, settings),
                reconstructions_section(m, models, data),
                samples_section(m, evals, settings),
                *filter(None, [conditional_section(m, evals, data)]),
                latent_section(m, models, evals, data),
                histograms_section(m, models, evals),
                interpolation_section(m, c.interpolations)]
    if any(histories.values()):
        sections.append(training_section({name: h for name, h in histories.items() if h}))
    parts = [header(m, next(iter(models.values())), data, settings)]
    for title, body, words in sections:
        parts.append(f"<section><h2>{html.escape(title)}</h2>{body}"
                     + "".join(f"<p>{html.escape(w)}</p>" for w in words) + "</section>")
    title = " vs ".join(label(n) for n in m.models)
    return PAGE.format(title=f"vaekit: {html.escape(title)} on {html.escape(data.spec)}", body="\n".join(parts))


def header(m: Comparison, first: Autoencoder, data: Dataset, settings: EvalSettings) -> str:
    """Title and the two meta paragraphs: networks, run settings, where the labels come from."""
    c = first.config
    net = f"{c.arch} {network_words(c)}"
    same = "Same networks" if m.same_networks else "Networks differ! First model's"
    notes = m.data_notes
    title = " vs ".join(label(n) for n in m.models)
    bits = bits_note(c.likelihood)
    return (f"<h1>{html.escape(title)} on {html.escape(data.spec)}</h1><p class=meta>{same} ({net}, latent "
            f"{c.latent_dim}, {c.likelihood} likelihood), same data and seed; {bits}. "
            f"{'Quick run. ' if m.quick else ''}"
            f"Generated images per sampler: {settings.n_samples}. Wall time {m.seconds:.0f} s.</p>"
            f"<p class=meta>Labels (used by the feature classifier that scores samples, to colour the maps, and in "
            f"training only by models trained with --conditional): "
            f"{html.escape(m.labels)}.{''.join(' ' + html.escape(n[0].upper() + n[1:]) + '.' for n in notes)}"
            f"</p>")


# --- 1. metrics -------------------------------------------------------------------------------------------


def metrics_section(m: Comparison, settings: EvalSettings) -> Section:
    return "Metrics", metrics_table(m, settings), family_words(m)


def rfid_words(m: Comparison) -> str:
    """The rFID (the reconstructions' Inception FID) of each model that has one, as a sentence."""
    measured = [f"{label(n)} {m[n].reconstruction.inception_fid:.2f}" for n in m.models
                if m[n].reconstruction and m[n].reconstruction.inception_fid is not None]
    return f" rFID, the same on Inception's features: {', '.join(measured)}." if measured else ""


def metrics_table(m: Comparison, settings: EvalSettings) -> str:
    """One row per model: the numbers that belong to the model, not to a sampler."""
    rows = []
    for name in m.models:
        r = m[name]
        t, is_nll, seconds = r.test, r.is_nll, r.training_seconds
        bound = t.loss if t.has_bound else None  # the -ELBO, or IWAE's k-draw bound; no bound without a density
        rq = r.reconstruction
        cells = [fmt(t.recon), fmt(rq and rq.psnr), fmt(rq and rq.ssim, 3), fmt(rq and rq.frechet), fmt(bound),
                 fmt(is_nll.nll if is_nll else None), f"{r.latent.active_units} / {r.latent_dim}",
                 "n/a" if seconds is None else f"{seconds:.0f}"]
        rows.append(f"<tr><th>{label(name)}</th>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    images = next((m[n].is_nll.images for n in m.models if m[n].is_nll), settings.is_images)
    tested = m[m.models[0]].test.images
    return (f"<table><tr><th>model</th><th>reconstruction<br>-log p(x|z), nats<br>{tested} test images</th>"
            "<th>PSNR<br>dB</th><th>SSIM</th><th>Frechet of<br>reconstructions</th>"
            f"<th>training bound<br>nats, {tested} test images</th><th>IS-NLL (K={settings.k})<br>nats, {images} "
            "test images</th>"
            "<th>active<br>units</th><th>training<br>seconds</th></tr>" + "".join(rows) + "</table>"
            "<p class=meta>Reconstruction, PSNR and SSIM (of the decoded posterior mean, 11x11 Gaussian window; "
            "higher is better), and the training bound: means over the whole test split; the IS-NLL over its first "
            "images, as stated. The Frechet distance of the reconstructions of the first test images from the test "
            f"images, on the feature classifier's features (lower is better).{rfid_words(m)}</p>")


def ranked(m: Comparison, value: Callable[[ModelEvaluation], float | None]) -> list[tuple[float, str]]:
    """(value, model) for the models where `value(result)` is a number, best (lowest) first."""
    return sorted((v, name) for name in m.models if (v := value(m[name])) is not None)


def family_words(m: Comparison) -> list[str]:
    """Which model wins what, from the numbers, and the reason each member is built for."""
    words = []
    recon = ranked(m, lambda r: r.test.recon)
    deterministic = [n for n in m.models if not m[n].test.has_bound]
    learned = not unlearned(m)  # a reason is given only for models that learned
    why = (" Deterministic codes carry more about x than noisy ones, whose KL trades reconstruction for a usable "
           "prior." if learned and recon[0][1] in deterministic and len(deterministic) < len(m.models) else "")
    words.append(f"Reconstruction: {label(recon[0][1])} is best ({fmt(recon[0][0])} nats), "
                 f"{label(recon[-1][1])} worst ({fmt(recon[-1][0])}).{why}")
    nll = ranked(m, lambda r: r.is_nll and r.is_nll.nll)
    if nll:
        listed = ", ".join(f"{label(n)} {fmt(v)}" for v, n in nll)
        why = PRESETS[nll[0][1]].likelier if learned and len(nll) > 1 and nll[0][1] in PRESETS else ""
        words.append(f"Likelihood (IS-NLL, lower is better): {listed} nats. {why}".strip())
    if deterministic:
        one = len(deterministic) == 1
        words.append(f"{names_words(deterministic)} define{'s' if one else ''} no density (deterministic codes), so "
                     f"{'it has' if one else 'they have'} no ELBO and no IS-NLL.")
    discrete = sorted((m[n].latent.codebook.uniform_bound, n) for n in m.models if m[n].latent.codebook)
    if discrete:
        listed = ", ".join(f"{label(n)} {fmt(v)}" for v, n in discrete)
        words.append(f"Discrete codes bound the likelihood with uniformly random codes: -log p(x) <= reconstruction + "
                     f"the code's length (tokens x log codebook size): {listed} nats per image, a loose bound that a "
                     "prior fitted to the codes would tighten.")
    return words





# --- 2. reconstructions and samples -----------------------------------------------------------------------


def reconstructions_section(m: Comparison, models: dict[str, Autoencoder], data: Dataset) -> Section:
    """Ten test images above each model's reconstructions of them."""
    x, y = first_labelled(data.test, 10)
    with torch.no_grad():
        recon = [model.reconstruct(x.to(model.device), None if y is None else y.to(model.device)).cpu()
                 for model in models.values()]
    body = img(figures.image_grid_png(torch.cat([x, *recon]), nrow=len(x)), "test images and reconstructions")
    listed = ", ".join(f"{label(n)} {fmt(m[n].test.recon)}" for n in m.models)
    words = [f"Rows: test images, then the reconstructions (from the posterior mean) of {names_words(m.models)}, "
             f"in that order. Reconstruction error -log p(x|z), nats per image: {listed}."]
    if seed_pair(m) and not unlearned(m):
        gap = m[VARIATIONAL].test.recon - m[PLAIN].test.recon
        words.append(f"The VAE reconstructs {fmt(abs(gap))} nats {'worse' if gap > 0 else 'better'} than the AE, "
                     f"while its KL of {fmt(m[VARIATIONAL].test.kl)} nats pulls the codes towards N(0, I).")
    return "Reconstructions", body, words


def samples_section(m: Comparison, evals: dict[str, Evaluation], settings: EvalSettings, n_show: int = 32) -> Section:
    """A grid of generated images per model and sampler: one row of figures per model."""
    rows = []
    for name, evaluation in evals.items():
        figures_html = "".join(
            f"<figure>{img(figures.image_grid_png(spaced(images, n_show), 8), f'{name} {sampler}')}<figcaption>"
            f"{label(name)}: {html.escape(caption_of(sampler))}</figcaption></figure>"
            for sampler, images in evaluation.samples.items())
        rows.append(f"<div class=samplers>{figures_html}</div>")
    words = [f"Each row is one model; each column one sampler: the model's own prior p(z) (N(0, I), or the learned "
             f"VampPrior), a Gaussian mixture fitted to its training codes, a second-stage VAE fitted to them. Every "
             f"sampler decodes its own draws with the model's decoder; {n_show} of the {settings.n_samples}, evenly "
             "spaced through them, are shown (a conditional model draws the classes in turn)."]
    if m.real_floor is not None:
        best = min((m[n].samples[OWN].frechet, n) for n in m.models)
        words.append(f"Measured on {settings.n_samples} samples each, {label(best[1])}'s prior samples are the "
                     f"closest to the data from a prior (Frechet distance {fmt(best[0])}).")
    return "Generation from scratch", "".join(rows), words


# --- 3. the latent space ----------------------------------------------------------------------------------


def figure_codes(evals: dict[str, Evaluation]) -> dict[str, torch.Tensor]:
    """Each model's test codes, keyed by its name on the figures ("AE", "VAE", ...)."""
    return {label(name): evaluation.test_codes for name, evaluation in evals.items()}


def latent_section(m: Comparison, models: dict[str, Autoencoder], evals: dict[str, Evaluation],
                   data: Dataset) -> Section:
    """Test codes coloured by class, against the circles of N(0, I)."""
    standard = [n for n in m.models if m[n].latent.inside_prior_99 is not None]  # the models whose prior is N(0, I)
    inside = [(n, m[n].latent.inside_prior_99) for n in standard]
    coloured = ", coloured by class" if data.test.labels is not None else " (the data has no labels: one colour)"
    words = [f"The maps at the top of the page: each point is a test image's code{coloured}, projected on the plane "
             "of its two main directions (or the code itself in 2-D); the circles mark 1, 2 and 3 standard deviations "
             "of N(0, I)" + (f", the prior {names_words(standard)} draw{'s' if len(standard) == 1 else ''} z from."
                             if standard else ".")]
    if inside:
        words.append("Share of test codes inside N(0, I)'s 99% ball (radius of the chi distribution with "
                     f"{next(iter(models.values())).latent_dim} degrees of freedom): "
                     + ", ".join(f"{label(n)} {100 * v:.1f}%" for n, v in inside) + ".")
    if seed_pair(m):
        la, lv = m[PLAIN].latent, m[VARIATIONAL].latent
        words.append(f"The AE's codes have per-dimension standard deviations from {min(la.std):.2f} to "
                     f"{max(la.std):.2f} and means from {min(la.mean):.2f} to {max(la.mean):.2f}; the VAE's "
                     f"means of q(z|x) have standard deviations from {min(lv.std):.2f} to {max(lv.std):.2f}. "
                     "Nothing in the AE's loss ties its codes to N(0, I); the KL term ties the VAE's.")
    return "The latent space", "", words


def histograms_section(m: Comparison, models: dict[str, Autoencoder], evals: dict[str, Evaluation]) -> Section:
    """Per-dimension histograms of the codes, active units and the KL per dimension."""
    body = f"<div class=plot>{img(figures.code_histograms(figure_codes(evals)), 'code histograms')}</div>"
    active = ", ".join(f"{label(n)} {m[n].latent.active_units} of {models[n].latent_dim}" for n in m.models)
    words = [f"Histograms of the first dimensions of the test codes against the N(0, 1) density (black). Active "
             f"dimensions (Burda et al.: variance of the code's mean over the data above 0.01): {active}."]
    for name in m.models:
        la = m[name].latent
        kl = la.kl_per_dim or []
        if kl and la.active_units == 0:
            words.append(f"The {label(name)}'s KL per dimension is at most {max(kl):.2f} nats: no dimension carries "
                         "information about x, a collapsed posterior.")
        elif kl and la.active_units < models[name].latent_dim:
            words.append(f"The {label(name)}'s KL per dimension ranges from {min(kl):.2f} to {max(kl):.2f} nats; its "
                         f"{models[name].latent_dim - la.active_units} inactive dimensions carry almost no "
                         "information about x, a mild form of posterior collapse.")
    return "Codes against N(0, 1)", body, words


# --- 4. interpolation and training ------------------------------------------------------------------------


def interpolation_section(m: Comparison, interpolations: dict[str, torch.Tensor]) -> Section:
    """The first interpolation pair of each model, one row per model; `interpolations` is (pairs, steps, C, H, W)."""
    rows = [lines[0] for lines in interpolations.values()]
    body = img(figures.image_grid_png(torch.cat(rows), nrow=len(rows[0])), "interpolations")
    words = [f"One row per model ({names_words(m.models)}, top to bottom), decoding points on the straight line "
             "between the codes of two test images."]
    if m.interpolation_confidence:
        ic = m.interpolation_confidence
        listed = ", ".join(f"{label(n)} {fmt(ic[n], 3)}" for n in m.models)
        words.append(f"Over {len(next(iter(interpolations.values())))} such pairs, the classifier's mean confidence "
                     f"on the in-between images: {listed} (all the real test images: "
                     f"{fmt(m.real_floor.test_confidence, 3)}; the sample-quality table's floor row is another "
                     "set, the validation images); the higher, the more the path between two codes stays among images "
                     "that look like data.")
    return "Interpolation", body, words


def training_section(histories: dict[str, list[dict]]) -> Section:
    """Every model's learning curves and where they ended."""
    curves = figures.training_curves({label(name): h for name, h in histories.items()})
    body = f"<div class=plot>{img(curves, 'training curves')}</div>"
    last = {name: h[-1] for name, h in histories.items()}
    listed = ", ".join(f"{label(n)} {fmt(r['val_recon'])}" for n, r in last.items())
    words = [f"After {next(iter(last.values()))['epoch']} epochs the validation reconstruction is: {listed} nats. All "
             "used the same networks, data, seed and epochs."]
    return "Training", body, words


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
h1 {{ margin-bottom: 0.2em; }} .meta {{ color: #555; }}
section {{ margin: 2em 0; border-top: 1px solid #ddd; }}
table {{ border-collapse: collapse; margin: 1em 0; display: block; max-width: 100%; overflow-x: auto; }}
td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; white-space: nowrap; }}
th:first-child {{ text-align: left; }} tr.floor {{ color: #666; font-style: italic; }}
img {{ max-width: 100%; image-rendering: pixelated; }}
.samplers {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr)); gap: 1em; margin: 1em 0; }}
td.sampler {{ text-align: left; }}
figure {{ margin: 0; }} figcaption {{ text-align: center; font-weight: 600; }}
.plot {{ overflow-x: auto; }} h1 {{ overflow-wrap: anywhere; }}
.maps {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 1em; }}
.thumbs {{ display: flex; flex-wrap: wrap; gap: 6px; }} .thumb figcaption {{ font-weight: 400; font-size: 12px; }}
@media (max-width: 700px) {{ .plot img {{ max-width: none; width: 680px; }} td, th {{ padding: 3px 6px; }} }}
</style></head>
<body>
{body}
</body></html>
"""
