"""Every size-like knob at its maximum: the work is bounded in memory (refused up front in one line, or done in
chunks), under an address-space limit, for every command that takes it. The ranges come from the parser itself,
so a knob added later is tried too."""

import argparse
import json

import numpy as np
import pytest
from conftest import run_many

from vaekit.cli import build_parser

pytestmark = pytest.mark.slow

LIMIT = 3 << 30  # address space of the process running every case (torch alone maps about 1 GiB)
SECONDS = 120

# Knobs that size memory (counts of images, draws, components, units); time knobs (epochs, warm-up, patience, ...)
# are not here: their maximum is a long run, not a large allocation.
SIZE_KNOBS = {"--batch-size", "--eval-batch-size", "-k", "--samples", "--max-images", "--iwae-k", "--pseudo-inputs",
              "--latent-dim", "--hidden", "--conv-channels", "--gmm-components", "--workers", "--max-in-memory-gb",
              "-n", "--codebook-size", "--latent-channels"}
TRAIN = ["--data", "npz:t.npz", "--epochs", "1", "--two-stage-epochs", "0", "--overwrite", "--quiet", "--out", "o"]
BASES = {  # each command on a tiny set, and what a knob of a preset needs beside it
    "train": ["train", *TRAIN],
    "sample": ["sample", "run", "--out", "s.png", "--overwrite", "-n", "4"],
    "decode": ["decode", "run", "z.npy", "--out", "d.png", "--overwrite"],
    "encode": ["encode", "run", "--out", "c.npy", "--overwrite"],
    "reconstruct": ["reconstruct", "run", "--out", "r.png", "--overwrite"],
    "evaluate": ["evaluate", "run", "--quick"],
    "score": ["score", "run", "--out", "s.csv", "--overwrite"],
    "ood": ["ood", "run", "--ood", "noise", "--out", "oo", "--overwrite"],
}
NEEDS = {"--iwae-k": ["--model", "iwae"], "--pseudo-inputs": ["--model", "vamp"], "--conv-channels": ["--arch", "conv"],
         "--codebook-size": ["--model", "vqvae"], "--latent-channels": ["--model", "vqvae"]}
SKIP = {("sample", "-n")}  # -n past a grid is refused; streamed to files it is a long run in bounded memory (faults)


def size_knobs() -> dict[str, dict[str, float]]:
    """Each command's size-like knobs and their maxima, read from the parser's declared ranges."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    knobs = {}
    for name, parser in sub.choices.items():
        for action in parser._actions:
            flag = action.option_strings[-1] if action.option_strings else None
            bounds = getattr(action.type, "bounds", None)
            if flag in SIZE_KNOBS and bounds and bounds[1] is not None and (name, flag) not in SKIP:
                knobs.setdefault(name, {})[flag] = bounds[1]
    return knobs


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("knobs")
    rng = np.random.default_rng(0)
    np.savez(root / "t.npz", x=rng.integers(0, 256, (40, 8, 8), dtype=np.uint8), y=np.arange(40) % 4)
    np.save(root / "z.npy", rng.normal(size=(5, 8)).astype(np.float32))
    result = run_many([{"argv": ["train", *TRAIN[:-1], "run", "--gmm-components", "2"], "cwd": str(root),
                        "env": {"VAEKIT_DATA": str(root / "cache")}}])[0]
    assert result["status"] == 0, result["stderr"]
    return root


def test_every_size_knob_at_its_maximum_is_bounded(world):
    knobs = size_knobs()
    assert {"--batch-size", "--eval-batch-size", "--iwae-k", "--pseudo-inputs"} <= set(knobs["train"])
    assert {"-k", "--samples"} <= set(knobs["evaluate"]) and {"-k", "--max-images"} <= set(knobs["ood"])
    labels, cases = [], []
    for command, base in BASES.items():
        for flag, top in knobs.get(command, {}).items():
            value = str(int(top)) if float(top).is_integer() else str(top)
            if flag in ("--hidden", "--conv-channels"):
                value = f"{value},{value}"
            labels.append(f"{command} {flag} {value}")
            argv = [*base, *NEEDS.get(flag, []), flag, value]
            cases.append({"argv": argv, "cwd": str(world), "env": {"VAEKIT_DATA": str(world / "cache")}})
    results = run_many(cases, limit=LIMIT)
    peak, bad, report = 0.0, [], {}
    for label, result in zip(labels, results):
        lines = [line for line in result["stderr"].splitlines() if line.strip() and "warning" not in line]
        refused = result["status"] == 2 and len(lines) == 1 and lines[0].startswith("vaekit: error: ")
        if not (result["status"] == 0 or refused) or result["seconds"] > SECONDS or "memory" in result["stderr"] \
                and not refused:
            bad.append((label, result["status"], result["stderr"][-300:]))
        report[label] = {"status": result["status"], "seconds": round(result["seconds"], 2),
                         "peak_mb": round(result["peak_mb"]), "said": lines[-1][:160] if lines else ""}
        peak = max(peak, result["peak_mb"])
    print(json.dumps(report, indent=1))  # with -s: the closing note's table
    assert not bad, bad
    assert peak * 2**20 < LIMIT
