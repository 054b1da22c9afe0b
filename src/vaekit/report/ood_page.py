"""The self-contained report.html of `vaekit ood` and of `vaekit oneclass`: the answer first, then the numbers,
the curves and the images."""

from __future__ import annotations

import html

import numpy as np

from vaekit.evaluation.detection import finite, roc
from vaekit.evaluation.ood import OodResult, ranked_scores
from vaekit.evaluation.results import OneClassReport, OodReport
from vaekit.evaluation.scores import SCORES
from vaekit.images import png_bytes
from vaekit.models.likelihoods import is_code_length
from vaekit.report import figures
from vaekit.report.page import PAGE
from vaekit.report.words import fmt, img

LIKELIHOODS = ("is_nll", "nelbo")  # a model's likelihood scores, best first (an AE has none)
MARGIN = 0.05  # an AUROC this far from 0.5 is a ranking, not noise


def paragraphs(words: list[str]) -> str:
    return "".join(f"<p>{html.escape(w)}</p>" for w in words)


def section(title: str, body: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>{body}</section>"


def likelihood_score(m: OodReport | OneClassReport) -> str | None:
    return next((n for n in LIKELIHOODS if n in m.scores), None)


def answer_words(m: OodReport) -> list[str]:
    """What the numbers say, in sentences: the best score per set, the known failure of likelihoods, the threshold."""
    words = []
    for spec, by_score in m.sets.items():
        best = max(ranked_scores(m.scores), key=lambda n: by_score[n].auroc)
        words.append(f"Against {spec}, the best score is {best} (AUROC {by_score[best].auroc:.3f}; 0.5 is chance, "
                     "1 a perfect separation).")
        words += failure_words(m, spec)
    words += units_words(m)
    best, t = m.best, m.flagged_at_threshold[m.best]
    flagged = ", ".join(f"{100 * t[spec]:.1f}% of {spec}" for spec in m.sets)
    words.append(f"Over all sets, {best} separates best on average. Its threshold, chosen on {m.sizes['val']} "
                 f"validation images to flag at most {100 * m.fpr:g}% of them, flags {100 * t['test']:.1f}% of the "
                 f"{m.sizes['test']} test images and {flagged}; `vaekit score RUN --threshold thresholds.json` "
                 "flags new images with it.")
    return words


def failure_words(m: OodReport, spec: str) -> list[str]:
    """Nalisnick et al.'s failure, where it shows: the model explains the OOD set better than its own test images."""
    lik, by_score = likelihood_score(m), m.sets[spec]
    if lik is None or by_score[lik].auroc >= 0.5 - MARGIN:
        return []
    a = by_score[lik].auroc
    words = [f"The model explains {spec} better than its own test images ({lik} AUROC {a:.3f}, below chance): the "
             "failure Nalisnick et al. (2019) found in deep generative models."]
    png = m.means[spec]["png_bits"], m.means["test"]["png_bits"]
    if None not in png and png[0] < png[1]:
        words.append(f"Its images are simpler: they compress to {png[0]:.0f} bits as PNG against {png[1]:.0f} for the "
                     "test images, and simple images are likely under any model.")
    c = by_score["complexity"].auroc
    verdict = "fixes the ranking" if c > 0.5 + MARGIN else "does not fix it" if c < 0.5 else "brings it to chance"
    words.append(f"The complexity-corrected score (Serra et al., 2020: {lik} in bits minus the PNG length) gives AUROC "
                 f"{c:.3f}: it {verdict}.")
    return words


def units_words(m: OodReport) -> list[str]:
    """Why the complexity correction can turn a ranking round, where it did: its two terms are not both code lengths;
    and, for sets whose images compress worse than the test images, how that turns it."""
    inverted = [spec for spec, by_score in m.sets.items() if by_score["complexity"].auroc < 0.5 - MARGIN]
    if not inverted or m.binarized or is_code_length(m.likelihood):
        return []
    png = lambda spec: m.means[spec].get("png_bits")  # noqa: E731
    complex_ = [s for s in inverted if None not in (png(s), png("test")) and png(s) > png("test")]
    words = [f"The complexity-corrected score ranks {', '.join(inverted)} below the test images. Its correction "
             "assumes -log p(x) is a code length for the 8-bit pixels, like the PNG's; a continuous decoder (Bernoulli "
             "or Gaussian) on grey levels gives no such length, so the difference mixes two units."]
    if complex_:
        words.append(f"{', '.join(complex_)} compress{'es' if len(complex_) == 1 else ''} worse than the test images "
                     f"as PNG ({', '.join(f'{png(s):.0f}' for s in complex_)} bits against {png('test'):.0f}), and a "
                     "Bernoulli's -log p stays bounded however irregular the pixels, so the PNG length outgrows it "
                     "there. Serra et al. used discrete likelihoods; here, trust complexity only where the sets differ "
                     "in structure rather than in irregularity.")
    return words


def detection_table(m: OodReport) -> str:
    sets = list(m.sets)
    head = "".join(f'<th colspan="3">{html.escape(s)}</th>' for s in sets)
    sub = "<th>AUROC</th><th>AUPRC</th><th>FPR@95</th>" * len(sets)
    rows = []
    for score in m.scores:
        cells = "".join(f"<td>{fmt(d.auroc, 3)}</td><td>{fmt(d.auprc, 3)}</td><td>{fmt(d.fpr_at_95_tpr, 3)}</td>"
                        for d in (m.sets[s][score] for s in sets))
        rows.append(f"<tr><th title=\"{html.escape(SCORES[score])}\">{score}</th>{cells}</tr>")
    return (f'<table><tr><th rowspan="2">score</th>{head}</tr><tr>{sub}</tr>{"".join(rows)}</table>'
            "<p>" + "; ".join(f"<b>{n}</b>: {html.escape(SCORES[n])}" for n in m.scores) + ". Higher is more "
            "anomalous for every score." + (" bpd ranks images exactly as is_nll." if "bpd" in m.scores else "")
            + " png_bits needs no model: it shows how far image complexity alone goes.</p>")


def threshold_table(m: OodReport) -> str:
    sets = list(m.sets)
    head = "".join(f"<th>{html.escape(s)} flagged</th>" for s in sets)
    rows = "".join(
        f"<tr><th>{score}</th><td>{m.thresholds[score]:.4g}</td><td>{100 * f['test']:.1f}%</td>"
        + "".join(f"<td>{100 * f[s]:.1f}%</td>" for s in sets) + "</tr>"
        for score, f in m.flagged_at_threshold.items())
    return f"<table><tr><th>score</th><th>threshold</th><th>test flagged</th>{head}</tr>{rows}</table>"


THUMBS = 8  # images per gallery row


def gallery(images, scores: np.ndarray, title: str, order: np.ndarray) -> str:
    """A row of images (uint8 (N, C, H, W)) at `order`, each about 72 px tall with its score under it."""
    cells = "".join(f'<figure class="thumb">{img(png_bytes(images[i:i + 1].float() / 255, 1, pad=0, height=72), title)}'
                    f"<figcaption>{scores[i]:.4g}</figcaption></figure>" for i in order)
    return f'<h3>{html.escape(title)}</h3><div class="thumbs">{cells}</div>'


def images_body(result: OodResult) -> str:
    """For the test images and each set: a few as they come, and the most anomalous by the best score, each image
    with its score."""
    m = result.report
    parts = [f"<p>Each image with its {m.best} score (higher: more anomalous; the threshold is "
             f"{m.thresholds[m.best]:.4g}).</p>"]
    for name, images in result.images.items():
        if name == "val":
            continue
        scores = result.scores[name][m.best]
        n = min(THUMBS, len(scores))
        parts.append(gallery(images.images, scores, f"{name}: the first {n}", np.arange(n)))
        parts.append(gallery(images.images, scores, f"{name}: the {n} most anomalous by {m.best}",
                             np.argsort(-finite(scores), kind="stable")[:n]))
    return "".join(parts)


def render_ood(result: OodResult, title: str, meta: list[str]) -> str:
    """The page of one model against its OOD sets."""
    m = result.report
    names = [n for n in m.scores if n != "bpd"]
    curves = {spec: {n: roc(result.scores["test"][n], result.scores[spec][n]) for n in names} for spec in m.sets}
    aurocs = {spec: {n: m.sets[spec][n].auroc for n in names} for spec in m.sets}
    shown = {n: s for n, s in result.scores.items() if n != "val"}
    body = [f"<h1>{html.escape(title)}</h1>", *(f'<p class="meta">{html.escape(w)}</p>' for w in meta),
            section("What the scores say", paragraphs(answer_words(m))),
            section("Detection: test images (negatives) against each set (positives)", detection_table(m)),
            section(f"Thresholds at {100 * m.fpr:g}% false positives, chosen on the validation images",
                    threshold_table(m)),
            section("ROC curves", '<div class="maps">' + "".join(
                img(figures.roc_curve(spec, curves[spec], aurocs[spec]), f"ROC curves against {spec}")
                for spec in curves) + "</div>"),
            section("Score distributions", '<div class="maps">' + "".join(
                img(figures.score_histogram(n, {s: v[n] for s, v in shown.items()}, m.thresholds[n]),
                    f"{n} histogram") for n in names) + "</div>"),
            section("Images", images_body(result))]
    return PAGE.format(title=html.escape(title), body="\n".join(body))


def shown_scores(m: OneClassReport) -> list[str]:
    """The scores the one-class table shows: each ordering once, and the PNG length."""
    return ranked_scores(m.scores) + ["png_bits"]


def one_class_table(m: OneClassReport) -> str:
    """Rows: the classes; columns: each score's AUROC, the row's best in bold; a mean row."""
    names = shown_scores(m)
    rows = []
    for row in m.classes:
        top = max(row.auroc[n] for n in names)
        cells = "".join(f"<td>{'<b>' if row.auroc[n] == top else ''}{row.auroc[n]:.3f}"
                        f"{'</b>' if row.auroc[n] == top else ''}</td>" for n in names)
        rows.append(f"<tr><th>{html.escape(row.name)}</th>{cells}</tr>")
    means = "".join(f"<td>{m.mean_auroc[n]:.3f}</td>" for n in names)
    head = "".join(f'<th title="{html.escape(SCORES[n])}">{n}</th>' for n in names)
    return f"<table><tr><th>class</th>{head}</tr>{''.join(rows)}<tr><th>mean</th>{means}</tr></table>"


def one_class_words(m: OneClassReport) -> list[str]:
    names = ranked_scores(m.scores)
    wins = {n: sum(max(names, key=lambda s: r.auroc[s]) == n for r in m.classes) for n in names}
    best = max(names, key=lambda n: m.mean_auroc[n])
    listed = ", ".join(f"{n} {w}" for n, w in sorted(wins.items(), key=lambda kv: -kv[1]) if w)
    worst = min(m.classes, key=lambda r: r.auroc[best])
    return [f"{m.protocol_words} The best mean AUROC is {best}'s ({m.mean_auroc[best]:.3f}). Classes won per "
            f"score: {listed}. The hardest class for {best} is {worst.name} (AUROC {worst.auroc[best]:.3f}).",
            png_words(m), *complexity_words(m)]


def png_words(m: OneClassReport) -> str:
    """What the PNG length alone does per class: its range, and the classes where it is far from chance, each way."""
    png = {r.name: r.auroc["png_bits"] for r in m.classes}
    above = [n for n, v in png.items() if v > 0.5 + MARGIN]
    below = [n for n, v in png.items() if v < 0.5 - MARGIN]
    words = (f"PNG length alone (no model) gives AUROCs from {min(png.values()):.3f} to {max(png.values()):.3f} "
             f"across the classes (mean {m.mean_auroc['png_bits']:.3f}).")
    if above:
        words += f" Far above 0.5 for {', '.join(above)}: there the anomalies are simply more complex images."
    if below:
        words += f" Far below 0.5 for {', '.join(below)}: there they are simpler ones."
    if above and below:
        words += " A mean near 0.5 would hide that the classes go both ways."
    if not above and not below:
        words += " Near 0.5 for every class: image complexity alone does not tell these anomalies apart."
    return words


def complexity_words(m: OneClassReport) -> list[str]:
    """Where the likelihood is near chance and the complexity correction helps, and where it hurts."""
    lik = likelihood_score(m)
    if lik is None:
        return []
    helped = [r for r in m.classes if r.auroc[lik] < 0.6 and r.auroc["complexity"] > r.auroc[lik] + 0.05]
    hurt = [r for r in m.classes if r.auroc["complexity"] < r.auroc[lik] - 0.05]
    if not helped:
        return []
    listed = ", ".join(f"{r.name} {r.auroc[lik]:.3f} to {r.auroc['complexity']:.3f}" for r in helped)
    words = f"The likelihood ({lik}) is near chance for some classes, and the complexity correction lifts them: " \
        f"{listed}."
    if hurt:
        words += (f" It lowers {len(hurt)} other classes (e.g. {hurt[0].name}, {hurt[0].auroc[lik]:.3f} to "
                  f"{hurt[0].auroc['complexity']:.3f}), where the anomalies are the more complex images.")
    return [words]


def render_one_class(m: OneClassReport, title: str, meta: list[str]) -> str:
    body = [f"<h1>{html.escape(title)}</h1>", *(f'<p class="meta">{html.escape(w)}</p>' for w in meta),
            section("What the scores say", paragraphs(one_class_words(m))),
            section("AUROC per class and score", one_class_table(m)
                    + "<p>" + "; ".join(f"<b>{n}</b>: {html.escape(SCORES[n])}" for n in shown_scores(m)) + ".</p>"
                    + f'<div class="plot">{img(figures.class_aurocs(m, shown_scores(m)), "AUROC per class")}</div>')]
    return PAGE.format(title=html.escape(title), body="\n".join(body))

