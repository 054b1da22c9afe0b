"""Commands that score images for anomalies: score, ood, oneclass."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from vaekit.cli.flags import number, run_config_from_args
from vaekit.cli.models import checkpoint_inputs, data_inputs, dataset_for, load_model
from vaekit.config import MAX_K
from vaekit.errors import VaekitError, printable
from vaekit.outputs import claim


def cmd_score(args: argparse.Namespace) -> int:
    from vaekit.evaluation.scores import check_scorable
    from vaekit.jobs.anomaly import read_thresholds

    model, _ = load_model(args.checkpoint, args.device)
    check_scorable(model.classes)
    chosen = read_thresholds(args.threshold, model) if args.threshold else None
    inputs = [*checkpoint_inputs(args.checkpoint), *data_inputs(model, args)]
    with claim([args.out], [*inputs, *([Path(args.threshold)] if chosen else [])], args.overwrite):
        return score(model, args, chosen)


def score(model, args: argparse.Namespace, chosen) -> int:
    """`vaekit score`, its outputs claimed: every image's scores into the CSV file, flagged by the thresholds file."""
    from vaekit.evaluation.ood import OodSettings, code_mixture
    from vaekit.evaluation.scores import ScoreSettings
    from vaekit.jobs.anomaly import own_data, score_file
    from vaekit.models.samplers import DENSITY

    k = args.k if args.k is not None else chosen.k if chosen and chosen.k is not None else 100
    if chosen and model.has_density and chosen.k not in (None, k):
        raise VaekitError(f"-k {k}: the thresholds in {args.threshold} were chosen with K = {chosen.k} (the IS-NLL "
                          "depends on K); leave -k out")
    split = args.split or ("all" if args.data else "test")
    data = dataset_for(model, args, whole=split == "all", labelled=False)[0]  # scores sum the label out
    unsplit = args.data and len(data.train) + len(data.val) == 0  # a folder or array file read whole
    names = [split] if split != "all" else ["all"] if unsplit else ["train", "val", "test"]
    parts = [(name, data.test if name == "all" else data.split(name)) for name in names]  # `all` of --data: unsplit
    if sum(len(images) for _, images in parts) == 0:  # before the output is touched
        raise VaekitError(f"{data.spec}: no {split} images to score")
    own = data if not args.data or DENSITY in model.priors else own_data(model)  # the codes' mixture: its own data
    mixture = code_mixture(model, own, OodSettings(seed=args.score_seed))
    flag = threshold_flag(model, args, chosen, k, mixture is not None)
    result = score_file(model, parts, data.classes, Path(args.out), ScoreSettings(k, args.score_batch,
                                                                                   args.score_seed), mixture, flag)
    means = ", ".join(f"{n} {v:.2f}" for n, v in result["means"].items())
    print(f"{result['images']} images of {data.spec} ({', '.join(names)}) scored -> {args.out}; means: {means}")
    if flag:
        print(f"flagged {result['flagged']} ({100 * result['flagged'] / result['images']:.1f}%): {flag[0]} > "
              f"{flag[1]:.6g} (chosen for a {100 * chosen.fpr:g}% false-positive rate on {chosen.chosen_on})")
    return 0


def threshold_flag(model, args: argparse.Namespace, chosen, k: int, mixture: bool) -> tuple[str, float] | None:
    """(score, threshold) that flags an image: --by, else the score the thresholds file recommends; None without a
    thresholds file."""
    from vaekit.evaluation.scores import scores_available

    if chosen is None:
        return None
    by = args.by or chosen.score
    where = f"--by {printable(by, 60)}" if args.by else f"{args.threshold}: its score {by}"
    if by is None:
        raise VaekitError(f"{args.threshold}: names no score to apply; choose one with --by")
    available = scores_available(model, k, mixture)
    if by not in chosen.thresholds or by not in available:
        usable = ", ".join(n for n in chosen.thresholds if n in available) or "none"
        raise VaekitError(f"{where}: no threshold for it that this model and -k can apply (usable: {usable})")
    return by, chosen.thresholds[by]


def ood_settings(args: argparse.Namespace):
    from vaekit.evaluation.ood import OodSettings

    return OodSettings(k=args.k, fpr=args.fpr, max_images=args.max_images, batch_size=getattr(args, "score_batch", 500),
                       seed=getattr(args, "score_seed", 0))


def cmd_ood(args: argparse.Namespace) -> int:
    from vaekit.devices import pick_device
    from vaekit.jobs.anomaly import ood
    from vaekit.report.ood_page import render_ood

    if len(set(args.ood)) < len(args.ood):
        raise VaekitError("--ood names a set twice")
    name = Path(args.checkpoint).resolve().name
    out = Path(args.out) if args.out else Path("runs") / f"ood-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    m = ood(args.checkpoint, args.ood, out, ood_settings(args), pick_device(args.device), render_ood,
            overwrite=args.overwrite, quiet=args.quiet,
            reading={"skip_bad_images": args.skip_bad_images, "hidden_files": args.hidden_files})
    if args.quiet:
        print(json.dumps({"run": str(out), "best": m.best, "sets": m.to_json()["sets"]}))
        return 0
    width = max(len(s) for s in m.scores)
    for spec, by_score in m.sets.items():
        print(f"test vs {spec} ({m.sizes['test']} / {m.sizes[spec]} images):  AUROC  AUPRC  FPR@95TPR")
        for score, d in by_score.items():
            print(f"  {score:<{width}}  {d.auroc:.3f}  {d.auprc:.3f}  {d.fpr_at_95_tpr:.3f}")
    print(f"best on average: {m.best}; thresholds at {100 * args.fpr:g}% false positives -> "
          f"{out / 'thresholds.json'}")
    print(f"run folder: {out}  (open {out / 'report.html'} in a browser)")
    return 0


def cmd_oneclass(args: argparse.Namespace) -> int:
    from vaekit.jobs.anomaly import one_class
    from vaekit.report.ood_page import render_one_class

    run = run_config_from_args(args)
    out = Path(args.out) if args.out else Path("runs") / f"oneclass-{run.data.name.split(':')[0]}-" \
        f"{time.strftime('%Y%m%d-%H%M%S')}"
    m = one_class(run, out, ood_settings(args), render_one_class, protocol=args.protocol, overwrite=args.overwrite,
                  quiet=args.quiet, inputs=[Path(args.config)] if args.config else [])
    names = [n for n in m.scores if n != "bpd"]
    print("AUROC per class: " + "  ".join(names))
    for row in m.classes:
        print(f"  {row.name:<20} " + "  ".join(f"{row.auroc[n]:.3f}" for n in names))
    print(f"  {'mean':<20} " + "  ".join(f"{m.mean_auroc[n]:.3f}" for n in names))
    print(f"run folder: {out}  (open {out / 'report.html'} in a browser)")
    return 0


def add_ood_flags(p: argparse.ArgumentParser, k_default: int | None = 100, batches: bool = True) -> None:
    """-k, and (where training flags do not already take them) --batch-size and --seed of the scoring."""
    p.add_argument("-k", type=number(int, 0, MAX_K), default=k_default,
                   help="importance samples per image for the IS-NLL score (0: none; default 100, or the thresholds "
                   "file's)" if k_default is None else "importance samples per image for the IS-NLL score (0: none)")
    if batches:
        p.add_argument("--batch-size", dest="score_batch", metavar="N", type=number(int, 1, 2**20), default=500,
                       help="images scored at a time")
        p.add_argument("--seed", dest="score_seed", metavar="N", type=number(int, 0, 2**32 - 1), default=0,
                       help="seed of the draws of q(z|x)")
