"""The self-contained report.html of `vaekit inspect`: where the model sees the defects, the answer first, then the
tables by map and by defect type, the decisions, and the heatmaps (normal images, each defect type, the worst
misses)."""

from __future__ import annotations

import html

import numpy as np

from vaekit.evaluation.inspection import Inspection
from vaekit.evaluation.maps import IMAGE_SCORES, MAPS
from vaekit.evaluation.results import InspectionReport, Localization
from vaekit.report import figures
from vaekit.report.ood_page import paragraphs, section
from vaekit.report.page import PAGE
from vaekit.report.words import fmt, img

EXAMPLES = 4  # images per row of heatmaps
CHANCE = 0.05  # an AUROC this far from 0.5, or an AUPRO this far from 0.15, is better than chance


def answer_words(m: InspectionReport) -> list[str]:
    """The best map in words, and whether it does better than a random map (AUPRO 0.15, pixel AUROC 0.5)."""
    best = m.overall[m.best]
    words = [f"The {m.best} map ({MAPS[m.best]}) finds the defects best: AUPRO {best.aupro:.3f}, pixel AUROC "
             f"{best.pixel_auroc:.3f}, F1-max {best.f1_max:.3f} over {best.images} test images, {best.defective} with "
             "a defect."]
    if best.aupro < 0.15 + CHANCE or best.pixel_auroc < 0.5 + CHANCE:
        words.append("That is no better than a map of random numbers (AUPRO about 0.15, pixel AUROC 0.5): this model "
                     "does not localise these defects. Train longer, on more normal images, or try another map.")
    worse = [n for n, v in m.overall.items() if v.pixel_auroc < 0.5 - CHANCE]
    if worse:
        words.append(f"The {', '.join(worse)} map{'s rank' if len(worse) > 1 else ' ranks'} defective pixels below "
                     "normal ones (pixel AUROC under 0.5): it is high where the model is sensitive, not where the "
                     "image is wrong.")
    return words


def cells(v: Localization) -> str:
    return (f"<td>{v.pixel_auroc:.3f}</td><td>{v.aupro:.3f}</td><td>{v.f1_max:.3f}</td>"
            + "".join(f"<td>{v.image_auroc[k]:.3f}</td>" for k in IMAGE_SCORES)
            + f"<td>{v.defective} / {v.images}</td>")


def table(groups: dict[str, dict[str, Localization]], first: str) -> str:
    """Rows of maps, grouped (a defect type's maps under its name; "" for no group)."""
    head = (f'<tr><th rowspan="2">{first}</th><th rowspan="2">pixel AUROC</th><th rowspan="2">AUPRO</th>'
            f'<th rowspan="2">F1-max</th><th colspan="{len(IMAGE_SCORES)}">image AUROC</th>'
            '<th rowspan="2">defective / images</th></tr><tr>' + "".join(f"<th>{k}</th>" for k in IMAGE_SCORES)
            + "</tr>")
    rows = []
    for group, by_map in groups.items():
        if group:
            rows.append(f'<tr><th colspan="{5 + len(IMAGE_SCORES)}">{html.escape(group)}</th></tr>')
        rows += [f"<tr><th>{html.escape(name)}</th>{cells(v)}</tr>" for name, v in by_map.items()]
    return f"<table>{head}{''.join(rows)}</table>"


def legend(m: InspectionReport) -> str:
    maps = "; ".join(f"<b>{n}</b>: {html.escape(MAPS[n])}" for n in m.maps)
    scores = "; ".join(f"<b>{k}</b>: {html.escape(w)}" for k, w in IMAGE_SCORES.items())
    return (f"<p>Maps: {maps}. Image scores from a map: {scores} (top: {100 * m.top:g}% of the pixels). Pixel AUROC, "
            "AUPRO (the per-region overlap to a false-positive rate of 0.3, normalised: 1 is perfect, a random map "
            "about 0.15) and F1-max compare each map with the masks; image AUROC tells defective images from normal "
            "ones.</p>")


