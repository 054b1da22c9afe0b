"""`vaekit compare`: an AE and a VAE with identical networks, data, seed and budget, measured side by side.

Writes a run folder with ae/ and vae/ (ordinary runs), metrics.json and a self-contained report.html.
"""

from __future__ import annotations

import base64
import html
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
    Evaluation,
    can_score_samples,
    evaluate_model,
    real_reference,
    test_tensor,
)
from vaekit.evaluation.latent import interpolate
from vaekit.files import new_run_folder, write_json, write_text
from vaekit.models import Autoencoder, load_model
from vaekit.progress import say as show
from vaekit.report import figures
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
    ae, vae = models["ae"], models["vae"]
    scored = can_score_samples(data)
    classifier, real_features, floor, accuracy = None, None, None, None
    if scored:
        say("feature classifier for sample quality (cached after the first run)")
        classifier, accuracy = load_or_train_classifier(data, data_home(run.data), quiet=quiet)
        real_features, floor = real_reference(data, classifier, settings.n_samples)
    evals = {}
    for kind, model in models.items():
        evals[kind] = evaluate_model(model, data, settings, classifier, real_features, quiet=quiet)
    metrics = {"checkpoints": {kind: os.path.relpath(Path(given).resolve(), out.resolve())
                               for kind, given in zip(("ae", "vae"), checkpoints or (out / "ae", out / "vae"))},
               "data": data.spec, "labels": data.label_source, "data_notes": data.notes, "quick": quick,
               "settings": settings.__dict__, "classifier_accuracy": accuracy,
               "real_floor": floor, "ae": evals["ae"].metrics, "vae": evals["vae"].metrics,
               "same_networks": ae.config.arch == vae.config.arch and ae.config.hidden == vae.config.hidden
               and ae.config.channels == vae.config.channels and ae.latent_dim == vae.latent_dim}
    histories = {kind: read_history(out / kind) for kind in ("ae", "vae")}
    pairs = test_tensor(data, 2 * INTERPOLATION_PAIRS)
    interpolations = {kind: interpolate_pairs(model, pairs) for kind, model in models.items()}
    if classifier is not None:
        metrics["interpolation_confidence"] = {
            kind: classifier.features_and_confidence(imgs[:, 1:-1].flatten(0, 1))[1].mean().item()
            for kind, imgs in interpolations.items()}
    metrics["seconds"] = time.perf_counter() - started
    write_json(out / "metrics.json", metrics)
    page = render(metrics, models, evals, data, histories, settings, interpolations)
    write_text(out / "report.html", page)
    say(summary_line(metrics) + f"\nreport: {out / 'report.html'}")
    return metrics


INTERPOLATION_PAIRS, INTERPOLATION_STEPS = 50, 10


@torch.no_grad()
def interpolate_pairs(model: Autoencoder, images: torch.Tensor) -> torch.Tensor:
    """Decodings along straight lines between the codes of image pairs: (pairs, steps, C, H, W)."""
    z = model.embed(images.to(model.device)).cpu()
    lines = [interpolate(z[i], z[i + 1], INTERPOLATION_STEPS) for i in range(0, len(z) - 1, 2)]
    decoded = model.generate(torch.cat(lines).to(model.device)).cpu()
    return decoded.reshape(len(lines), INTERPOLATION_STEPS, *decoded.shape[1:])


def read_history(run_dir: Path) -> list[dict]:
    f = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()] if f.is_file() else []


def summary_line(m: dict) -> str:
    if m["real_floor"] is None:
        return "(no labels: sample quality not scored)"
    s = {k: m[k]["samples"] for k in ("ae", "vae")}
    return (f"Frechet distance to real test images (lower is better): AE-prior {s['ae']['prior']['frechet']:.2f}, "
            f"VAE-prior {s['vae']['prior']['frechet']:.2f}, AE-GMM {s['ae']['gmm']['frechet']:.2f}, "
            f"VAE-GMM {s['vae']['gmm']['frechet']:.2f}, real {m['real_floor']['frechet']:.2f}")


