"""Nothing lost, nothing silently wrong: what --overwrite may replace, inputs that are never touched, outputs that
are never special files, checkpoints evaluated on their own data, resumes that refuse only real changes."""

import json
import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from vaekit import RunConfig, load
from vaekit.config import DataConfig, ModelConfig, TrainConfig
from vaekit.errors import VaekitError
from vaekit.layout import MARKER as RUN_MARKER
from vaekit.outputs import new_run_folder
from vaekit.training import train

DIGITS_1 = ["--data", "digits", "--epochs", "1", "--samples", "4", "--quiet"]


def one_error(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("vaekit: error: "), proc.stderr[-2000:]
    return lines[0]


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny AE and VAE runs on digits, and a VAE on an .npz of other images (another data set)."""
    root = tmp_path_factory.mktemp("runs")
    for kind in ("ae", "vae"):
        train(RunConfig(model=ModelConfig(kind=kind), data=DataConfig(name="digits"),
                        train=TrainConfig(epochs=1, samples=4)), root / kind, quiet=True)
    rng = np.random.default_rng(0)
    np.savez(root / "other.npz", x=rng.integers(0, 256, (120, 8, 8), dtype=np.uint8))
    train(RunConfig(data=DataConfig(name=f"npz:{root / 'other.npz'}"), train=TrainConfig(epochs=1, samples=4)),
          root / "other", quiet=True)
    return root


def test_overwrite_refuses_a_folder_vaekit_did_not_write(cli, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "thesis.tex").write_text("years of work")
    line = one_error(cli("train", *DIGITS_1, "--out", "docs", "--overwrite", check=False))
    assert "not a vaekit run folder" in line and (docs / "thesis.tex").read_text() == "years of work"
    line = one_error(cli("compare", "--data", "digits", "--quick", "--out", "docs", "--overwrite", check=False))
    assert "not a vaekit run folder" in line and snapshot(docs) == {docs.relative_to(docs) / "thesis.tex":
                                                                    b"years of work"}


def test_an_input_folder_is_never_an_output(cli, tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(20):
        Image.fromarray(np.full((8, 8), i * 10, np.uint8)).save(images / f"{i}.png")
    (images / RUN_MARKER).write_text("even a folder that looks like a run")
    before = snapshot(images)
    for out in ("imgs", "imgs/run", "."):
        line = one_error(cli("train", *DIGITS_1[2:], "--data", "folder:imgs", "--out", out, "--overwrite",
                                 check=False))
        assert "overlaps the input" in line, line
    assert snapshot(images) == before


def test_every_input_is_checked_before_an_old_run_is_touched(cli, tmp_path):
    cli("train", *DIGITS_1, "--out", "run")
    before = snapshot(tmp_path / "run")
    one_error(cli("compare", "--out", "run", "--overwrite", "--data", "npz:/nonexistent.npz", check=False))
    one_error(cli("train", "--out", "run", "--overwrite", "--data", "digits", "--arch", "conv", "--conv-channels",
                      "8,8,8,8", check=False))
    assert snapshot(tmp_path / "run") == before


def test_overwrite_replaces_a_run_only_once_the_new_one_is_complete(cli, tmp_path):
    cli("train", *DIGITS_1, "--out", "run")
    before = snapshot(tmp_path / "run")
    line = one_error(cli("train", *DIGITS_1, "--out", "run", "--overwrite", "--lr", "1e30", "--max-bad-steps",
                             "2", check=False))
    assert "training diverged" in line
    assert snapshot(tmp_path / "run") == before  # the failed replacement put the old run back
    assert not [p for p in tmp_path.iterdir() if "replaced" in p.name]
    cli("train", *DIGITS_1, "--out", "run", "--overwrite", "--seed", "1")
    assert json.loads((tmp_path / "run" / "run.json").read_text())["train"]["seed"] == 1
    assert not [p for p in tmp_path.iterdir() if "replaced" in p.name]


def test_overwrite_through_a_symlinked_run_folder(cli, tmp_path):
    cli("train", *DIGITS_1, "--out", "run")
    (tmp_path / "link").symlink_to(tmp_path / "run")
    cli("train", *DIGITS_1, "--out", "link", "--overwrite", "--seed", "2")
    assert json.loads((tmp_path / "link" / "run.json").read_text())["train"]["seed"] == 2
    assert not [p for p in tmp_path.iterdir() if "replaced" in p.name]


def test_an_interrupted_replacement_restores_the_old_run(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / RUN_MARKER).write_text("")
    (tmp_path / "run" / "summary.json").write_text("old")
    with pytest.raises(KeyboardInterrupt), new_run_folder(tmp_path / "run", overwrite=True):
        (tmp_path / "run" / "summary.json").write_text("half of the new run")
        raise KeyboardInterrupt
    assert (tmp_path / "run" / "summary.json").read_text() == "old" and len(list(tmp_path.iterdir())) == 1


def test_a_run_killed_before_writing_anything_starts_again_without_overwrite(tmp_path):
    """Killed between making its folder and writing run.json, a run left only its marker (and perhaps run.json's
    temporary file): the same command starts it afresh. Anything more, a user's file included, is refused."""
    run = tmp_path / "run"
    run.mkdir()
    (run / RUN_MARKER).write_text("")
    (run / ".run.tmp.json").write_text("{")
    with new_run_folder(run, overwrite=False):
        (run / "run.json").write_text("{}")
    (run / "run.json").unlink()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(VaekitError, match="run folder exists and is not empty"), new_run_folder(run, overwrite=False):
        pass
    (run / RUN_MARKER).unlink()
    (run / "notes.txt").rename(run / ".run.tmp.json")  # without the marker, not vaekit's leftover
    with pytest.raises(VaekitError, match="not empty"), new_run_folder(run, overwrite=False):
        pass
    assert (run / ".run.tmp.json").read_text() == "mine"


@pytest.mark.parametrize("out", ["/dev/null", "file.txt"])
def test_outputs_are_never_special_files_or_files_posing_as_folders(cli, tmp_path, runs, out):
    (tmp_path / "file.txt").write_text("mine")
    assert "is not a folder" in one_error(cli("train", *DIGITS_1, "--out", out, "--overwrite", check=False))
    line = one_error(cli("sample", runs / "vae", "--out", "/dev/null", "--overwrite", check=False))
    assert "not a regular file" in line
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode) and (tmp_path / "file.txt").read_text() == "mine"


