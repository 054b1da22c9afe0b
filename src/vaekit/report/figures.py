"""Figures for the comparison report, as PNG bytes (matplotlib, no display needed)."""

from __future__ import annotations

import io
import math

import numpy as np
from torch import Tensor

from vaekit.evaluation.latent import Projection
from vaekit.images import png_bytes

COLOURS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974",
           "#64b5cd"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def image_grid_png(images: Tensor, nrow: int) -> bytes:
    return png_bytes(images, nrow, height=56)


def panels(n: int, width: float, height: float):
    """A figure of n panels, at most 3 a row, each width x height inches; returns it and its n axes in order
    (the empty places of the last row hidden)."""
    plt = _plt()
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def latent_maps(codes: dict[str, Tensor], labels: Tensor | None, classes: list[str]) -> bytes:
    plt = _plt()
    fig, axes = panels(len(codes), 5.2, 4.8)
    for ax, (name, z) in zip(axes, codes.items()):
        p = Projection.fit(z)
        xy = p.xy
        colours = [COLOURS[int(c) % 10] for c in labels.tolist()] if labels is not None else COLOURS[0]
        ax.scatter(xy[:, 0], xy[:, 1], s=3, c=colours, alpha=0.5, linewidths=0)
        for r in (1, 2, 3):
            ax.add_patch(plt.Circle((0, 0), r, fill=False, color="black", lw=1.2, ls="--" if r > 1 else "-"))
        ax.set_title(f"{name} test codes", fontsize=13)
        first, second = p.axes.split(", ")
        ax.set(xlabel=f"{first} (plane through the origin)", ylabel=second)
        ax.xaxis.label.set_size(11)
        ax.yaxis.label.set_size(11)
        ax.tick_params(labelsize=11)
        ax.set_aspect("equal", adjustable="datalim")
    if labels is not None and len(labels):  # integer labels without names are named by their number
        names = classes or [str(i) for i in range(int(labels.max()) + 1)]
        handles = [plt.Line2D([], [], marker="o", ls="", color=COLOURS[i % 10], label=c)
                   for i, c in enumerate(names[:len(COLOURS)])]
        many = len(names) > len(COLOURS)
        title = f"colours repeat every {len(COLOURS)} of the {len(names)} classes" if many else None
        fig.legend(handles=handles, loc="upper center", ncol=min(5, len(handles)), fontsize=11, frameon=False,
                   bbox_to_anchor=(0.5, 0.0), title=title)
        fig.tight_layout()
    return figure_png(fig)


def code_histograms(codes: dict[str, Tensor], dims: int = 4) -> bytes:
    """The first `dims` dimensions of each model's codes (one row per model) against the N(0, 1) density, at a size
    whose labels stay readable when the page shows it 1100 px wide."""
    plt = _plt()
    dims = min(dims, min(z.shape[1] for z in codes.values()))
    fig, axes = plt.subplots(len(codes), dims, figsize=(2.75 * dims, 2.4 * len(codes)), squeeze=False)
    t = np.linspace(-4, 4, 200)
    pdf = np.exp(-t ** 2 / 2) / math.sqrt(2 * math.pi)
    for row, (name, z) in enumerate(codes.items()):
        for d in range(dims):
            ax = axes[row, d]
            ax.hist(z[:, d].numpy(), bins=50, density=True, color=COLOURS[row], alpha=0.7)
            ax.plot(t, pdf, color="black", lw=1.2, label="N(0, 1)")
            ax.set_yticks([])
            ax.set_title(f"{name}: z{d + 1}", fontsize=12)
            ax.set_xlabel("code value", fontsize=11)
            ax.tick_params(labelsize=11)
        axes[row, 0].set_ylabel("share of codes", fontsize=11)
    axes[0, -1].legend(fontsize=10, frameon=False)
    fig.tight_layout()
    return figure_png(fig)


def training_curves(histories: dict[str, list[dict]]) -> bytes:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, (name, rows) in enumerate(histories.items()):
        epochs = [r["epoch"] for r in rows]
        axes[0].plot(epochs, [r["val_recon"] for r in rows], marker="o", color=COLOURS[i],
                     label=f"{name} reconstruction")
        if any(r["val_kl"] > 0 for r in rows):
            axes[0].plot(epochs, [r["val_loss"] for r in rows], marker="s", ls="--", color=COLOURS[i],
                         label=f"{name} -ELBO")
            axes[1].plot(epochs, [r["val_kl"] for r in rows], marker="o", color=COLOURS[i], label=f"{name} KL")
    axes[0].set(xlabel="epoch", ylabel="nats / image", title="validation")
    axes[1].set(xlabel="epoch", ylabel="nats / image", title="validation KL(q(z|x) || N(0, I))")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:  # models without a KL leave the right panel empty
            ax.legend(fontsize=10)
        ax.tick_params(labelsize=10)
        ax.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_png(fig)


