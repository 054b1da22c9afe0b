"""The synthetic-defect benchmark: vaekit's models against the plain reconstruction baseline and a model-free one.

For each data set: `vaekit defects` writes the benchmark (MVTec AD layout, exact masks); each model trains on its
normal images with the same budget (`vaekit train --data mvtec:...`, fresh processes) and is measured by `vaekit
inspect`; beside them, the model-free baseline of the mean normal training image (each pixel's squared distance
from it). Writes RESULTS-inspection.md (and .json): image AUROC, pixel AUROC and AUPRO per model and defect type,
the conformal false-discovery rate achieved, the time per image for the maps, and the ONNX scoring graph's parity.

    python bench/inspection.py --data fashion-mnist --data folder:/tmp/cifar/train --data folder:ICONS
    python bench/inspection.py --smoke      # seconds: digits, one epoch, tiny (run by the test suite)

anomalib's GANomaly, the baseline the issue names, cannot run here: anomalib 2.7 imports torchvision (its data
and pre-processing, and timm), which has no build beside the CPU torch 2.13 this machine has; the plain AE with its
reconstruction-error map is the classic reconstruction baseline it stands for.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BATCH = 128  # vaekit's default batch size


def vaekit(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "vaekit", *map(str, args)], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"vaekit {' '.join(map(str, args))} failed:\n{proc.stderr[-2000:]}")
    return proc.stdout


def mean_image_baseline(root: Path, image_size: int) -> dict:
    """The model-free map: each pixel's squared distance from the mean normal training image (summed over the
    channels), scored and measured as inspect measures a model's maps."""
    import torch

    from vaekit.config import DataConfig
    from vaekit.data import load_dataset
    from vaekit.evaluation.detection import detection
    from vaekit.evaluation.localization import localization
    from vaekit.evaluation.maps import image_scores

    data = load_dataset(DataConfig(name=f"mvtec:{root}", image_size=image_size))
    mean = data.train.images.float().mean(0) / 255
    x = data.test.images.float() / 255
    maps = (x - mean).pow(2).sum(1)
    masks, labels = data.test.masks.numpy(), data.test.labels.numpy()
    defective = masks.reshape(len(masks), -1).any(1)
    top = image_scores(maps, 0.01)["top"].numpy()

    def measured(keep: np.ndarray) -> dict:
        out = localization(maps.numpy()[keep], masks[keep])
        out["image_auroc"] = detection(top[keep & ~defective], top[keep & defective])["auroc"]
        return out

    everything = np.ones(len(labels), bool)
    return {"overall": measured(everything), "types": {t: measured((labels == 0) | (labels == i))
                                                       for i, t in enumerate(data.classes[1:], start=1)},
            "torch": torch.__version__}


def run_data(spec: str, args: argparse.Namespace, work: Path) -> dict:
    name = spec.replace("folder:", "").rstrip("/").split("/")[-1] if spec.startswith("folder:") else spec
    root = work / f"bench-{name}"
    image_size = args.image_size if spec.startswith("folder:") else 0  # the built-in sets keep their size
    size = ["--image-size", str(image_size)] if image_size else []
    started = time.perf_counter()
    vaekit("defects", "--data", spec, *size, "--out", root, "--train-images", args.train_images, "--test-images",
           args.test_images, "--overwrite", "--quiet")
    result = {"data": spec, "benchmark_seconds": time.perf_counter() - started, "models": {}}
    normal = len(list((root / "train" / "good").iterdir()))
    epochs = max(args.epochs, math.ceil(args.min_steps * BATCH / (0.9 * normal)))  # a small set: more epochs
    result["epochs"], result["train_images"] = epochs, normal
    for model in args.models:
        run, out = work / f"{name}-{model}", work / f"{name}-{model}-inspect"
        started = time.perf_counter()
        vaekit("train", "--data", f"mvtec:{root}", *size, "--model", model, "--arch", args.arch, "--epochs",
               epochs, "--out", run, "--overwrite", "--quiet")
        seconds = time.perf_counter() - started
        vaekit("inspect", run, "--out", out, "--smooth", args.smooth, "--overwrite", "--quiet")
        metrics = json.loads((out / "metrics.json").read_text())
        result["models"][model] = {"train_seconds": seconds, **metrics}
    first = args.models[-1]
    parity = vaekit("export", work / f"{name}-{first}", "--scoring", work / f"{name}-{first}-inspect" /
                    "calibration.json", "--out", work / f"{name}-{first}-export", "--overwrite")
    result["scoring_parity"] = next(line for line in parity.splitlines() if line.startswith("scoring ONNX"))
    result["mean_image"] = mean_image_baseline(root, image_size)
    return result


