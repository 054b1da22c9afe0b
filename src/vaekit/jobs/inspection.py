"""Inspection jobs: a benchmark of synthetic defects written in the MVTec AD layout (`vaekit defects`), and one
model's anomaly maps measured against the masks of its data (`vaekit inspect`), with the page drawn by the renderer
the caller hands in (report/inspect_page.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from vaekit.config import DataConfig
from vaekit.data import Dataset, load_dataset
from vaekit.data.defects import write_benchmark
from vaekit.data.sources import data_paths
from vaekit.evaluation.inspection import Inspection, InspectSettings, check_inspectable, inspect
from vaekit.evaluation.maps import MAPS
from vaekit.evaluation.scores import fingerprint
from vaekit.files import csv_writer, write_json, write_text
from vaekit.layout import METRICS_FILE, REPORT_FILE
from vaekit.models import Autoencoder
from vaekit.models.saving import resolve_checkpoint
from vaekit.outputs import new_run_folder

CALIBRATION_FILE = "calibration.json"
IMAGES_FILE = "images.csv"
InspectPage = Callable[[Inspection, str, list[str], list[str]], str]  # (result, title, meta paragraphs, types)


class Calibration(BaseModel):
    """calibration.json: what deciding on a new image needs, for this very model (its weights' SHA-1): the maps'
    settings, and each image score of the held-out normal images (the conformal p-values' reference), with the
    threshold and the rates chosen."""

    model_config = ConfigDict(strict=True, frozen=True)
    kind: Literal["vaekit-calibration"] = "vaekit-calibration"
    version: Literal[1] = 1
    checkpoint: str
    model_sha1: Annotated[str, Field(pattern=r"^[0-9a-f]{40}$")]
    smooth: float
    top: float
    score: str
    fpr: float
    threshold: float
    fdr: float
    held_out: dict[str, list[float]]


def benchmark(data: DataConfig, out: Path, kinds: list[str], train: int, test: int, seed: int, *,
              overwrite: bool = False, quiet: bool = False) -> dict[str, int]:
    """`vaekit defects`: the benchmark folder, with a README saying how it was made."""
    dataset = load_dataset(data)
    with new_run_folder(out, overwrite, data_paths(data), keep_failed=False):
        counts = write_benchmark(dataset, out, kinds, train, test, seed, quiet)
        lines = "\n".join(f"- `{folder}/`: {n} images" for folder, n in counts.items())
        write_text(out / "README.md", f"# Synthetic defects on {dataset.spec}\n\nWritten by `vaekit defects` "
                   f"(seed {seed}; kinds {', '.join(kinds)}) in the MVTec AD layout, each defect's exact mask under "
                   f"`ground_truth/`. Read it with `--data mvtec:{out}`.\n\n{lines}\n")
    return counts


def inspection(model: Autoencoder, data: Dataset, checkpoint: str, out: Path, s: InspectSettings,
               page: InspectPage, *, inputs: list[Path], overwrite: bool = False, quiet: bool = False) -> Inspection:
    """`vaekit inspect`: maps, metrics and decisions written into the folder `out` (metrics.json, calibration.json,
    images.csv, report.html); a failure leaves no half-written folder."""
    check_inspectable(model, data, s)
    with new_run_folder(out, overwrite, inputs, keep_failed=False):
        result = inspect(model, data, s, quiet)
        m = result.report
        m.checkpoint, m.data, m.notes = str(resolve_checkpoint(checkpoint)), data.spec, data.notes
        write_json(out / METRICS_FILE, m.to_json())
        calibration = Calibration(checkpoint=m.checkpoint, model_sha1=fingerprint(model), smooth=s.maps.smooth,
                                  top=s.maps.top, score=s.by, fpr=s.fpr, threshold=m.decisions.threshold, fdr=s.fdr,
                                  held_out={n: v.astype(float).tolist() for n, v in result.held_out.items()})
        write_json(out / CALIBRATION_FILE, calibration.model_dump())
        write_image_rows(out / IMAGES_FILE, result, data)
        title = f"vaekit: where {model.preset.label} sees the defects of {data.spec}"
        meta = [f"Checkpoint {m.checkpoint}: a {model.preset.label} with {model.latent_dim} latent dimensions, "
                f"{m.likelihood} likelihood. Maps {', '.join(m.maps)}"
                + (f", blurred by a Gaussian of sigma {m.smooth:g} px" if m.smooth else ", not smoothed")
                + f"; {1000 * m.seconds_per_image:.2f} ms per image for every map.", *data.notes]
        write_text(out / REPORT_FILE, page(result, title, meta, data.classes))
    return result


def write_image_rows(path: Path, result: Inspection, data: Dataset) -> None:
    """One row per test image: its type, file, whether its mask marks a defect, every image score, its p-value and
    whether Benjamini-Hochberg flags it."""
    names = list(result.scores)
    files = data.test.names
    defective = result.masks.reshape(len(result.masks), -1).any(1)
    with csv_writer(path, ["index", "type", "file", "defective", *names, "p_value", "flagged"]) as write:
        write([[i, data.classes[int(result.labels[i])], "" if files is None else files[i], int(defective[i]),
                *(f"{result.scores[n][i]:.8g}" for n in names), f"{result.p_values[i]:.6g}", int(result.flags[i])]
               for i in range(len(result.labels))])


def score_names() -> list[str]:
    """Every image score a map gives, MAP_SCORE (what --by accepts)."""
    from vaekit.evaluation.maps import IMAGE_SCORES

    return [f"{m}_{k}" for m in MAPS for k in IMAGE_SCORES]

