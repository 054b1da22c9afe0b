"""DDP under torchrun: two CPU processes with the gloo backend, as on a multi-GPU machine."""

import json
import os
import subprocess
import sys

import torch
from conftest import SLOW

from vaekit import load


def test_two_process_gloo_ddp_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "vaekit",
           "train", "--data", "digits", "--epochs", "3", "--batch-size", "64", "--out", str(tmp_path / "ddp"),
           "--samples", "4", "--quiet"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=SLOW)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3, "rank 0 alone writes one row per epoch"
    train_images = 1437
    assert rows[0]["step"] == train_images // (64 * 2)  # each step consumes one batch per rank
    assert rows[-1]["val_images"] == 180  # validation summed over both ranks' shards, no image twice
    assert rows[-1]["val_nelbo"] < rows[0]["val_nelbo"]
    model = load(str(tmp_path / "ddp"))
    assert model.kind == "vae" and torch.isfinite(model.sample(4)).all()
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["test"]["images"] == 180
