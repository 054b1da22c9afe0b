"""Faults a user's work must survive: crashes, divergence, bad input, huge outputs. Real processes, real files.

Each bad-input case gets exit status 2 and one line naming the file (or flag) and the problem, no traceback,
and nothing the user had is changed.
"""

import gzip
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SLOW, run_many
from PIL import Image
from safetensors.torch import load_file

from vaekit import ModelConfig, RunConfig, build_model, load
from vaekit.config import DataConfig, TrainConfig
from vaekit.data.idx import write_idx
from vaekit.data.sources import IDX_FILES
from vaekit.training import train
from vaekit.training.checkpoint import Progress, roll_back, save_checkpoint


def vaekit(*args, cwd, env=None, timeout=SLOW):
    return subprocess.run([sys.executable, "-m", "vaekit", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "VAEKIT_DATA": str(Path(cwd) / "cache"), **(env or {})}, timeout=timeout)


def screen_lines(stderr: str) -> list[str]:
    """What a terminal shows: progress bars redraw a line with carriage returns."""
    return [seg.rsplit("\r", 1)[-1] for seg in stderr.split("\n") if seg.rsplit("\r", 1)[-1].strip()]


# --- crash and resume -----------------------------------------------------------------------------------

CRASH_ARGS = ["--data", "digits", "--epochs", "2", "--batch-size", "8", "--hidden", "512,512", "--checkpoint-every",
              "5", "--samples", "4", "--quiet"]


def latest_step(run: Path) -> int:
    pointer = run / "checkpoints" / "latest"
    return int(pointer.read_text().split("-")[1]) if pointer.is_file() else -1


def writing(run: Path) -> bool:
    return any((run / "checkpoints").glob(".step-*.tmp")) if (run / "checkpoints").is_dir() else False


def rows(run: Path) -> int:
    f = run / "metrics.jsonl"
    return len(f.read_text().splitlines()) if f.is_file() else 0


