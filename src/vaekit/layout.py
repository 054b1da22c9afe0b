"""The one place that knows what a run folder and a checkpoint folder hold.

    RUN/
      .vaekit-run                  marker: a folder vaekit made (what --overwrite may replace)
      run.json                     the RunConfig the run was started with
      metrics.jsonl, metrics.csv   one row per epoch; tensorboard/ when installed
      summary.json, samples.png    test metrics of the best checkpoint; decoded draws from the prior
      README.md                    the model card (card.py), also in the best checkpoint's folder
      checkpoints/
        latest, best               pointer files: the name of a step folder
        step-NNNNNNNN/             a checkpoint folder:
          config.json                format, version, ModelConfig and run metadata
          model.safetensors          the weights
          priors.safetensors         fitted priors (the ex-post Gaussian mixture), when there are any
          README.md                  the model card, in the best one (with the two files above: a Hugging Face
                                     model repository's layout, ready to push)
          state.safetensors, state.json   optimizer and RNG state, to resume exactly
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MARKER = ".vaekit-run"
RUN_FILE = "run.json"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PRIORS_FILE = "priors.safetensors"
CARD_FILE = "README.md"
STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"
METRICS_FILE, REPORT_FILE, THRESHOLDS_FILE = "metrics.json", "report.html", "thresholds.json"  # compare, ood, oneclass
CALIBRATION_FILE, IMAGES_FILE = "calibration.json", "images.csv"  # inspect
SCORING_FILE = "scoring.onnx"  # export --scoring
GRAPHS = ("encoder.onnx", "decoder.onnx", SCORING_FILE)  # an export's (a large one's weights beside them: .onnx.data)
BENCHMARK = ("train", "test", "ground_truth")  # what `vaekit defects` writes: the MVTec AD layout

# Every name vaekit writes at the top of one of its output folders (a run, a comparison, an ood or one-class folder,
# an export); folders of runs inside them (compare's ae/, vae/, oneclass's class-N/) carry their own marker.
WRITTEN = {MARKER, RUN_FILE, "metrics.jsonl", "metrics.csv", "summary.json", "samples.png", CARD_FILE, "checkpoints",
           "tensorboard", METRICS_FILE, REPORT_FILE, THRESHOLDS_FILE, "scores", CONFIG_FILE, WEIGHTS_FILE, PRIORS_FILE,
           CALIBRATION_FILE, IMAGES_FILE, *BENCHMARK}


def foreign(folder: Path) -> list[Path]:
    """What in a folder vaekit wrote vaekit did not: any name it never writes there (its hidden temporary and lock
    files aside), looked for inside the runs it holds too. What `--overwrite` would delete with it."""
    found = []
    for p in sorted(folder.iterdir()):
        ours = p.name in WRITTEN or p.name.startswith(GRAPHS) or p.name.startswith(".") and (
            ".tmp" in p.name or p.name.endswith(".lock"))
        if p.is_dir() and not p.is_symlink() and (p / MARKER).is_file():
            found += foreign(p)
        elif not ours:
            found.append(p)
    return found


@dataclass(frozen=True)
class RunFolder:
    """Paths inside one run folder."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    run_json = property(lambda self: self.root / RUN_FILE)
    marker = property(lambda self: self.root / MARKER)
    metrics_jsonl = property(lambda self: self.root / "metrics.jsonl")
    metrics_csv = property(lambda self: self.root / "metrics.csv")
    tensorboard = property(lambda self: self.root / "tensorboard")
    summary = property(lambda self: self.root / "summary.json")
    card = property(lambda self: self.root / CARD_FILE)
    samples = property(lambda self: self.root / "samples.png")
    checkpoints = property(lambda self: self.root / "checkpoints")

    def step_folder(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:08d}"

    def steps(self) -> list[Path]:
        """Complete checkpoint folders, oldest first."""
        return sorted(p for p in self.checkpoints.glob("step-*") if p.is_dir()) if self.checkpoints.is_dir() else []

    def pointer(self, which: str) -> Path:
        """The pointer file `latest` or `best`."""
        return self.checkpoints / which

    def pointed(self, which: str) -> Path | None:
        """The checkpoint folder `latest` or `best` names, if the pointer exists and names a folder here."""
        file = self.pointer(which)
        if file.is_symlink() or not file.is_file():  # vaekit writes a plain file: a link is not its pointer
            return None
        name = file.read_text(encoding="utf-8", errors="replace").strip()
        target = self.checkpoints / name
        return target if name.startswith("step-") and "/" not in name and target.is_dir() else None

    def looks_like_run(self) -> bool:
        """Made by vaekit: the marker, or (written by an older vaekit) run.json beside checkpoints/."""
        return self.marker.is_file() or (self.run_json.is_file() and self.checkpoints.is_dir())


def step_of(folder: Path) -> int:
    """The step number of a `step-NNNNNNNN` folder."""
    return int(folder.name.split("-")[1])