def best_map(m: dict) -> str:
    return max(m["overall"], key=lambda n: m["overall"][n]["aupro"])


def table(result: dict) -> list[str]:
    """One row per model (its best map by AUPRO, with the nll and error maps' AUPRO beside), then the mean image."""
    lines = ["| model | best map | image AUROC (top) | pixel AUROC | AUPRO | AUPRO error / nll | per type AUPRO "
             "| train s | ms per image |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for model, m in result["models"].items():
        b = best_map(m)
        v = m["overall"][b]
        types = ", ".join(f"{t} {by[b]['aupro']:.2f}" for t, by in m["types"].items())
        lines.append(f"| {model} | {b} | {v['image_auroc']['top']:.3f} | {v['pixel_auroc']:.3f} | {v['aupro']:.3f} "
                     f"| {m['overall']['error']['aupro']:.3f} / {m['overall']['nll']['aupro']:.3f} | {types} "
                     f"| {m['train_seconds']:.0f} | {1000 * m['seconds_per_image']:.2f} |")
    base = result["mean_image"]
    types = ", ".join(f"{t} {v['aupro']:.2f}" for t, v in base["types"].items())
    o = base["overall"]
    lines.append(f"| mean image (no model) | distance | {o['image_auroc']:.3f} | {o['pixel_auroc']:.3f} | "
                 f"{o['aupro']:.3f} | | {types} | 0 | |")
    return lines


def decisions(result: dict) -> list[str]:
    lines = []
    for model, m in result["models"].items():
        d = m["decisions"]
        lines.append(f"- {model}, {d['score']}: threshold for {100 * d['fpr']:g}% false positives on "
                     f"{d['held_out']} validation images flags {100 * d['test_fpr']:.1f}% of the normal and "
                     f"{100 * d['test_tpr']:.1f}% of the defective test images; Benjamini-Hochberg at FDR "
                     f"{d['fdr']:g}: mean false-discovery proportion {d['mean_fdr']:.3f} over {d['batches']} mixed "
                     f"batches of {d['batch_size']}, {100 * d['normal_batches_flagged']:.1f}% of all-normal batches "
                     "with any flag")
    return lines


def write(results: list[dict], args: argparse.Namespace, out: Path) -> None:
    lines = [f"# The synthetic-defect benchmark (`python bench/inspection.py {' '.join(sys.argv[1:])}`)", "",
             f"{time.strftime('%Y-%m-%d')}; {args.arch} networks, at least {args.epochs} epochs and {args.min_steps} "
             f"steps, {args.train_images} normal training images at most, {args.test_images} test images per folder "
             f"(normal and each defect kind); maps blurred by sigma {args.smooth:g} px. AUPRO: the per-region "
             "overlap to a false-positive rate of 0.3, normalised (a random map gives about 0.15). The mean image: "
             "each pixel's squared distance from the mean normal training image, no model.", ""]
    for r in results:
        lines += [f"## {r['data']}", "", f"{r['train_images']} normal images (train and validation), {r['epochs']} "
                  "epochs.", "", *table(r), "", *decisions(r), f"- {r['scoring_parity']}", ""]
    out.write_text("\n".join(lines))
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", action="append", help="a data set (repeatable; default fashion-mnist)")
    p.add_argument("--models", default="ae,vae,rae", help="presets, comma-separated (the AE is the baseline)")
    p.add_argument("--arch", default="conv")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--min-steps", type=int, default=1500, help="more epochs for a small set, up to this many steps")
    p.add_argument("--image-size", type=int, default=0, help="for folders (of mixed sizes)")
    p.add_argument("--train-images", type=int, default=10_000)
    p.add_argument("--test-images", type=int, default=100)
    p.add_argument("--smooth", type=float, default=1.0)
    p.add_argument("--work", default="/tmp/vaekit-inspection-bench")
    p.add_argument("--smoke", action="store_true", help="digits, one epoch, a tiny benchmark (seconds)")
    p.add_argument("--out", default=str(HERE / "RESULTS-inspection.md"))
    args = p.parse_args()
    args.models = args.models.split(",")
    if args.smoke:
        args.data, args.models, args.arch, args.epochs, args.min_steps = ["digits"], ["vae"], "mlp", 1, 0
        args.train_images, args.test_images, args.smooth = 300, 6, 0.5
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = [run_data(spec, args, work) for spec in args.data or ["fashion-mnist"]]
    write(results, args, Path(args.out))
    print(Path(args.out).read_text())


if __name__ == "__main__":
    main()