def test_sigkill_at_many_moments_then_resume_gives_bitwise_identical_weights(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VAEKIT_DATA": str(tmp_path / "cache")}
    base = [sys.executable, "-m", "vaekit", "train"]
    subprocess.run(base + CRASH_ARGS + ["--out", str(tmp_path / "straight")], check=True, env=env, capture_output=True)
    run = tmp_path / "crashy"
    # Each trigger is checked every millisecond while the run goes on; the run is then killed with SIGKILL.
    triggers = [
        ("during start-up, before any checkpoint", lambda start: time.time() - start > 1.0),
        ("mid-epoch, after a few checkpoints", lambda start: latest_step(run) >= 20),
        ("while a checkpoint folder is being written", lambda start: latest_step(run) >= 40 and writing(run)),
        ("right after epoch 1's validation row", lambda start: rows(run) >= 1),
        ("while another checkpoint is being written", lambda start: latest_step(run) >= 250 and writing(run)),
        ("mid-epoch 2", lambda start: latest_step(run) >= 300),
    ]
    kills = []
    for i, (moment, trigger) in enumerate(triggers):
        # killed before run.json existed, there is nothing to resume: the user starts the same command again
        started = (run / "run.json").is_file()
        cmd = base + (["--out", str(run), "--resume"] if started else CRASH_ARGS + ["--out", str(run)])
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        start = time.time()
        while proc.poll() is None and not trigger(start) and time.time() - start < 120:
            time.sleep(0.001)
        assert proc.poll() is None, f"the run ended before '{moment}': {proc.stderr.read()[-2000:]}"
        during_write = writing(run)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills.append((moment, latest_step(run), during_write))
        if latest_step(run) >= 0:  # whatever the moment, the latest checkpoint is complete and loads
            model = load(run)
            assert torch.isfinite(model.sample(2)).all()
    assert any(w for _, _, w in kills), f"no kill landed during a checkpoint write: {kills}"
    assert kills[0][1] == -1, "the first kill should come before any checkpoint"
    subprocess.run(base + ["--out", str(run), "--resume"], check=True, env=env, capture_output=True)
    assert latest_step(run) == latest_step(tmp_path / "straight") == 2 * -(-1437 // 8)
    straight, resumed = (load_file(str(r / "checkpoints" / f"step-{latest_step(r):08d}" / "model.safetensors"))
                         for r in (tmp_path / "straight", run))
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight), f"weights differ after kills {kills}"
    assert not list((run / "checkpoints").glob(".step-*.tmp")), "stale temporary checkpoints were left behind"
    assert [json.loads(r)["epoch"] for r in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


# --- divergence ------------------------------------------------------------------------------------------


def test_a_diverging_run_stops_with_a_clear_message_and_keeps_no_bad_checkpoint(tmp_path):
    proc = vaekit("train", "--data", "digits", "--lr", "1e30", "--checkpoint-every", "1", "--out", "div", cwd=tmp_path)
    assert proc.returncode == 2
    lines = screen_lines(proc.stderr)
    assert len(lines) == 1 and "training diverged: 20 steps in a row with a non-finite loss" in lines[0], lines
    assert "try a lower --lr" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "div" / "checkpoints" / "latest").exists()  # the only checkpoint held the bad weights
    assert (tmp_path / "div" / "run.json").is_file()


def test_roll_back_keeps_the_last_good_checkpoint(tmp_path):
    model = build_model(ModelConfig(image_shape=(1, 8, 8)))
    optimizer = torch.optim.Adam(model.parameters())
    for step in (5, 10, 15):
        save_checkpoint(tmp_path, model, optimizer, Progress(step=step), {}, is_best=step == 15, keep=5)
    assert roll_back(tmp_path, before_step=12) == tmp_path / "checkpoints" / "step-00000010"
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step-00000010"
    assert not (tmp_path / "checkpoints" / "step-00000015").exists()
    assert not (tmp_path / "checkpoints" / "best").exists()  # it pointed at the dropped one
    assert load(tmp_path).meta["progress"]["step"] == 10


def test_non_finite_steps_are_skipped_not_applied():
    """train_step, the trainer's own step: a bad batch leaves the weights and the optimizer untouched, and the
    next good batch updates them."""
    from vaekit.training import train_step
    from vaekit.training.step import make_optimizer

    run = RunConfig(data=DataConfig(name="digits"))
    model = build_model(ModelConfig(image_shape=(1, 8, 8)))
    optimizer = make_optimizer(model, run)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(4, 1, 8, 8)
    x[0, 0, 0, 0] = float("nan")  # a NaN pixel poisons the loss and every gradient
    result = train_step(model, optimizer, x)
    assert bool(result.bad) and not torch.isfinite(result.grad_norm)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    for state in optimizer.state.values():  # fused Adam skipped on the device: no step counted, no moment moved
        assert int(state["step"]) == 0 and not state["exp_avg"].any() and not state["exp_avg_sq"].any()
    good = train_step(model, optimizer, torch.rand(4, 1, 8, 8), grad_clip=0.5)
    assert not bool(good.bad) and torch.isfinite(good.loss.objective)
    assert all(int(state["step"]) == 1 for state in optimizer.state.values())
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_step_over_the_skip_threshold_is_skipped_and_one_under_it_applied():
    """--skip-threshold (VDVAE's): a finite step whose gradient norm, before clipping, exceeds the threshold leaves
    weights and optimizer untouched and counts as bad; the same batch under a higher threshold updates."""
    from vaekit.training import train_step
    from vaekit.training.step import make_optimizer

    torch.manual_seed(0)
    model = build_model(ModelConfig(image_shape=(1, 8, 8)))
    optimizer = make_optimizer(model, RunConfig(data=DataConfig(name="digits")))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(4, 1, 8, 8)
    skipped = train_step(model, optimizer, x, skip_threshold=1e-6, grad_clip=1e-3)
    norm = float(skipped.grad_norm)
    assert bool(skipped.bad) and norm > 1e-3  # the norm before clipping is what the threshold reads
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(int(state["step"]) == 0 for state in optimizer.state.values())
    result = train_step(model, optimizer, x, skip_threshold=10 * norm)
    assert not bool(result.bad) and any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


# --- bad input -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small trained VAE run and files derived from it, shared by the checkpoint cases."""
    root = tmp_path_factory.mktemp("trained")
    train(RunConfig(data=DataConfig(name="digits"), train=TrainConfig(epochs=1, samples=4)), root / "run", quiet=True)
    return root / "run"


def idx_cache(root: Path, damage) -> None:
    rng = np.random.default_rng(0)
    folder = root / "cache" / "mnist"
    folder.mkdir(parents=True)
    arrays = [rng.integers(0, 256, (50, 28, 28), dtype=np.uint8), rng.integers(0, 10, 50, dtype=np.uint8),
              rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), rng.integers(0, 10, 20, dtype=np.uint8)]
    for stem, array in zip(IDX_FILES, arrays):
        write_idx(folder / f"{stem}.gz", array)
    damage(folder / f"{IDX_FILES[0]}.gz")


