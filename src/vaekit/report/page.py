"""The self-contained report.html of `vaekit compare`: one function per section of the page.

Each section function returns (title, html body, sentences); `render` puts a header above them.
"""

from __future__ import annotations

import base64
import html

import torch

from vaekit.data import Dataset
from vaekit.evaluation.evaluate import EvalSettings, Evaluation, test_tensor
from vaekit.models import Autoencoder
from vaekit.report import figures

Section = tuple[str, str, list[str]]  # (title, html body, sentences)

SAMPLERS = {"prior": "N(0, I)", "gmm": "GMM on codes"}  # metrics table row labels
SAMPLE_CAPTIONS = {"prior": "z ~ N(0, I)", "gmm": "z ~ GMM fitted to codes"}  # sample figure captions


def img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def fmt(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def ratio_words(a: float, b: float) -> str:
    """'3.2 times larger than' / 'about the same as' / '2.0 times smaller than' for a vs b."""
    if b <= 0 or a <= 0:
        return "different from"
    r = a / b
    if 0.9 <= r <= 1.1:
        return "about the same as"
    return f"{r:.1f} times larger than" if r > 1 else f"{1 / r:.1f} times smaller than"


def render(m: dict, models: dict[str, Autoencoder], evals: dict[str, Evaluation], data: Dataset,
           histories: dict[str, list[dict]], settings: EvalSettings, interpolations: dict[str, torch.Tensor]) -> str:
    """The whole page: a header, then one <section> per part of the comparison."""
    sections = [metrics_section(m, models, settings),
                reconstructions_section(m, models, data),
                samples_section(m, evals, settings),
                latent_section(m, models, evals, data),
                histograms_section(m, models, evals),
                interpolation_section(m, interpolations)]
    if all(histories.values()):
        sections.append(training_section(histories))
    parts = [header(m, models["ae"], data, settings)]
    for title, body, words in sections:
        parts.append(f"<section><h2>{html.escape(title)}</h2>{body}"
                     + "".join(f"<p>{html.escape(w)}</p>" for w in words) + "</section>")
    return PAGE.format(title=f"vaekit: AE vs VAE on {html.escape(data.spec)}", body="\n".join(parts))


def header(m: dict, ae: Autoencoder, data: Dataset, settings: EvalSettings) -> str:
    """Title and the two meta paragraphs: networks, run settings, where the labels come from."""
    c = ae.config
    net = f"{c.arch} " + (f"hidden {','.join(map(str, c.hidden))}" if c.arch == "mlp" else
                          f"channels {','.join(map(str, c.channels))}")
    notes = m["data_notes"]
    return (f"<h1>AE vs VAE on {html.escape(data.spec)}</h1><p class=meta>Same networks ({net}, latent "
            f"{c.latent_dim}, {c.likelihood} likelihood), same data and seed. {'Quick run. ' if m['quick'] else ''}"
            f"Generated images per sampler: {settings.n_samples}. Wall time {m['seconds']:.0f} s.</p>"
            f"<p class=meta>Labels (used only by the feature classifier that scores samples): "
            f"{html.escape(m['labels'])}.{''.join(' ' + html.escape(n[0].upper() + n[1:]) + '.' for n in notes)}"
            f"</p>")


# --- 1. metrics -------------------------------------------------------------------------------------------


def metrics_section(m: dict, models: dict[str, Autoencoder], settings: EvalSettings) -> Section:
    return "Metrics", metrics_table(m, models, settings), metrics_words(m)


def metrics_table(m: dict, models: dict[str, Autoencoder], settings: EvalSettings) -> str:
    """One row per model and sampler, then the real held-out images as a floor (when samples are scored)."""
    floor = m["real_floor"]
    rows = []
    for kind in models:
        t, is_nll = m[kind]["test"], m[kind].get("is_nll")
        for sampler, label in SAMPLERS.items():
            if floor is None:
                scores = "<td>n/a</td><td>n/a</td>"
            else:
                s = m[kind]["samples"][sampler]
                scores = f"<td>{fmt(s['frechet'])}</td><td>{fmt(s['confidence'], 3)}</td>"
            rows.append(f"<tr><th>{kind.upper()} + {label}</th>"
                        f"<td>{fmt(t['recon'])}</td><td>{fmt(t.get('nelbo'))}</td>"
                        f"<td>{fmt(is_nll['nll'] if is_nll else None)}</td>{scores}</tr>")
    if floor is not None:
        rows.append(f"<tr class=floor><th>real held-out images (floor)</th><td></td><td></td><td></td>"
                    f"<td>{fmt(floor['frechet'])}</td><td>{fmt(floor['confidence'], 3)}</td></tr>")
    return ("<table><tr><th>model + sampler</th><th>reconstruction<br>-log p(x|z), nats</th><th>-ELBO<br>nats</th>"
            f"<th>IS-NLL (K={settings.k})<br>nats</th><th>Frechet distance<br>(lower is better)</th>"
            "<th>classifier<br>confidence</th></tr>" + "".join(rows) + "</table>")


def metrics_words(m: dict) -> list[str]:
    """What the table says: sample quality under both samplers, the classifier, the VAE's likelihood."""
    words = []
    floor = m["real_floor"]
    if floor is not None:
        a, v = m["ae"]["samples"], m["vae"]["samples"]
        words.append(f"From z ~ N(0, I), the AE's samples lie at Frechet distance {fmt(a['prior']['frechet'])} from "
                     f"real test images, {ratio_words(a['prior']['frechet'], v['prior']['frechet'])} the VAE's "
                     f"{fmt(v['prior']['frechet'])}; real held-out images score {fmt(floor['frechet'])}.")
        best = min((a["gmm"]["frechet"], "AE"), (v["gmm"]["frechet"], "VAE"), (a["prior"]["frechet"], "AE-prior"),
                   (v["prior"]["frechet"], "VAE-prior"))
        words.append(f"With {m['ae']['priors']['gmm']} instead of N(0, I), the AE "
                     f"scores {fmt(a['gmm']['frechet'])} and the VAE {fmt(v['gmm']['frechet'])}; the lowest distance "
                     f"of the four is {best[1]}{'-GMM' if '-' not in best[1] else ''}'s ({fmt(best[0])}). "
                     "Knowing where the codes are is what sampling needs: the VAE's KL puts them near N(0, I), "
                     "an AE needs the mixture fitted afterwards.")
        words.append(f"The feature classifier reaches {100 * m['classifier_accuracy']:.1f}% test accuracy; its mean "
                     f"confidence is {fmt(v['prior']['confidence'], 3)} on VAE-prior samples, "
                     f"{fmt(a['prior']['confidence'], 3)} on AE-prior samples and "
                     f"{fmt(floor['test_confidence'], 3)} on real test images.")
    if m["vae"].get("is_nll"):
        i = m["vae"]["is_nll"]
        words.append(f"The VAE is a model of p(x): with K = {i['k']} importance samples on {i['images']} test images, "
                     f"-log p(x) is about {fmt(i['nll'])} nats ({fmt(i['bpd'], 4)} bits/dim), below the -ELBO "
                     f"{fmt(i['nelbo_same_images'])} on the same images, as a tighter bound must be. "
                     "The AE defines no density, so it has neither number.")
    return words


# --- 2. reconstructions and samples -----------------------------------------------------------------------


def reconstructions_section(m: dict, models: dict[str, Autoencoder], data: Dataset) -> Section:
    """Ten test images above each model's reconstructions of them."""
    x = test_tensor(data, 10)
    with torch.no_grad():
        recon = [model.reconstruct(x.to(model.device)).cpu() for model in models.values()]
    body = img(figures.image_grid_png(torch.cat([x, *recon]), nrow=len(x)), "test images, AE and VAE reconstructions")
    gap = m["vae"]["test"]["recon"] - m["ae"]["test"]["recon"]
    words = [f"Rows: test images, the AE's reconstructions, the VAE's (from the posterior mean). The AE reconstructs "
             f"at {fmt(m['ae']['test']['recon'])} nats per image, the VAE at {fmt(m['vae']['test']['recon'])} "
             f"(expected under q(z|x)), {fmt(abs(gap))} nats {'worse' if gap > 0 else 'better'}, while its KL of "
             f"{fmt(m['vae']['test']['kl'])} nats pulls the codes towards N(0, I)."]
    return "Reconstructions", body, words


def samples_section(m: dict, evals: dict[str, Evaluation], settings: EvalSettings, n_show: int = 64) -> Section:
    """A grid of generated images per model and sampler."""
    body = "<div class=pair>"
    for kind, evaluation in evals.items():
        for sampler, caption in SAMPLE_CAPTIONS.items():
            picture = img(figures.image_grid_png(evaluation.samples[sampler][:n_show], 8), f"{kind} {sampler}")
            body += f"<figure>{picture}<figcaption>{kind.upper()}: {caption}</figcaption></figure>"
    body += "</div>"
    words = [f"The left column decodes the same {n_show} draws z ~ N(0, I) with each model's decoder; the right "
             f"column draws z from {m['ae']['priors']['gmm'].replace('the training codes', 'each model')}'s training "
             "codes."]
    if m["real_floor"] is not None:
        a, v = m["ae"]["samples"]["prior"], m["vae"]["samples"]["prior"]
        better = "VAE" if v["frechet"] < a["frechet"] else "AE"
        words.append(f"Measured on {settings.n_samples} samples each, the {better}'s prior samples are closer to the "
                     f"data (Frechet distance {fmt(min(a['frechet'], v['frechet']))} against "
                     f"{fmt(max(a['frechet'], v['frechet']))}).")
    return "Generation from scratch", body, words


# --- 3. the latent space ----------------------------------------------------------------------------------


def figure_codes(evals: dict[str, Evaluation]) -> dict[str, torch.Tensor]:
    """Each model's test codes, keyed by its name on the figures ("AE", "VAE")."""
    return {kind.upper(): evaluation.test_codes for kind, evaluation in evals.items()}


def latent_section(m: dict, models: dict[str, Autoencoder], evals: dict[str, Evaluation], data: Dataset) -> Section:
    """Test codes coloured by class, against the prior's circles."""
    body = img(figures.latent_maps(figure_codes(evals), data.test.labels, data.classes), "latent maps")
    la, lv = m["ae"]["latent"], m["vae"]["latent"]
    words = ["Each point is a test image's code, coloured by class; the circles mark 1, 2 and 3 standard deviations "
             "of N(0, I), where generation draws z from.",
             f"Inside the prior's 99% ball (radius of the chi distribution with {models['ae'].latent_dim} degrees of "
             "freedom) lie "
             f"{100 * lv.get('inside_prior_99', float('nan')):.1f}% of the VAE's test codes and "
             f"{100 * la.get('inside_prior_99', float('nan')):.1f}% of the AE's.",
             f"The AE's codes have per-dimension standard deviations from {min(la['std']):.2f} to {max(la['std']):.2f} "
             f"and means from {min(la['mean']):.2f} to {max(la['mean']):.2f}; the VAE's means of q(z|x) have standard "
             f"deviations from {min(lv['std']):.2f} to {max(lv['std']):.2f}. Nothing in the AE's loss ties its codes "
             "to N(0, I); the KL term ties the VAE's."]
    return "The latent space", body, words


def histograms_section(m: dict, models: dict[str, Autoencoder], evals: dict[str, Evaluation]) -> Section:
    """Per-dimension histograms of the codes, active units and the VAE's KL per dimension."""
    body = img(figures.code_histograms(figure_codes(evals)), "code histograms")
    la, lv = m["ae"]["latent"], m["vae"]["latent"]
    ae_dims, vae_dims = models["ae"].latent_dim, models["vae"].latent_dim
    kl = lv.get("kl_per_dim", [])
    words = [f"Histograms of the first dimensions of the test codes against the N(0, 1) density (black). The VAE "
             f"keeps {lv['active_units']} of {vae_dims} dimensions active (Burda et al.: variance of mu(x) over "
             f"the data above 0.01); the AE {la['active_units']} of {ae_dims}."]
    if kl:
        words.append(f"The VAE's KL per dimension ranges from {min(kl):.2f} to {max(kl):.2f} nats"
                     + ("." if lv["active_units"] == vae_dims else
                        f"; its {vae_dims - lv['active_units']} inactive dimensions carry almost no information "
                        "about x (their q(z|x) stays close to N(0, 1)), a mild form of posterior collapse."))
    return "Codes against N(0, 1)", body, words


# --- 4. interpolation and training ------------------------------------------------------------------------


def interpolation_section(m: dict, interpolations: dict[str, torch.Tensor]) -> Section:
    """The first interpolation pair of each model, one row per model; `interpolations` is (pairs, steps, C, H, W)."""
    rows = [lines[0] for lines in interpolations.values()]
    body = img(figures.image_grid_png(torch.cat(rows), nrow=len(rows[0])), "interpolations")
    words = ["Top: the AE, bottom: the VAE, decoding points on the straight line between the codes of two test "
             "images."]
    if "interpolation_confidence" in m:
        ic = m["interpolation_confidence"]
        words.append(f"Over {len(interpolations['ae'])} such pairs, the classifier's mean confidence on the "
                     f"in-between images is {fmt(ic['ae'], 3)} for the AE and {fmt(ic['vae'], 3)} for the VAE "
                     f"(real test images: {fmt(m['real_floor']['test_confidence'], 3)}): the higher, the more the "
                     "path between two codes stays among images that look like data.")
    return "Interpolation", body, words


def training_section(histories: dict[str, list[dict]]) -> Section:
    """Both models' learning curves and where they ended."""
    body = img(figures.training_curves({kind.upper(): h for kind, h in histories.items()}), "training curves")
    last = {kind: h[-1] for kind, h in histories.items()}
    words = [f"After {last['vae']['epoch']} epochs the validation reconstruction is {fmt(last['ae']['val_recon'])} "
             f"nats for the AE and {fmt(last['vae']['val_recon'])} for the VAE, whose KL is "
             f"{fmt(last['vae']['val_kl'])} nats. Both used the same networks, data, seed and epochs."]
    return "Training", body, words


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
h1 {{ margin-bottom: 0.2em; }} .meta {{ color: #555; }}
section {{ margin: 2em 0; border-top: 1px solid #ddd; }}
table {{ border-collapse: collapse; margin: 1em 0; display: block; max-width: 100%; overflow-x: auto; }}
td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
th:first-child {{ text-align: left; }} tr.floor {{ color: #666; font-style: italic; }}
img {{ max-width: 100%; image-rendering: pixelated; }}
.pair {{ display: grid; grid-template-columns: 1fr 1fr; gap: 1em; }}
figure {{ margin: 0; }} figcaption {{ text-align: center; font-weight: 600; }}
</style></head>
<body>
{body}
</body></html>
"""