# --- the page -------------------------------------------------------------------------------------------


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
    ae, vae = models["ae"], models["vae"]
    sections: list[tuple[str, str, list[str]]] = []  # (title, html body, sentences)

    # 1. metrics table
    rows = []
    floor = m["real_floor"]

    def sample_cells(kind: str, sampler: str) -> str:
        if floor is None:
            return "<td>n/a</td><td>n/a</td>"
        s = m[kind]["samples"][sampler]
        return f"<td>{fmt(s['frechet'])}</td><td>{fmt(s['confidence'], 3)}</td>"

    for kind, sampler in (("ae", "prior"), ("ae", "gmm"), ("vae", "prior"), ("vae", "gmm")):
        t = m[kind]["test"]
        is_nll = m[kind].get("is_nll")
        rows.append(f"<tr><th>{kind.upper()} + {'N(0, I)' if sampler == 'prior' else 'GMM(10) on codes'}</th>"
                    f"<td>{fmt(t['recon'])}</td><td>{fmt(t.get('nelbo'))}</td>"
                    f"<td>{fmt(is_nll['nll'] if is_nll else None)}</td>{sample_cells(kind, sampler)}</tr>")
    if floor is not None:
        rows.append(f"<tr class=floor><th>real held-out images (floor)</th><td></td><td></td><td></td>"
                    f"<td>{fmt(floor['frechet'])}</td><td>{fmt(floor['confidence'], 3)}</td></tr>")
    table = ("<table><tr><th>model + sampler</th><th>reconstruction<br>-log p(x|z), nats</th><th>-ELBO<br>nats</th>"
             f"<th>IS-NLL (K={settings.k})<br>nats</th><th>Frechet distance<br>(lower is better)</th>"
             "<th>classifier<br>confidence</th></tr>" + "".join(rows) + "</table>")
    words = []
    if floor is not None:
        a, v = m["ae"]["samples"], m["vae"]["samples"]
        words.append(f"From z ~ N(0, I), the AE's samples lie at Frechet distance {fmt(a['prior']['frechet'])} from "
                     f"real test images, {ratio_words(a['prior']['frechet'], v['prior']['frechet'])} the VAE's "
                     f"{fmt(v['prior']['frechet'])}; real held-out images score {fmt(floor['frechet'])}.")
        best = min((a["gmm"]["frechet"], "AE"), (v["gmm"]["frechet"], "VAE"), (a["prior"]["frechet"], "AE-prior"),
                   (v["prior"]["frechet"], "VAE-prior"))
        words.append(f"With a 10-component Gaussian mixture fitted to the training codes instead of N(0, I), the AE "
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
    sections.append(("Metrics", table, words))

    # 2. reconstructions
    x = test_tensor(data, 10)
    with torch.no_grad():
        recon = {k: mdl.reconstruct(x.to(mdl.device)).cpu() for k, mdl in models.items()}
    body = img(figures.image_grid_png(torch.cat([x, recon["ae"], recon["vae"]]), nrow=len(x)),
               "test images, AE and VAE reconstructions")
    gap = m["vae"]["test"]["recon"] - m["ae"]["test"]["recon"]
    words = [f"Rows: test images, the AE's reconstructions, the VAE's (from the posterior mean). The AE reconstructs "
             f"at {fmt(m['ae']['test']['recon'])} nats per image, the VAE at {fmt(m['vae']['test']['recon'])} "
             f"(expected under q(z|x)), {fmt(abs(gap))} nats {'worse' if gap > 0 else 'better'}, while its KL of "
             f"{fmt(m['vae']['test']['kl'])} nats pulls the codes towards N(0, I)."]
    sections.append(("Reconstructions", body, words))

    # 3. samples
    n_show = 64
    body = "<div class=pair>"
    for kind in ("ae", "vae"):
        for sampler, label in (("prior", "z ~ N(0, I)"), ("gmm", "z ~ GMM fitted to codes")):
            picture = img(figures.image_grid_png(evals[kind].samples[sampler][:n_show], 8), f"{kind} {sampler}")
            body += (f"<figure>{picture}"
                     f"<figcaption>{kind.upper()}: {label}</figcaption></figure>")
    body += "</div>"
    words = [f"The left column decodes the same {n_show} draws z ~ N(0, I) with each model's decoder; the right "
             "column draws z from a 10-component Gaussian mixture fitted to each model's training codes."]
    if floor is not None:
        a, v = m["ae"]["samples"]["prior"], m["vae"]["samples"]["prior"]
        better = "VAE" if v["frechet"] < a["frechet"] else "AE"
        words.append(f"Measured on {settings.n_samples} samples each, the {better}'s prior samples are closer to the "
                     f"data (Frechet distance {fmt(min(a['frechet'], v['frechet']))} against "
                     f"{fmt(max(a['frechet'], v['frechet']))}).")
    sections.append(("Generation from scratch", body, words))

    # 4. latent map
    labels = data.test.labels
    codes = {"AE": evals["ae"].test_codes, "VAE": evals["vae"].test_codes}
    body = img(figures.latent_maps(codes, labels, data.classes), "latent maps")
    la, lv = m["ae"]["latent"], m["vae"]["latent"]
    words = ["Each point is a test image's code, coloured by class; the circles mark 1, 2 and 3 standard deviations "
             "of N(0, I), where generation draws z from.",
             f"Inside the prior's 99% ball (radius of the chi distribution with {ae.latent_dim} degrees of freedom) "
             "lie "
             f"{100 * lv['inside_prior_99']:.1f}% of the VAE's test codes and {100 * la['inside_prior_99']:.1f}% of "
             "the AE's.",
             f"The AE's codes have per-dimension standard deviations from {min(la['std']):.2f} to {max(la['std']):.2f} "
             f"and means from {min(la['mean']):.2f} to {max(la['mean']):.2f}; the VAE's means of q(z|x) have standard "
             f"deviations from {min(lv['std']):.2f} to {max(lv['std']):.2f}. Nothing in the AE's loss ties its codes "
             "to N(0, I); the KL term ties the VAE's."]
    sections.append(("The latent space", body, words))

    # 5. histograms
    body = img(figures.code_histograms(codes), "code histograms")
    kl = lv.get("kl_per_dim", [])
    words = [f"Histograms of the first dimensions of the test codes against the N(0, 1) density (black). The VAE "
             f"keeps {lv['active_units']} of {vae.latent_dim} dimensions active (Burda et al.: variance of mu(x) over "
             f"the data above 0.01); the AE {la['active_units']} of {ae.latent_dim}."]
    if kl:
        words.append(f"The VAE's KL per dimension ranges from {min(kl):.2f} to {max(kl):.2f} nats"
                     + ("." if lv["active_units"] == vae.latent_dim else
                        f"; its {vae.latent_dim - lv['active_units']} inactive dimensions carry almost no information "
                        "about x (their q(z|x) stays close to N(0, 1)), a mild form of posterior collapse."))
    sections.append(("Codes against N(0, 1)", body, words))

    # 6. interpolation
    body = img(figures.image_grid_png(torch.cat([interpolations["ae"][0], interpolations["vae"][0]]),
                                      nrow=INTERPOLATION_STEPS), "interpolations")
    words = ["Top: the AE, bottom: the VAE, decoding points on the straight line between the codes of two test "
             "images."]
    if "interpolation_confidence" in m:
        ic = m["interpolation_confidence"]
        words.append(f"Over {len(interpolations['ae'])} such pairs, the classifier's mean confidence on the "
                     f"in-between images is {fmt(ic['ae'], 3)} for the AE and {fmt(ic['vae'], 3)} for the VAE "
                     f"(real test images: {fmt(m['real_floor']['test_confidence'], 3)}): the higher, the more the "
                     "path between two codes stays among images that look like data.")
    sections.append(("Interpolation", body, words))

    # 7. curves
    if all(histories.values()):
        body = img(figures.training_curves({"AE": histories["ae"], "VAE": histories["vae"]}), "training curves")
        last = {k: h[-1] for k, h in histories.items()}
        words = [f"After {last['vae']['epoch']} epochs the validation reconstruction is {fmt(last['ae']['val_recon'])} "
                 f"nats for the AE and {fmt(last['vae']['val_recon'])} for the VAE, whose KL is "
                 f"{fmt(last['vae']['val_kl'])} nats. Both used the same networks, data, seed and epochs."]
        sections.append(("Training", body, words))

    c = ae.config
    net = f"{c.arch} " + (f"hidden {','.join(map(str, c.hidden))}" if c.arch == "mlp" else
                          f"channels {','.join(map(str, c.channels))}")
    notes = m["data_notes"]
    head = (f"<h1>AE vs VAE on {html.escape(data.spec)}</h1><p class=meta>Same networks ({net}, latent "
            f"{c.latent_dim}, {c.likelihood} likelihood), same data and seed. {'Quick run. ' if m['quick'] else ''}"
            f"Generated images per sampler: {settings.n_samples}. Wall time {m['seconds']:.0f} s.</p>"
            f"<p class=meta>Labels (used only by the feature classifier that scores samples): "
            f"{html.escape(m['labels'])}.{''.join(' ' + html.escape(n[0].upper() + n[1:]) + '.' for n in notes)}"
            f"</p>")
    parts = [head]
    for title, body, words in sections:
        parts.append(f"<section><h2>{html.escape(title)}</h2>{body}"
                     + "".join(f"<p>{html.escape(w)}</p>" for w in words) + "</section>")
    return PAGE.format(title=f"vaekit: AE vs VAE on {html.escape(data.spec)}", body="\n".join(parts))


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
h1 {{ margin-bottom: 0.2em; }} .meta {{ color: #555; }}
section {{ margin: 2em 0; border-top: 1px solid #ddd; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
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
