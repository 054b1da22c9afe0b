"""Commands for visual inspection: defects (a synthetic benchmark with masks) and inspect (anomaly maps against
masks)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from vaekit.cli.flags import add_config_flags, number, run_config_from_args
from vaekit.cli.models import checkpoint_inputs, data_inputs, dataset_for, load_model


def kinds(text: str) -> list[str]:
    from vaekit.data.defects import KINDS

    chosen = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in chosen if k not in KINDS]
    if not chosen or unknown or len(set(chosen)) < len(chosen):
        raise argparse.ArgumentTypeError(f"expected kinds from {', '.join(KINDS)}, comma-separated, each once; got "
                                         f"{text[:60]!r}")
    return chosen


def cmd_defects(args: argparse.Namespace) -> int:
    from vaekit.jobs.inspection import benchmark

    data = run_config_from_args(args).data
    out = Path(args.out)
    counts = benchmark(data, out, args.kinds, args.train_images, args.test_images, args.seed, overwrite=args.overwrite,
                       quiet=args.quiet)
    print(", ".join(f"{folder}: {n}" for folder, n in counts.items()))
    print(f"benchmark: {out} (train on it with --data mvtec:{out}, then vaekit inspect RUN)")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from vaekit.evaluation.inspection import InspectSettings
    from vaekit.evaluation.maps import MapSettings
    from vaekit.jobs.inspection import inspection
    from vaekit.report.inspect_page import render_inspection

    model, _ = load_model(args.checkpoint, args.device)
    data = dataset_for(model, args, labelled=False)[0]  # the labels are defect types
    name = Path(args.checkpoint).resolve().name
    out = Path(args.out) if args.out else Path("runs") / f"inspect-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    s = InspectSettings(MapSettings(args.smooth, args.top), args.by, args.fpr, args.fdr, args.batch_size, args.seed)
    result = inspection(model, data, args.checkpoint, out, s, render_inspection, overwrite=args.overwrite,
                        quiet=args.quiet, inputs=[*checkpoint_inputs(args.checkpoint), *data_inputs(model, args)])
    m = result.report
    print(f"{len(result.labels)} test images of {m.data}: pixel AUROC  AUPRO  F1-max  image AUROC (top)")
    for map_name, v in m.overall.items():
        print(f"  {map_name:<9} {v.pixel_auroc:.3f}  {v.aupro:.3f}  {v.f1_max:.3f}  {v.image_auroc['top']:.3f}")
    d = m.decisions
    print(f"{d.score}: threshold {d.threshold:.4g} flags {100 * d.test_fpr:.1f}% of normal and {100 * d.test_tpr:.1f}% "
          f"of defective test images; Benjamini-Hochberg at FDR {d.fdr:g} flags {d.flagged} ({d.false_discoveries} "
          f"normal), mean FDR over {d.batches} batches {d.mean_fdr:.3f}")
    print(f"run folder: {out}  (open {out / 'report.html'} in a browser)")
    return 0


def score_name(text: str) -> str:
    from vaekit.jobs.inspection import score_names

    if text not in score_names():
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(score_names())}; got {text[:60]!r}")
    return text


def add_inspection_commands(command: Callable[..., argparse.ArgumentParser], common: argparse.ArgumentParser,
                            reading: argparse.ArgumentParser) -> None:
    from vaekit.data.defects import KINDS

    p = command("defects", cmd_defects, "write a benchmark of synthetic defects with exact masks (MVTec layout)",
                "Draw synthetic defects into real images and write them in the MVTec AD layout: train/good/ (normal "
                "training images), test/good/, test/<kind>/ and each defect's exact mask in "
                "ground_truth/<kind>/<name>_mask.png (the pixels the defect changed). Kinds: patch (a rectangle cut "
                "from another image), scratch (a thin line), blob (an ellipse of the complementary colour), missing "
                "(a rectangle of background) and noise. The same seed writes the same files. Train on the result "
                "with --data mvtec:OUT, then measure with `vaekit inspect`.")
    p.add_argument("--out", required=True, help="folder to write (new, or a vaekit folder with --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace a folder vaekit wrote")
    p.add_argument("--kinds", type=kinds, default=list(KINDS), metavar="KIND,KIND",
                   help=f"defect kinds (default: all of {','.join(KINDS)})")
    p.add_argument("--train-images", type=number(int, 2, 10**6), default=2000, metavar="N",
                   help="normal training images at most (from the data's training split)")
    p.add_argument("--test-images", type=number(int, 1, 10**5), default=100, metavar="N",
                   help="test images per folder: N normal ones, and N with each kind of defect")
    p.add_argument("--seed", type=number(int, 0, 2**32 - 1), default=0, help="seed of the defects")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(config=None)
    add_config_flags(p, sections=("data",))

    p = command("inspect", cmd_inspect, "anomaly maps against defect masks: pixel AUROC, AUPRO, heatmaps",
                "Compute every anomaly map of the model (error: squared reconstruction error; nll: -log p(x|z) per "
                "pixel under its likelihood; gradient: |d(-ELBO)/dx|, for models with a density) on the test images "
                "of inspection data (mvtec:ROOT, the model's own by default), and measure them against the masks: "
                "pixel AUROC, AUPRO (to a false-positive rate of 0.3) and F1-max, overall and per defect type, and the "
                "image AUROC of each image score from a map. Decisions come from the normal validation images: a "
                "threshold for --fpr, and conformal p-values with Benjamini-Hochberg at --fdr, saved to "
                "calibration.json. Writes metrics.json, images.csv (every image's scores, p-value and flag) and "
                "report.html with heatmaps.", [common, reading])
    p.add_argument("--data", help="inspection data (default: the model's own), e.g. mvtec:ROOT")
    p.add_argument("--out", help="output folder (default: runs/inspect-NAME-TIMESTAMP)")
    p.add_argument("--smooth", type=number(float, 0.0, 64.0), default=0.0, metavar="SIGMA",
                   help="blur every map by a Gaussian of SIGMA pixels (0: none)")
    p.add_argument("--top", type=number(float, 0.0, 1.0, open_lo=True), default=0.01, metavar="SHARE",
                   help="the `top` image score is the mean of this share of a map's pixels")
    p.add_argument("--by", type=score_name, default="nll_top", metavar="MAP_SCORE",
                   help="the image score the decisions use (MAP_SCORE: error, nll or gradient; max, top or mean)")
    p.add_argument("--fpr", type=number(float, 0.0, 1.0, open_lo=True), default=0.05,
                   help="false-positive rate of the threshold, chosen on the normal validation images")
    p.add_argument("--fdr", type=number(float, 0.0, 1.0, open_lo=True), default=0.1,
                   help="false-discovery rate of the Benjamini-Hochberg flags")
    p.add_argument("--batch-size", type=number(int, 1, 2**16), default=100, help="images mapped at a time")
    p.add_argument("--seed", type=number(int, 0, 2**32 - 1), default=0, help="seed of the gradient map's draws")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