def truncate_idx(f: Path) -> None:
    f.write_bytes(gzip.compress(gzip.decompress(f.read_bytes())[:-100]))


def wrong_magic(f: Path) -> None:
    f.write_bytes(gzip.compress(b"\x08\x03\x00\x00" + gzip.decompress(f.read_bytes())[4:]))


def cut_gzip(f: Path) -> None:
    f.write_bytes(f.read_bytes()[:1000])


def image_folder(root: Path, sizes=((8, 8),) * 6, broken=False) -> None:
    folder = root / "imgs"
    folder.mkdir()
    for i, size in enumerate(sizes):
        Image.fromarray(np.full(size[::-1], i * 20, dtype=np.uint8)).save(folder / f"{i}.png")
    if broken:
        (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)


def copy_run(trained: Path, root: Path) -> Path:
    shutil.copytree(trained, root / "run")
    return root / "run" / "checkpoints" / (root / "run" / "checkpoints" / "latest").read_text().strip()


def edit_config(trained: Path, root: Path, change) -> None:
    ckpt = copy_run(trained, root)
    config = json.loads((ckpt / "config.json").read_text())
    change(config)
    (ckpt / "config.json").write_text(json.dumps(config))


class Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def pickled_weights(root: Path, trained: Path) -> None:
    ckpt = copy_run(trained, root)
    (ckpt / "model.safetensors").write_bytes(pickle.dumps({"encoder.1.weight": Payload()}))


def truncated_weights(root: Path, trained: Path) -> None:
    ckpt = copy_run(trained, root)
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])


def npy(root: Path, name: str, array) -> None:
    np.save(root / name, array, allow_pickle=True)


def nan_images():
    a = np.random.default_rng(0).random((40, 8, 8))
    a[5, 3, 3] = np.nan
    return a


