"""Inspection jobs: a benchmark of synthetic defects written in the MVTec AD layout (`vaekit defects`), and one
model's anomaly maps measured against the masks of its data (`vaekit inspect`), with the page drawn by the renderer
the caller hands in (report/inspect_page.py)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from vaekit.config import DataConfig, short
from vaekit.data import Dataset, load_dataset
from vaekit.data.defects import write_benchmark
from vaekit.data.sources import data_paths
from vaekit.errors import VaekitError
from vaekit.evaluation.inspection import Inspection, InspectSettings, check_inspectable, inspect
from vaekit.evaluation.maps import MAPS, MapSettings, Scoring
from vaekit.evaluation.scores import fingerprint
from vaekit.files import csv_writer, read_record, write_json, write_text
from vaekit.layout import CALIBRATION_FILE, IMAGES_FILE, METRICS_FILE, REPORT_FILE, SCORING_FILE
from vaekit.models import Autoencoder
from vaekit.models.export import OPSET, TOLERANCE, quiet_logger, weights_apart
from vaekit.models.saving import resolve_checkpoint
from vaekit.outputs import new_run_folder

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
    defective = result.labels != 0
    with csv_writer(path, ["index", "type", "file", "defective", *names, "p_value", "flagged"]) as write:
        write([[i, data.classes[int(result.labels[i])], "" if files is None else files[i], int(defective[i]),
                *(f"{result.scores[n][i]:.8g}" for n in names), f"{result.p_values[i]:.6g}", int(result.flags[i])]
               for i in range(len(result.labels))])


def score_names() -> list[str]:
    """Every image score a map gives, MAP_SCORE (what --by accepts)."""
    from vaekit.evaluation.maps import IMAGE_SCORES

    return [f"{m}_{k}" for m in MAPS for k in IMAGE_SCORES]



def read_calibration(path: str, model: Autoencoder) -> Calibration:
    """A calibration.json that `vaekit inspect` wrote for this very model (its weights' SHA-1), every field checked."""
    chosen = read_record(path, Calibration, "calibration file written by `vaekit inspect`")
    if chosen.model_sha1 != fingerprint(model):
        raise VaekitError(f"{path}: it was calibrated for another model ({short(chosen.checkpoint)}); run "
                          "`vaekit inspect` on this one")
    if chosen.score not in chosen.held_out or not chosen.held_out[chosen.score]:
        raise VaekitError(f"{path}: holds no held-out scores of its score {chosen.score}")
    return chosen


def scoring_graph(model: Autoencoder, chosen: Calibration) -> Scoring:
    held = torch.tensor(chosen.held_out[chosen.score])
    return Scoring(model.cpu().eval(), chosen.score, MapSettings(chosen.smooth, chosen.top), held, chosen.threshold)


def export_scoring(model: Autoencoder, chosen: Calibration, folder: Path, images: Tensor) -> tuple[Path, str]:
    """scoring.onnx in `folder`, checked against PyTorch on `images` with onnxruntime; the file and the check in
    words (refused in one line past the export's tolerance)."""
    import onnxruntime as ort

    graph, file = scoring_graph(model, chosen), folder / SCORING_FILE
    with torch.no_grad(), warnings.catch_warnings(), quiet_logger("torch.onnx"):
        warnings.simplefilter("ignore", (FutureWarning, DeprecationWarning, UserWarning))
        torch.onnx.export(graph, (images[:2].float(),), str(file), input_names=["image"],
                          output_names=["map", "score", "p_value", "flag"], opset_version=OPSET, dynamo=True,
                          external_data=weights_apart(graph),
                          dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), verbose=False)
        expected = graph(images.float())
    session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": images.float().numpy()})
    diffs = [float(np.abs(g - e.numpy()).max()) for g, e in zip(got[:3], expected[:3])]
    score = expected[1].numpy()
    near = np.abs(score - chosen.threshold) <= TOLERANCE * max(1.0, abs(chosen.threshold))
    flips = int(((got[3] != expected[3].numpy()) & ~near).sum())
    words = (f"the largest absolute difference from PyTorch on {len(images)} images is {diffs[0]:.2e} for the map, "
             f"{diffs[1]:.2e} for the score and {diffs[2]:.2e} for the p-value; {flips} flags differ")
    if not all(np.isfinite(diffs)) or max(diffs[:2]) > TOLERANCE * max(1.0, float(np.abs(score).max())) or flips:
        raise VaekitError(f"the scoring graph disagrees with PyTorch ({words}): nothing exported")
    return file, words


def scoring_usage(model: Autoencoder, chosen: Calibration) -> str:
    """A card section: what scoring.onnx computes, and how to run it."""
    c, h, w = model.config.image_shape
    name, kind = chosen.score.rsplit("_", 1)
    blurred = f", blurred by a Gaussian of sigma {chosen.smooth:g} px" if chosen.smooth else ""
    return f"""## Scoring graph

`scoring.onnx`: `image` (N, {c}, {h}, {w}) floats in [0, 1] -> `map` (N, {h}, {w}), `score` (N,), `p_value` (N,),
`flag` (N,) bool. The map is `{name}`{blurred}; the score its `{kind}` (top share {chosen.top:g}); the p-value is
split-conformal against {len(chosen.held_out[chosen.score])} held-out normal images; `flag` is the score above
{chosen.threshold:.6g}, the threshold for {100 * chosen.fpr:g}% false positives on them. For a batch,
Benjamini-Hochberg on the p-values bounds the false-discovery rate instead (target {chosen.fdr:g} when calibrated).

```python
import numpy as np
import onnxruntime as ort

scoring = ort.InferenceSession("scoring.onnx", providers=["CPUExecutionProvider"])
x = np.random.default_rng(0).random((4, {c}, {h}, {w}), dtype=np.float32)  # your images, in [0, 1]
heat, score, p_value, flag = scoring.run(None, {{"image": x}})
```
"""
