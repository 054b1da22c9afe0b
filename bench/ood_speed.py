"""How fast `vaekit score` / `vaekit ood` score images: images per second of every score (the IS-NLL with K draws
dominates), for the default VAE (MLP 784-400-20) on 28x28 images, on each device asked for. Median of repeats,
in one process (ratios within one run).

    python bench/ood_speed.py --devices cpu cuda --ks 0 100 1000 --images 2000 --out bench/RESULTS-ood.md
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vaekit.config import ModelConfig
from vaekit.data import TensorImages
from vaekit.evaluation.scores import ScoreSettings, score_all
from vaekit.models import GaussianMixture, build_model


def images_per_second(model, images: TensorImages, k: int, mixture, rounds: int, batch: int) -> float:
    times = []
    for _ in range(rounds):
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        score_all(model, images, ScoreSettings(k=k, batch_size=batch), mixture, quiet=True)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return len(images) / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", nargs="+", default=["cpu"])
    parser.add_argument("--ks", nargs="+", type=int, default=[0, 100, 1000])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.manual_seed(0)
    images = TensorImages(torch.randint(0, 256, (args.images, 1, 28, 28), dtype=torch.uint8))
    lines = [f"# Scoring speed (`vaekit score`), {args.images} images of 28x28, VAE MLP 784-400-20, batch "
             f"{args.batch_size}, median of {args.rounds}", "", "| device | K | images/s |", "|---|---|---|"]
    for device in args.devices:
        model = build_model(ModelConfig(kind="vae", image_shape=(1, 28, 28))).to(device).eval()
        mixture = GaussianMixture.fit(torch.randn(2000, model.latent_dim), 10).to(device)
        name = torch.cuda.get_device_name() if device.startswith("cuda") else "CPU"
        images_per_second(model, images, 1, mixture, 1, args.batch_size)  # warm-up
        for k in args.ks:
            rate = images_per_second(model, images, k, mixture, args.rounds, args.batch_size)
            lines.append(f"| {device} ({name}) | {k} | {rate:,.0f} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
