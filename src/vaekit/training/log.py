"""What a run reports: the metrics log (JSONL, CSV, TensorBoard) and losses in words."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from vaekit.errors import warn
from vaekit.files import atomic_write, parse_json, utf8, write_text
from vaekit.layout import RunFolder


def loss_words(m: dict[str, float], has_density: bool, prefix: str = "") -> str:
    """A split's loss in words: -ELBO = recon + KL for a VAE (after the tighter bound it trains on, for IWAE); an AE
    has no ELBO, only its reconstruction."""
    get = lambda key: m.get(f"{prefix}{key}")  # noqa: E731
    recon, kl, bpd, bound = get("recon"), get("kl"), get("bpd"), get("loss")
    if recon is None:
        raise KeyError(f"{prefix}recon")
    if not has_density or kl is None:  # an earlier vaekit kept no KL of a model without a density
        return f"reconstruction {recon:.2f} nats" + (f" ({bpd:.3f} bits/dim)" if bpd is not None else "")
    nelbo = get("nelbo") if get("nelbo") is not None else recon + kl  # an earlier vaekit kept the terms only
    words = f"-ELBO {nelbo:.2f} nats (recon {recon:.2f} + KL {kl:.2f})"
    tighter = f"-bound {bound:.2f} nats, " if bound is not None and tighter_bound(bound, nelbo) else ""
    return f"{tighter}{words}" + (f", {bpd:.3f} bits/dim" if bpd is not None else "")


def tighter_bound(bound: float, nelbo: float) -> bool:
    """Whether a model's bound is tighter than its -ELBO (IWAE's), beyond the rounding of float32 sums."""
    return bound < nelbo - 1e-4 * abs(nelbo)


def read_rows(file: Path) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl this run wrote; a line that is not one (damaged, edited) is dropped, and said."""
    rows, dropped = [], []
    for number, line in enumerate(file.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        try:
            row = parse_json(line) if line.strip() else None
        except ValueError:
            row = None
        if isinstance(row, dict) and type(row.get("step")) is int and type(row.get("epoch")) is int:
            rows.append(row)
        elif line.strip():
            dropped.append(number)
    if dropped:
        warn(f"{file}: line{'s' * (len(dropped) > 1)} {', '.join(map(str, dropped[:10]))} "
             f"{'are' if len(dropped) > 1 else 'is'} not a metrics row of this run; dropped from the log")
    return rows


class MetricsLog:
    """One row per epoch, to metrics.jsonl and metrics.csv (and TensorBoard when installed)."""

    def __init__(self, out: RunFolder, keep_until_step: int):
        self.jsonl, self.csv = out.metrics_jsonl, out.metrics_csv
        self.rows: list[dict[str, Any]] = []
        if self.jsonl.is_file():  # resuming: drop rows written after the checkpoint
            self.rows = [r for r in read_rows(self.jsonl) if r["step"] <= keep_until_step]
        self._write()
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        if not utf8(out.tensorboard):
            warn(f"{out.tensorboard}: TensorBoard writes only under paths that are UTF-8 text; its events are left "
                 "out (metrics.jsonl and metrics.csv have every row)")
            return
        self.tb = SummaryWriter(str(out.tensorboard))

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self._write()
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, float):
                    self.tb.add_scalar(k, v, row["step"])
            self.tb.flush()

    def _write(self) -> None:
        write_text(self.jsonl, "".join(json.dumps(r) + "\n" for r in self.rows))
        if self.rows:
            with atomic_write(self.csv) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=list(self.rows[-1]))
                writer.writeheader()
                writer.writerows(self.rows)