def decisions_words(m: InspectionReport) -> list[str]:
    d = m.decisions
    return [f"On the image score {d.score}, from {d.held_out} normal validation images (no test image used):",
            f"A threshold for {100 * d.fpr:g}% false positives ({d.threshold:.4g}) flags {100 * d.test_fpr:.1f}% of "
            f"the test's normal images and {100 * d.test_tpr:.1f}% of its defective ones.",
            f"Conformal p-values with Benjamini-Hochberg at a false-discovery rate of {100 * d.fdr:g}% flag "
            f"{d.flagged} test images, {d.false_discoveries} of them normal. Over {d.batches} random batches of "
            f"{d.batch_size} test images the false-discovery proportion averaged {100 * d.mean_fdr:.1f}%, and "
            f"{100 * d.normal_batches_flagged:.1f}% of all-normal batches had any image flagged (target: at most "
            f"{100 * d.fdr:g}% for both).", *too_few_words(d)]


def too_few_words(d) -> list[str]:
    """Where Benjamini-Hochberg cannot flag anything: the smallest conformal p-value, 1 / (n + 1), above the rate."""
    if 1 / (d.held_out + 1) <= d.fdr:
        return []
    return [f"With {d.held_out} held-out normal images no p-value can be below 1/{d.held_out + 1} = "
            f"{1 / (d.held_out + 1):.3f}, above the target rate {d.fdr:g}: Benjamini-Hochberg cannot flag any image. "
            f"Hold out at least {round(1 / d.fdr)} normal images (--val-fraction, or more normal images)."]


def examples(result: Inspection, picks: np.ndarray, name: str) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    images = result.images[picks].permute(0, 2, 3, 1).float().numpy() / 255
    return [(images[i], result.maps[name][p], result.masks[p]) for i, p in enumerate(picks)]


def heatmap_rows(result: Inspection, types: list[str]) -> dict[str, list]:
    """A row of examples per defect type (`good` first), then the defective images the decision score finds least
    anomalous (the worst misses)."""
    m = result.report
    name = m.decisions.score.rsplit("_", 1)[0]
    rows = {t: examples(result, np.nonzero(result.labels == i)[0][:EXAMPLES], name)
            for i, t in enumerate(types) if (result.labels == i).any()}
    defective = np.nonzero(result.labels != 0)[0]
    if len(defective):
        worst = defective[np.argsort(result.scores[m.decisions.score][defective], kind="stable")[:EXAMPLES]]
        rows["worst misses"] = examples(result, worst, name)
    return rows


def render_inspection(result: Inspection, title: str, meta: list[str], types: list[str]) -> str:
    m = result.report
    name = m.decisions.score.rsplit("_", 1)[0]
    low, top = (float(v) for v in np.quantile(result.maps[name], [0.005, 0.995]))
    body = [f"<h1>{html.escape(title)}</h1>", *(f'<p class="meta">{html.escape(w)}</p>' for w in meta),
            section("Where the defects are", paragraphs(answer_words(m))),
            section("Every map, every test image", table({"": m.overall}, "map") + legend(m)),
            section("By defect type (each with the normal test images)", table(m.types, "map")),
            section("Decisions", paragraphs(decisions_words(m))),
            section(f"Heatmaps of the {name} map (left: the image, the mask outlined in cyan; right: the map)",
                    '<div class="plot">' + img(figures.heatmaps(heatmap_rows(result, types), low, top), "heatmaps")
                    + "</div>"
                    + f"<p>A row per type: the first {EXAMPLES} test images of each, then the worst misses, the "
                    f"defective images {html.escape(m.decisions.score)} finds least anomalous. One colour scale for "
                    f"every map: black is {fmt(low, 3)} and below, yellow {fmt(top, 3)} and above.</p>")]
    return PAGE.format(title=html.escape(title), body="\n".join(body))