def test_compare_takes_the_data_from_the_checkpoints(cli, runs, tmp_path):
    cli("compare", "--ae", runs / "ae", "--vae", runs / "vae", "--quick", "--quiet", "--out", "cmp")
    metrics = json.loads((tmp_path / "cmp" / "metrics.json").read_text())
    assert metrics["data"] == "digits"  # not the default Fashion-MNIST
    line = one_error(cli("compare", "--ae", runs / "ae", "--vae", runs / "other", "--quick", "--out", "x",
                             check=False))
    assert "trained on different data" in line and str(runs / "ae") in line and str(runs / "other") in line
    assert not (tmp_path / "x").exists()
    cli("compare", "--ae", runs / "ae", "--vae", runs / "other", "--data", "digits", "--quick", "--out", "y")
    assert json.loads((tmp_path / "y" / "metrics.json").read_text())["data"] == "digits"  # as the message says


def test_a_checkpoint_with_nan_weights_is_refused(runs, tmp_path):
    shutil.copytree(runs / "vae", tmp_path / "run")
    ckpt = next((tmp_path / "run" / "checkpoints").glob("step-*"))
    weights = load_file(str(ckpt / "model.safetensors"))
    first = next(iter(weights))
    weights[first] = torch.full_like(weights[first], float("nan"))
    save_file(weights, str(ckpt / "model.safetensors"))
    config = json.loads((ckpt / "config.json").read_text())
    with pytest.raises(VaekitError, match="NaN or infinite"):
        load(ckpt)
    config["model"]["beta"] = float("nan")
    (ckpt / "config.json").write_text(json.dumps(config))  # json writes NaN, and reads it back
    with pytest.raises(VaekitError, match="model.beta: must be a finite number"):
        load(ckpt)


def test_an_ae_reports_reconstruction_not_an_elbo(cli, runs):
    proc = cli("info", runs / "ae")
    assert "reconstruction" in proc.stdout and "ELBO" not in proc.stdout and "KL" not in proc.stdout
    assert "-ELBO" in cli("info", runs / "vae").stdout


def test_resume_refuses_only_settings_that_differ(cli, tmp_path):
    (tmp_path / "c.toml").write_text("[train]\nlr = 0.002\n")
    args = [*DIGITS_1, "--out", "run", "--config", "c.toml", "--batch-size", "64"]
    cli("train", *args)
    cli("train", *args, "--resume", "--epochs", "2")  # the same command again, with --resume: fine
    line = one_error(cli("train", *args, "--resume", "--batch-size", "32", check=False))
    assert "--batch-size 32 (stored: 64)" in line
    shutil.rmtree(tmp_path / "run" / "checkpoints")
    proc = cli("train", "--out", "run", "--resume")
    assert "no checkpoint to continue from" in proc.stderr and "starts from the beginning" in proc.stderr


def test_binarized_runs_are_evaluated_on_one_fixed_binarization(cli, tmp_path):
    cli("train", *DIGITS_1, "--binarize", "--out", "run")
    first, second = (cli("evaluate", "run", "--quick", "--json", f"m{i}.json") for i in (1, 2))
    assert "binarized once with a fixed seed" in first.stdout
    m1, m2 = (json.loads((tmp_path / f"m{i}.json").read_text()) for i in (1, 2))
    assert m1["test"]["recon"] == m2["test"]["recon"]  # the same binary test images both times


def test_info_json_into_a_closed_pipe_is_quiet(runs):
    proc = subprocess.run(f"{sys.executable} -m vaekit info --json {runs / 'vae'} | head -c 10", shell=True,
                          capture_output=True, text=True)
    assert proc.stdout == "{\n  \"check" and proc.stderr == ""


def test_the_classifier_cache_follows_the_content_not_the_name(tmp_path):
    from vaekit.data import load_dataset
    from vaekit.evaluation.classifier import cache_key

    rng = np.random.default_rng(0)
    labels = np.arange(200) % 4
    np.savez(tmp_path / "set.npz", x=rng.integers(0, 256, (200, 8, 8), dtype=np.uint8), y=labels)
    first = cache_key(load_dataset(DataConfig(name=f"npz:{tmp_path / 'set.npz'}")))
    assert first == cache_key(load_dataset(DataConfig(name=f"npz:{tmp_path / 'set.npz'}")))
    np.savez(tmp_path / "set.npz", x=rng.integers(0, 256, (200, 8, 8), dtype=np.uint8), y=labels)  # same name, count
    assert cache_key(load_dataset(DataConfig(name=f"npz:{tmp_path / 'set.npz'}"))) != first


def test_overwrite_never_deletes_a_file_vaekit_did_not_write(cli, tmp_path):
    """A run folder is vaekit's, but a file a user put in it is not: --overwrite refuses, naming it."""
    cli("train", *DIGITS_1, "--out", "run")
    (tmp_path / "run" / "notes.txt").write_text("mine")
    line = one_error(cli("train", *DIGITS_1, "--out", "run", "--overwrite", check=False))
    assert "holds 1 file vaekit did not write (notes.txt)" in line
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"