TRAIN_1 = ["train", "--epochs", "1", "--out", "new"]
CASES = {
    # data files
    "truncated IDX": (lambda r, t: idx_cache(r, truncate_idx), TRAIN_1 + ["--data", "mnist", "--no-download"],
                      "train-images-idx3-ubyte.gz: IDX data truncated"),
    "wrong IDX magic": (lambda r, t: idx_cache(r, wrong_magic), TRAIN_1 + ["--data", "mnist", "--no-download"],
                        "train-images-idx3-ubyte.gz: not an IDX file (wrong magic number)"),
    "cut-off gzip": (lambda r, t: idx_cache(r, cut_gzip), TRAIN_1 + ["--data", "mnist", "--no-download"],
                     "train-images-idx3-ubyte.gz: corrupt or truncated gzip"),
    "missing data set, downloads off": (None, TRAIN_1 + ["--data", "mnist", "--no-download"],
                                        "mnist not found in"),
    "corrupt PNG in a folder": (lambda r, t: image_folder(r, broken=True), TRAIN_1 + ["--data", "folder:imgs"],
                                "broken.png: not a readable image"),
    "empty folder": (lambda r, t: (r / "imgs").mkdir(), TRAIN_1 + ["--data", "folder:imgs"], "imgs: no images found"),
    "mixed image sizes": (lambda r, t: image_folder(r, sizes=[(8, 8)] * 3 + [(9, 7)] * 3),
                          TRAIN_1 + ["--data", "folder:imgs"], "imgs: images have 2 different sizes"),
    "npy with NaN": (lambda r, t: npy(r, "x.npy", nan_images()), TRAIN_1 + ["--data", "npy:x.npy"],
                     "x.npy: contains NaN"),
    "npy of the wrong rank": (lambda r, t: npy(r, "x.npy", np.zeros((40, 64))), TRAIN_1 + ["--data", "npy:x.npy"],
                              "x.npy: expected images shaped (N, H, W) or (N, C, H, W), got shape (40, 64)"),
    "npy holding pickled objects": (lambda r, t: npy(r, "x.npy", np.array([Payload()] * 3, dtype=object)),
                                    TRAIN_1 + ["--data", "npy:x.npy"], "x.npy: not a plain numeric array file"),
    "npz without images": (lambda r, t: np.savez(r / "x.npz", pixels=np.zeros((9, 8, 8))),
                           TRAIN_1 + ["--data", "npz:x.npz"], "x.npz: no 'images' or 'x' array inside"),
    "unknown data set": (None, TRAIN_1 + ["--data", "cifar-11"], "unknown data set 'cifar-11'"),
    # configs and flags
    "config: unknown key": (lambda r, t: (r / "c.toml").write_text("[train]\nepoch = 3\n"),
                            TRAIN_1 + ["--config", "c.toml"], "c.toml: train: unknown setting 'epoch'"),
    "config: wrong type": (lambda r, t: (r / "c.toml").write_text("[model]\nbeta = 'high'\n"),
                           TRAIN_1 + ["--config", "c.toml"], "c.toml: model.beta: expected a number, got 'high'"),
    "config: bad TOML": (lambda r, t: (r / "c.toml").write_text("[train\nepochs = 3\n"),
                         TRAIN_1 + ["--config", "c.toml"], "c.toml: not a valid TOML file"),
    "config: unknown section": (lambda r, t: (r / "c.yaml").write_text("optim:\n  lr: 0.1\n"),
                                TRAIN_1 + ["--config", "c.yaml"], "c.yaml: unknown section 'optim'"),
    "config: missing file": (None, TRAIN_1 + ["--config", "nope.toml"], "nope.toml: config file not found"),
    "config: a 400-digit number": (lambda r, t: (r / "c.json").write_text('{"train": {"lr": 1' + "0" * 400 + "}}"),
                                   TRAIN_1 + ["--config", "c.json"], "train.lr: 1000"),
    "config: keys that are not names": (lambda r, t: (r / "c.yaml").write_text("model:\n  1: a\n  null: b\n"),
                                        TRAIN_1 + ["--config", "c.yaml"], "c.yaml: model: unknown setting"),
    "negative beta": (None, TRAIN_1 + ["--data", "digits", "--beta", "-1"], "argument --beta: must be >= 0, got -1.0"),
    "bad validation fraction": (None, TRAIN_1 + ["--data", "digits", "--val-fraction", "1.5"],
                                "argument --val-fraction: must be > 0 and < 1"),
    "conv net on too small images": (None, TRAIN_1 + ["--data", "digits", "--arch", "conv", "--conv-channels",
                                                      "8,8,8,8"], "8x8 image is too small for 4 stride-2"),
    "no such GPU": (None, TRAIN_1 + ["--data", "digits", "--device", "cuda"], "this machine has no CUDA GPU"),
    # runs and outputs
    "run folder exists": (lambda r, t: (r / "new").mkdir() or (r / "new" / "keep").write_text("mine"),
                          TRAIN_1 + ["--data", "digits"], "new: run folder exists and is not empty"),
    "resume of nothing": (None, ["train", "--out", "nothing", "--resume"], "nothing: nothing to resume"),
    "resume with new settings": (lambda r, t: copy_run(t, r), ["train", "--out", "run", "--resume", "--lr", "0.1"],
                                 "only --epochs may change (got --lr 0.1 (stored: 0.001))"),
    "output file exists": (lambda r, t: (r / "s.png").write_bytes(b"mine"), ["sample", "TRAINED", "--out", "s.png"],
                           "s.png: exists; pass --overwrite"),
    "files folder not empty": (lambda r, t: (r / "out").mkdir() or (r / "out" / "a.png").write_bytes(b"mine"),
                               ["sample", "TRAINED", "--files", "out"], "out: folder is not empty"),
    "too many images for a grid": (None, ["sample", "TRAINED", "-n", "5000"], "too many for one grid"),
    "no images asked for": (None, ["sample", "TRAINED", "-n", "0"], "argument -n: must be >= 1"),
    # checkpoints
    "no checkpoint there": (None, ["sample", "nowhere"], "nowhere: no such checkpoint or run folder"),
    "pickled .pt file": (lambda r, t: (r / "model.pt").write_bytes(pickle.dumps(Payload())),
                         ["sample", "model.pt"], "model.pt: expected a checkpoint folder"),
    "pickle inside model.safetensors": (pickled_weights, ["sample", "run"], "model.safetensors: not a readable "
                                                                            "safetensors file"),
    "truncated weights": (truncated_weights, ["sample", "run"], "model.safetensors: not a readable safetensors"),
    "config does not match weights": (lambda r, t: edit_config(t, r, lambda c: c["model"].update(latent_dim=3)),
                                      ["sample", "run"], "weights do not match the config"),
    "config with a wrong type": (lambda r, t: edit_config(t, r, lambda c: c["model"].update(beta="x")),
                                 ["sample", "run"], "model.beta: expected a number"),
    "config not JSON": (lambda r, t: (copy_run(t, r) / "config.json").write_text("{not json"), ["info", "run"],
                        "config.json: not a readable JSON config"),
    "codes of the wrong shape": (lambda r, t: np.save(r / "z.npy", np.zeros((4, 3))),
                                 ["decode", "TRAINED", "z.npy"], "z.npy: expected codes shaped (N, 8), got (4, 3)"),
    "codes with NaN": (lambda r, t: np.save(r / "z.npy", np.full((4, 8), np.nan)), ["decode", "TRAINED", "z.npy"],
                       "z.npy: contains NaN or infinite values"),
    "codes file not .npy": (lambda r, t: (r / "z.npy").write_text("0.1, 0.2"), ["decode", "TRAINED", "z.npy"],
                            "z.npy: not a readable .npy array"),
    "images of another shape": (lambda r, t: idx_cache(r, lambda f: None),
                                ["encode", "TRAINED", "--data", "mnist"], "the model wants (1, 8, 8)"),
    "codes holding no rows": (lambda r, t: np.save(r / "z.npy", np.zeros((0, 8), np.float32)),
                              ["decode", "TRAINED", "z.npy"], "z.npy: holds no codes"),
    "IDX labels past the set's classes": (lambda r, t: idx_cache(r, lambda f: write_idx(
        f.with_name(f"{IDX_FILES[1]}.gz"), np.full(50, 200, np.uint8))), TRAIN_1 + ["--data", "mnist", "--no-download"],
        "train-labels-idx1-ubyte.gz: mnist labels lie in 0..9, found 200"),
    "config nested 100,000 deep": (lambda r, t: (r / "c.json").write_text("[" * 100_000 + "]" * 100_000),
                                   TRAIN_1 + ["--config", "c.json"], "nested more than 64 levels deep"),
    "checkpoint config asking for another network": (
        lambda r, t: edit_config(t, r, lambda c: c["model"].update(image_shape=[3, 1024, 1024])), ["sample", "run"],
        "weights do not match the config ('decoder.2.bias': (64,) where the config makes (3145728,))"),
    "checkpoint config nested 100,000 deep": (
        lambda r, t: (copy_run(t, r) / "config.json").write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"),
        ["info", "run"], "config.json: not a readable JSON config (nested more than 64 levels deep)"),
}


