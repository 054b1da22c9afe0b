"""Files vaekit wrote and reads back are checked as flags are: every field of every such file set to nonsense (NaN,
infinities, negatives, huge numbers, long strings, paths, nulls, lists, tables, deep nesting), then read by the
command that reads it. Each case ends with exit status 0 (a value that is harmless there) or 2 and one line naming
the file, never a traceback, within bounded time and memory."""

import json
import math
from pathlib import Path

import pytest
from conftest import run_many

from vaekit import RunConfig
from vaekit.config import DataConfig, TrainConfig
from vaekit.training import train

pytestmark = pytest.mark.slow

HOSTILE = [math.nan, -1, 10**30, "../" * 100, None, [], {}]  # a long string that is also a path
DEEP = "[" * 100_000 + "]" * 100_000  # a value nested past any parser's recursion


def leaves(value, path=()):
    """Every leaf of a JSON document, as a path of keys and indices (a long list: its first two items)."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from leaves(item, (*path, key))
    elif isinstance(value, list) and value:
        for i, item in enumerate(value[:2]):
            yield from leaves(item, (*path, i))
    else:
        yield path


def replaced(document, path, value):
    """The document with the leaf at `path` set to `value`, as JSON text (NaN and Infinity as Python writes them)."""
    copy = json.loads(json.dumps(document))
    target = copy
    for key in path[:-1]:
        target = target[key]
    if path:
        target[path[-1]] = value
    else:
        copy = value
    return json.dumps(copy)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A run (its samplers fitted: `score` and `sample` read them), an `ood` folder with its thresholds, and the
    pristine copies each case starts from."""
    root = tmp_path_factory.mktemp("readback")
    settings = TrainConfig(epochs=1, samples=4, two_stage_epochs=1, gmm_components=2)
    train(RunConfig(data=DataConfig(name="digits"), train=settings), root / "pristine", quiet=True)
    result = run_many([{"argv": ["ood", "pristine", "--ood", "noise", "--out", "o-pristine", "-k", "3"],
                        "cwd": str(root), "env": {"VAEKIT_DATA": str(root / "cache")}}])[0]
    assert result["status"] == 0, result["stderr"]
    return root


def fresh(world: Path) -> list[list[str]]:
    """What a case starts from: the run and the `ood` folder as they were written."""
    return [[str(world / "pristine"), str(world / "run")], [str(world / "o-pristine"), str(world / "o")]]


def step_of(run: Path) -> str:
    return (run / "checkpoints" / "latest").read_text().strip()


# Each file vaekit reads back: where it is in a run (STEP: the checkpoint's folder), and the commands that read it.
FILES = {
    "config.json": ("run/checkpoints/STEP/config.json", [["info", "run"]]),
    "thresholds.json": ("o/thresholds.json", [["score", "run", "--threshold", "o/thresholds.json", "--out", "s.csv",
                                               "--overwrite"]]),
    "summary.json": ("run/summary.json", [["info", "run"], ["export", "run", "--format", "safetensors", "--out", "x",
                                                           "--overwrite"]]),
    "state.json": ("run/checkpoints/STEP/state.json", [["train", "--out", "run", "--resume", "--quiet"]]),
    "run.json": ("run/run.json", [["train", "--out", "run", "--resume", "--quiet"]]),
}
LIMIT_SECONDS = 60


def cases_for(world: Path, name: str) -> tuple[list[str], list[dict]]:
    where, commands = FILES[name]
    step = step_of(world / "pristine")
    original = where.replace("run/", "pristine/", 1).replace("o/", "o-pristine/", 1).replace("STEP", step)
    document = json.loads((world / original).read_text())
    paths = list(leaves(document))
    per_leaf = 2 if name in ("run.json", "state.json") else 3  # a resume trains: fewer per leaf there
    labels, cases = [], []
    for command in commands:  # every leaf, each with a few of the values in turn: each value on a share of them
        texts = [(f"{'.'.join(map(str, p))} = {str(v)[:20]}", replaced(document, p, v)) for i, p in enumerate(paths)
                 for v in (HOSTILE[(i + j) % len(HOSTILE)] for j in range(per_leaf))]
        texts.append(("nested 100,000 deep", DEEP))
        texts.append(("not JSON", "{"))
        for label, text in texts:
            labels.append(f"{' '.join(command[:1])} reading {name} with {label}")
            cases.append({"argv": command, "cwd": str(world), "env": {"VAEKIT_DATA": str(world / "cache")},
                          "reset": fresh(world), "write": {str(world / where.replace("STEP", step)): text}})
    return labels, cases


@pytest.mark.parametrize("name", list(FILES))
def test_every_field_of_a_file_read_back_is_checked(world, name):
    labels, cases = cases_for(world, name)
    results = run_many(cases)
    bad = []
    for label, result in zip(labels, results):
        lines = [line for line in result["stderr"].splitlines() if line.strip() and "warning" not in line]
        refused = result["status"] == 2 and len(lines) == 1 and lines[0].startswith("vaekit: error: ")
        if not (result["status"] == 0 or refused) or result["seconds"] > LIMIT_SECONDS:
            bad.append((label, result["status"], result["stderr"][-300:]))
    print(f"{name}: {len(cases)} cases, {sum(r['status'] == 2 for r in results)} refused, "
          f"{sum(r['status'] == 0 for r in results)} harmless, peak {max(r['peak_mb'] for r in results):.0f} MiB")
    assert not bad, f"{len(bad)} of {len(cases)}: {bad[:4]}"
    assert max(r["peak_mb"] for r in results) < 3 << 10


def test_a_file_named_as_refused_says_which_file_and_field(world):
    """The refusals name the file and the field, as a flag's name its flag."""
    step = step_of(world / "pristine")
    thresholds = json.loads((world / "o-pristine" / "thresholds.json").read_text())
    config = json.loads((world / "pristine" / "checkpoints" / step / "config.json").read_text())
    checks = {
        "o/thresholds.json: not a valid thresholds file written by `vaekit ood`: k": ("o/thresholds.json", "k", 1e9),
        "thresholds.json: not a valid thresholds file written by `vaekit ood`: fpr": ("o/thresholds.json", "fpr",
                                                                                       "0.05"),
        "thresholds.json: not a valid thresholds file written by `vaekit ood`: thresholds.recon": (
            "o/thresholds.json", "thresholds", {**thresholds["thresholds"], "recon": math.nan}),
        "thresholds.json: not a valid thresholds file written by `vaekit ood`: score": (
            "o/thresholds.json", "score", "../is_nll"),
    }
    cases, expected = [], []
    for words, (file, field, value) in checks.items():
        cases.append({"argv": ["score", "run", "--threshold", file, "--out", "s.csv", "--overwrite"],
                      "cwd": str(world), "env": {"VAEKIT_DATA": str(world / "cache")},
                      "reset": fresh(world), "write": {str(world / file): json.dumps({**thresholds, field: value})}})
        expected.append(words)
    for field, value, words in (("progress", {"epoch": -3}, "config.json: progress"),
                                ("data_split", {"fingerprint": 7}, "config.json: data_split"),
                                ("classes", list(range(20_000)), "config.json: classes")):
        cases.append({"argv": ["info", "run"], "cwd": str(world), "env": {"VAEKIT_DATA": str(world / "cache")},
                      "reset": fresh(world), "write": {str(world / "run" / "checkpoints" / step / "config.json"):
                                json.dumps({**config, field: value})}})
        expected.append(words)
    for words, result in zip(expected, run_many(cases)):
        assert result["status"] == 2 and words in result["stderr"], (words, result["stderr"])