def roc_curve(name: str, by_score: dict[str, tuple[np.ndarray, np.ndarray]], aurocs: dict[str, float]) -> bytes:
    """One out-of-distribution set: the ROC curve of each score, with its AUROC in the legend (one figure per set,
    so a page can lay them out for its width)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    for i, (score, (fpr, tpr)) in enumerate(by_score.items()):
        ax.plot(fpr, tpr, color=COLOURS[i % 10], lw=1.6, label=f"{score} ({aurocs[score]:.3f})")
    ax.plot([0, 1], [0, 1], color="#999", lw=1, ls=":", label="chance (0.500)")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false-positive rate (test images flagged)",
           ylabel="true-positive rate (OOD images flagged)", title=f"test vs {name}")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, title="score (AUROC)", title_fontsize=9, loc="lower right")
    fig.tight_layout()
    return figure_png(fig)


def score_histogram(score: str, scores: dict[str, np.ndarray], threshold: float) -> bytes:
    """One score's distribution on each set (the first filled), and the chosen threshold; the range is the middle
    99% of every set's finite scores together."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    values = {s: v[np.isfinite(v)] for s, v in scores.items()}
    everything = np.concatenate(list(values.values()))
    lo, hi = np.quantile(everything, [0.005, 0.995]) if len(everything) else (0.0, 1.0)
    bins = np.linspace(lo, hi if hi > lo else lo + 1, 60)
    for i, (s, v) in enumerate(values.items()):
        ax.hist(np.clip(v, lo, hi), bins=bins, density=True, histtype="step" if i else "stepfilled", lw=1.6,
                color=COLOURS[i % 10], alpha=0.45 if not i else 1.0, label=s)
    if lo <= threshold <= hi:  # a threshold beyond the plotted range (non-finite scores) is not drawn
        ax.axvline(threshold, color="black", ls="--", lw=1.2, label="threshold")
    ax.set(title=score, xlabel="score (higher: more anomalous)", ylabel="density")
    ax.tick_params(labelsize=10)
    ax.legend(fontsize=9)
    fig.tight_layout()
    return figure_png(fig)


def class_aurocs(m, names: list[str]) -> bytes:
    """The one-class table (a OneClassReport) as grouped bars: a group per class, a bar per score of `names`, and
    chance at 0.5."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(m.classes) + 2), 3.6))
    width = 0.8 / len(names)
    for i, score in enumerate(names):
        ax.bar([c + i * width for c in range(len(m.classes))], [r.auroc[score] for r in m.classes], width,
               color=COLOURS[i % 10], label=score)
    ax.axhline(0.5, color="black", ls=":", lw=1, label="chance")
    ax.set_xticks([c + 0.4 - width / 2 for c in range(len(m.classes))], [r.name for r in m.classes], rotation=30,
                  ha="right", fontsize=9)
    ax.set(ylim=(0, 1), ylabel="AUROC")
    ax.legend(fontsize=8, ncol=min(4, len(names) + 1), loc="lower left")
    fig.tight_layout()
    return figure_png(fig)


def heatmaps(rows: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]], low: float, top: float) -> bytes:
    """Each row a few (image (H, W, C) in [0, 1], map (H, W), mask (H, W)) triples: the image with its mask's outline
    in cyan, and beside it the map over the grey image (one colour scale for every map: `low` to `top`)."""
    plt = _plt()
    cols = 2 * max(len(r) for r in rows.values())
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.3 * cols, 1.45 * len(rows)), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for r, (name, examples) in enumerate(rows.items()):
        axes[r][0].set_title(name, fontsize=9, loc="left")
        for i, (image, heat, mask) in enumerate(examples):
            shown = image[..., 0] if image.shape[-1] == 1 else image
            axes[r][2 * i].imshow(shown, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if mask.any():
                axes[r][2 * i].contour(mask, levels=[0.5], colors="cyan", linewidths=1)
            axes[r][2 * i + 1].imshow(image.mean(-1), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            axes[r][2 * i + 1].imshow(heat, cmap="inferno", vmin=low, vmax=max(top, low + 1e-12), alpha=0.6,
                                      interpolation="nearest")
    fig.tight_layout(pad=0.2)
    return figure_png(fig)