@pytest.fixture(scope="module")
def case_results(trained, tmp_path_factory):
    """Every case set up in a folder of its own, then all run in one interpreter (conftest.run_many): the
    folder, the files in it before, and what the command did."""
    folders, before = {}, {}
    for i, (case, (setup, _, _)) in enumerate(CASES.items()):
        folders[case] = tmp_path_factory.mktemp(f"case{i}")
        if setup:
            setup(folders[case], trained)
        before[case] = {p: p.read_bytes() for p in folders[case].rglob("*") if p.is_file()}
    results = run_many([{"argv": [str(trained) if a == "TRAINED" else a for a in args], "cwd": str(folders[case]),
                         "env": {"VAEKIT_DATA": str(folders[case] / "cache")}} for case, (_, args, _) in CASES.items()])
    return {case: (folders[case], before[case], result) for case, result in zip(CASES, results)}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_line_exit_2_and_changes_nothing(case, case_results):
    folder, before, result = case_results[case]
    message = CASES[case][2]
    lines = screen_lines(result["stderr"])
    assert result["status"] == 2, (case, result["status"], result["stderr"][-2000:])
    assert "Traceback" not in result["stderr"], result["stderr"]
    assert len(lines) == 1 and lines[0].startswith("vaekit: error: "), lines
    assert message in lines[0], (message, lines[0])
    after = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and p in before}
    assert after == before, "a failing command changed the user's files"
    assert not (folder / "pwned").exists()


def test_the_fault_list_is_long_enough():
    assert len(CASES) >= 20


def test_corrupt_images_can_be_skipped_with_a_warning(tmp_path):
    image_folder(tmp_path, broken=True)
    proc = vaekit("train", "--data", "folder:imgs", "--skip-bad-images", "--epochs", "1", "--out", "run",
                  "--val-fraction", "0.2", "--test-fraction", "0.2", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in screen_lines(proc.stderr) if line.startswith("vaekit: warning:")]
    assert len(warnings) == 1 and "broken.png: not a readable image" in warnings[0]
    assert json.loads(proc.stdout)["test"]["images"] >= 1


# --- resource bounds -------------------------------------------------------------------------------------

PEAK_RSS = """
import resource, sys
from vaekit.cli import main
code = main(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
sys.exit(code)
"""


def test_sampling_a_huge_n_streams_with_bounded_memory(tmp_path):
    build_model(ModelConfig(image_shape=(1, 28, 28))).save_pretrained(tmp_path / "m")
    peaks = {}
    for n in (2_000, 200_000):
        proc = subprocess.run([sys.executable, "-c", PEAK_RSS, "sample", str(tmp_path / "m"), "-n", str(n),
                               "--npy", str(tmp_path / f"{n}.npy")], capture_output=True, text=True, timeout=SLOW)
        assert proc.returncode == 0, proc.stderr
        peaks[n] = int(proc.stdout.strip().splitlines()[-1]) / 1024  # MiB
        assert np.load(tmp_path / f"{n}.npy", mmap_mode="r").shape == (n, 1, 28, 28)
    held_at_once = 200_000 * 784 * 4 / 2**20  # the float images, had they been kept: 598 MiB
    assert peaks[200_000] - peaks[2_000] < 0.15 * held_at_once, peaks


def test_ctrl_c_while_the_process_exits_is_no_traceback(trained, tmp_path):
    """The work done, a Ctrl-C during interpreter exit (some library's exit handler still running) ends the process
    quietly with the command's status, instead of a KeyboardInterrupt traceback from that handler."""
    script = ("import atexit, os, signal, sys, time\n"
              "atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(5)))\n"
              f"sys.argv = ['vaekit', 'info', {str(trained)!r}]\n"
              "from vaekit.cli import entry\nentry()\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=SLOW)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr and "KeyboardInterrupt" not in proc.stderr
    assert "checkpoint" in proc.stdout


def test_a_terminated_command_leaves_no_temporary_file_or_lock(trained, tmp_path):
    """SIGTERM (kill, a scheduler's time limit) ends a command as Ctrl-C does: its temporary files and locks go."""
    env = {**os.environ, "VAEKIT_DATA": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "vaekit", "score", str(trained), "-k", "100000", "--out",
                             "k.csv"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + SLOW
    while not (tmp_path / ".k.csv.lock").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1)  # into the scoring, its temporary CSV open
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=SLOW) == 130 and "interrupted" in proc.stderr.read()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == []
