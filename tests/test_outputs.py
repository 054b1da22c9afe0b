"""Nothing lost, round two: an output is never an input of the same command, nor a second output of it; two processes
never write one output; files keep the process's usual mode; an interrupted --overwrite is finished by the next run.

Real files and real processes: links and hard links to inputs, a second process really holding an output's lock,
a real race of two `vaekit score` runs, a real SIGKILL in the middle of a replacement."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SLOW, run_many
from PIL import Image

from vaekit import RunConfig
from vaekit.config import DataConfig, TrainConfig
from vaekit.errors import VaekitError
from vaekit.outputs import lock_file
from vaekit.training import train

pytestmark = pytest.mark.slow


def one_line(result: dict) -> str:
    lines = [line for line in result["stderr"].splitlines() if line.strip() and not line.startswith("vaekit: warning")]
    assert result["status"] == 2 and len(lines) == 1 and lines[0].startswith("vaekit: error: "), result["stderr"]
    return lines[0]


def snapshot(root: Path) -> dict[Path, bytes]:
    """Every file a user could lose: bytes by path (the data cache aside)."""
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and "cache" not in p.parts}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A small run on digits, and every kind of input a command reads: an array file, an image folder, codes, a
    thresholds file, a link and a hard link to the array file."""
    root = tmp_path_factory.mktemp("outputs")
    train(RunConfig(data=DataConfig(name="digits"), train=TrainConfig(epochs=1, samples=4, two_stage_epochs=0)),
          root / "run", quiet=True)
    rng = np.random.default_rng(0)
    np.savez(root / "D.npz", x=rng.integers(0, 256, (40, 8, 8), dtype=np.uint8))
    np.save(root / "codes.npy", rng.normal(size=(6, 8)).astype(np.float32))
    (root / "imgs").mkdir()
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(root / "imgs" / f"{i}.png")
    (root / "link.npz").symlink_to(root / "D.npz")
    os.link(root / "D.npz", root / "hard.npz")
    results = run_many([{"argv": ["ood", "run", "--ood", "noise", "--out", "o", "-k", "3"], "cwd": str(root),
                         "env": {"VAEKIT_DATA": str(root / "cache")}}])
    assert results[0]["status"] == 0, results[0]["stderr"]
    return root


STEP = "run/checkpoints/STEP"
CASES = {  # argv, and what the one line says
    "score's CSV over its data": (["score", "run", "--data", "npz:D.npz", "--out", "D.npz", "--overwrite"],
                                  "D.npz: is the input D.npz"),
    "score's CSV over its thresholds": (["score", "run", "--threshold", "o/thresholds.json", "--out",
                                         "o/thresholds.json", "--overwrite"], "is the input o/thresholds.json"),
    "score's CSV over a link to its data": (["score", "run", "--data", "npz:D.npz", "--out", "link.npz",
                                             "--overwrite"], "link.npz: is the input D.npz"),
    "score's CSV over a hard link to its data": (["score", "run", "--data", "npz:D.npz", "--out", "hard.npz",
                                                  "--overwrite"], "hard.npz: is the input D.npz"),
    "score's CSV over the run's pointer": (["score", "run", "--out", "run/checkpoints/latest", "--overwrite"],
                                           "lies inside the input run of this command"),
    "encode's codes and labels in one file": (["encode", "run", "--out", "x.npy", "--labels", "x.npy"],
                                              "x.npy: named as two outputs"),
    "encode's codes over its data": (["encode", "run", "--data", "npz:D.npz", "--out", "D.npz", "--overwrite"],
                                     "D.npz: is the input D.npz"),
    "sample's grid and array in one file": (["sample", "run", "--out", "x.png", "--npy", "./x.png"],
                                            "named as two outputs"),
    "sample over the weights": (["sample", "run", "--out", f"{STEP}/model.safetensors", "--overwrite"],
                                "lies inside the input"),
    "sample's files into the checkpoint": (["sample", "run", "--files", STEP, "--overwrite"],
                                           "the output folder overlaps the input"),
    "sample's grid inside its own files folder": (["sample", "run", "--files", "f", "--out", "f/000000.png"],
                                                  "lies inside the output folder f"),
    "sample's grid and files folder one name": (["sample", "run", "--files", "g", "--out", "g"],
                                                "g: named as an output file (g) and an output folder"),
    "decode's images over its codes": (["decode", "run", "codes.npy", "--npy", "codes.npy", "--overwrite"],
                                       "codes.npy: is the input codes.npy"),
    "reconstruct into its image folder": (["reconstruct", "run", "--data", "folder:imgs", "--out", "imgs/r.png"],
                                          "imgs/r.png: lies inside the input imgs"),
    "evaluate's JSON over the summary": (["evaluate", "run", "--quick", "--json", "run/summary.json", "--overwrite"],
                                         "run/summary.json: lies inside the input run of this command"),
    "evaluate's JSON over run.json": (["evaluate", "run", "--quick", "--json", "run/run.json", "--overwrite"],
                                      "run/run.json: lies inside the input run of this command"),
    "export into the checkpoints": (["export", "run", "--format", "safetensors", "--out", "run/checkpoints",
                                     "--overwrite"], "overlaps the input"),
    "ood into its image folder": (["ood", "run", "--ood", "folder:imgs", "--out", "imgs/o"], "overlaps the input"),
    "train into its data file's folder": (["train", "--data", "folder:imgs", "--out", "imgs/run", "--epochs", "1"],
                                          "overlaps the input"),
}


def test_no_command_writes_over_what_it_reads(world):
    step = next((world / "run" / "checkpoints").glob("step-*")).name
    before = snapshot(world)
    cases = [{"argv": [a.replace("STEP", step) for a in argv], "cwd": str(world),
              "env": {"VAEKIT_DATA": str(world / "cache")}} for argv, _ in CASES.values()]
    results = run_many(cases)
    for (case, (_, words)), result in zip(CASES.items(), results):
        line = one_line(result)
        assert words in line, (case, line)
    assert snapshot(world) == before
    assert not list(world.rglob("*.lock")) and not list(world.rglob("*.tmp-*"))


# Every file-writing flag of every command, pointed at every input that command reads (the checkpoint's files, the
# data file directly, through a link and through a hard link, codes, thresholds): generated, so a flag added later
# is tried too.
READS = {  # each command, what it is given, and the files it then reads
    "score": (["score", "run", "--data", "npz:D.npz", "--threshold", "o/thresholds.json", "-k", "3"],
              ["D.npz", "link.npz", "hard.npz", "o/thresholds.json", "run/summary.json", "run/checkpoints/latest",
               f"{STEP}/model.safetensors"]),
    "encode": (["encode", "run", "--data", "npz:D.npz"], ["D.npz", "link.npz", "hard.npz", f"{STEP}/config.json"]),
    "sample": (["sample", "run", "-n", "4"], ["run/run.json", f"{STEP}/priors.safetensors", "run/metrics.jsonl",
                                              "run/README.md", "run/.vaekit-run", "run/new-file.png"]),
    "decode": (["decode", "run", "codes.npy"], ["codes.npy", f"{STEP}/model.safetensors"]),
    "reconstruct": (["reconstruct", "run", "--data", "npz:D.npz", "-n", "4"], ["D.npz", "hard.npz"]),
    "evaluate": (["evaluate", "run", "--quick", "--data", "npz:D.npz"], ["D.npz", "run/summary.json"]),
}
FILE_FLAGS = ("--out", "--npy", "--labels", "--json")


def output_flags(command: str) -> list[str]:
    """The flags of `command` that name a file it writes, read from the parser."""
    import argparse

    from vaekit.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return [a.option_strings[-1] for a in sub.choices[command]._actions
            if a.option_strings and a.option_strings[-1] in FILE_FLAGS]


def test_every_output_flag_aimed_at_every_input_is_refused(world):
    step = next((world / "run" / "checkpoints").glob("step-*")).name
    before = snapshot(world)
    labels, cases = [], []
    for command, (argv, inputs) in READS.items():
        for flag in output_flags(command):
            for target in inputs:
                target = target.replace("STEP", step)
                labels.append(f"{command} {flag} {target}")
                cases.append({"argv": [a.replace("STEP", step) for a in argv] + [flag, target, "--overwrite"],
                              "cwd": str(world), "env": {"VAEKIT_DATA": str(world / "cache")}})
    assert len(cases) >= 25
    for label, result in zip(labels, run_many(cases)):
        line = one_line(result)
        assert "input" in line and "of this command" in line, (label, line)
    assert snapshot(world) == before


def hold_lock(path: Path) -> subprocess.Popen:
    """Another process holding the lock of the output `path`, as a second vaekit writing it would: a plain Python
    process taking the same POSIX lock on the same lock file, until it is killed."""
    script = ("import fcntl, os, sys, time; f = open(sys.argv[1], 'a+'); fcntl.lockf(f, fcntl.LOCK_EX); "
              "print('held', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", script, str(lock_file(path))], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


WRITERS = {  # a command, and the output it writes (a file, or a folder)
    "score": (["score", "run", "--out", "s.csv", "-k", "2"], "s.csv"),
    "encode": (["encode", "run", "--out", "c.npy"], "c.npy"),
    "encode --labels": (["encode", "run", "--out", "c2.npy", "--labels", "y.npy"], "y.npy"),
    "sample": (["sample", "run", "-n", "4", "--out", "g.png"], "g.png"),
    "sample --files": (["sample", "run", "-n", "4", "--files", "files"], "files"),
    "decode --npy": (["decode", "run", "codes.npy", "--npy", "d.npy"], "d.npy"),
    "reconstruct": (["reconstruct", "run", "-n", "4", "--out", "r.png"], "r.png"),
    "evaluate --json": (["evaluate", "run", "--quick", "--json", "e.json"], "e.json"),
    "ood": (["ood", "run", "--ood", "noise", "--out", "o2", "-k", "2"], "o2"),
    "export": (["export", "run", "--format", "safetensors", "--out", "x"], "x"),
    "train": (["train", "--data", "digits", "--epochs", "1", "--out", "t"], "t"),
    "train --resume": (["train", "--out", "run", "--resume"], "run"),
    "compare": (["compare", "--data", "digits", "--quick", "--out", "cmp"], "cmp"),
    "oneclass": (["oneclass", "--data", "digits", "--epochs", "1", "--out", "oc"], "oc"),
}


def test_a_second_writer_of_any_output_gets_one_line_and_touches_nothing(world):
    before = snapshot(world)
    holders = [hold_lock(world / out) for _, out in WRITERS.values()]
    try:
        results = run_many([{"argv": argv, "cwd": str(world), "env": {"VAEKIT_DATA": str(world / "cache")}}
                            for argv, _ in WRITERS.values()])
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()
    for (case, (_, out)), result in zip(WRITERS.items(), results):
        line = one_line(result)
        assert f"{out}: another vaekit process is writing it now" in line, (case, line)
        assert result["seconds"] < 30, case
    for _, out in WRITERS.values():
        lock_file(world / out).unlink(missing_ok=True)  # the holders' (killed: never removed)
    assert snapshot(world) == before


def vaekit(*args, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "VAEKIT_DATA": str(cwd / "cache")}
    return subprocess.Popen([sys.executable, "-m", "vaekit", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_two_score_runs_into_one_csv_leave_the_winners_whole(world, tmp_path):
    """The issue's case, raced for real: two models scored into one CSV. The first holds the file while it scores;
    the second is refused in one line; the CSV is the first one's, byte for byte as when it runs alone."""
    scoring = ["score", "run", "-k", "30", "--split", "all"]
    solo = vaekit(*scoring, "--out", str(tmp_path / "alone.csv"), cwd=world)
    assert solo.wait(timeout=SLOW) == 0, solo.stderr.read()
    first = vaekit(*scoring, "--out", "race.csv", cwd=world)
    deadline = time.time() + SLOW
    while not lock_file(world / "race.csv").exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    first.send_signal(signal.SIGSTOP)  # held mid-work (a slow machine), however fast it would be: a real overlap
    try:
        assert first.poll() is None, "the first run ended before it could be held"
        second = vaekit("score", "run", "--data", "npz:D.npz", "-k", "2", "--out", "race.csv", "--overwrite",
                        cwd=world)
        assert second.wait(timeout=SLOW) == 2
    finally:
        first.send_signal(signal.SIGCONT)
    assert "race.csv: another vaekit process is writing it now" in second.stderr.read()
    assert first.wait(timeout=SLOW) == 0, first.stderr.read()
    assert (world / "race.csv").read_bytes() == (tmp_path / "alone.csv").read_bytes()
    assert not lock_file(world / "race.csv").exists()


def test_every_file_gets_the_mode_of_the_processs_umask(tmp_path):
    """Weights are read by colleagues on a shared server: no file of a run is private when the JSON beside it is
    not. Run in a process with umask 027 (group may read, others not)."""
    script = ("import os, sys; os.umask(0o027); from vaekit.cli import main; "
              "sys.exit(main(['train', '--data', 'digits', '--epochs', '1', '--samples', '4', '--two-stage-epochs', "
              "'0', '--quiet', '--out', 'run']))")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=SLOW,
                          env={**os.environ, "VAEKIT_DATA": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    modes = {p.relative_to(tmp_path): oct(p.stat().st_mode & 0o777) for p in (tmp_path / "run").rglob("*")
             if p.is_file()}
    assert any(p.name == "model.safetensors" for p in modes) and any(p.name == "state.safetensors" for p in modes)
    assert set(modes.values()) == {oct(0o640)}, modes


def test_a_killed_overwrite_is_put_back_by_the_next_run(world, tmp_path):
    """SIGKILL after `--overwrite` set the old run aside: the next run into that folder puts the old run back (the
    replacement never completed) and says so; nothing is left hidden beside it."""
    run = tmp_path / "run"
    (tmp_path / "cache").mkdir()
    train(RunConfig(data=DataConfig(name="digits"), train=TrainConfig(epochs=1, samples=4, two_stage_epochs=0)),
          run, quiet=True)
    before = snapshot(run)
    slow = ["train", "--data", "digits", "--epochs", "50", "--batch-size", "8", "--two-stage-epochs", "0", "--out",
            "run", "--overwrite", "--quiet"]
    proc = vaekit(*slow, cwd=tmp_path)
    deadline = time.time() + SLOW
    while not list(tmp_path.glob(".run.replaced-*")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    while not (run / "run.json").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)  # the replacement has begun writing
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(tmp_path.glob(".run.replaced-*")), "the kill came too late to test anything"
    again = subprocess.run([sys.executable, "-m", "vaekit", "train", "--data", "digits", "--epochs", "1", "--out",
                            "run"], cwd=tmp_path, capture_output=True, text=True, timeout=SLOW,
                           env={**os.environ, "VAEKIT_DATA": str(tmp_path / "cache")})
    assert again.returncode == 2 and "run folder exists" in again.stderr  # no --overwrite: it refuses, but first
    assert "put back the run that an interrupted --overwrite had set aside" in again.stderr
    assert snapshot(run) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "run"]


def test_a_disk_that_fills_during_the_decode_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    from vaekit.data import cache, load_dataset
    from vaekit.errors import VaekitError

    (tmp_path / "imgs").mkdir()
    for i in range(20):
        Image.fromarray(np.full((8, 8), i, np.uint8)).save(tmp_path / "imgs" / f"{i}.png")

    def full_disk(scan, config, write, desc, in_memory=True):
        write(np.zeros((1, *scan.shape), np.uint8))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache, "decode_files", full_disk)
    config = DataConfig(name=f"folder:{tmp_path / 'imgs'}", max_in_memory_gb=1e-9, data_dir=str(tmp_path / "home"))
    with pytest.raises(VaekitError, match="the disk filled up while its images were decoded into .*folders .*"
                                          "--no-folder-cache"):
        load_dataset(config)
    assert [p.name for p in (tmp_path / "home" / "folders").iterdir()] == []  # no copy, no lock


def dead_pid() -> int:
    """The process id of a process that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def old_run(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True)
    (folder / ".vaekit-run").write_text("a vaekit run folder: `--overwrite` may replace it\ncomplete\n")
    (folder / "weights").write_text(text)
    return folder


@pytest.mark.parametrize("left", ["nothing", "a start without checkpoints", "a replacement with checkpoints",
                                  "a completed replacement", "a folder of someone else's"])
def test_what_a_killed_overwrite_left_is_finished_without_losing_work(tmp_path, capsys, left):
    """The next run into the folder finishes a killed --overwrite: the old run back where the replacement is worth
    nothing, gone where the replacement completed, and both kept where the replacement holds work (or is not
    vaekit's). Even a command that is then refused never deletes work."""
    from vaekit.files import HOST
    from vaekit.outputs import new_run_folder

    run, pid = tmp_path / "run", dead_pid()
    aside = old_run(tmp_path / f".run.replaced-{HOST}-{pid}", "old")
    if left != "nothing":
        run.mkdir()
        state = "complete" if left == "a completed replacement" else f"writing: {HOST}-{pid}"
        if left != "a folder of someone else's":
            (run / ".vaekit-run").write_text(f"a vaekit run folder: `--overwrite` may replace it\n{state}\n")
        (run / "weights").write_text("new")
        if left == "a replacement with checkpoints":
            (run / "checkpoints" / "step-00000007").mkdir(parents=True)
    with pytest.raises(VaekitError), new_run_folder(run, overwrite=False):
        pass  # refused: the folder is not empty; what was left is settled first
    said = capsys.readouterr().err
    weights = (run / "weights").read_text()
    if left in ("nothing", "a start without checkpoints"):
        assert weights == "old" and not aside.exists() and "put back the run" in said
    elif left == "a completed replacement":
        assert weights == "new" and not aside.exists() and "removed the earlier run" in said
    else:
        assert weights == "new" and (aside / "weights").read_text() == "old" and "both are left" in said
    assert not list(tmp_path.glob(".run.discarded-*"))


def test_a_resume_continues_a_killed_replacement_then_removes_the_old_run(tmp_path, capsys):
    from vaekit.files import HOST

    run = tmp_path / "run"
    train(RunConfig(data=DataConfig(name="digits"), train=TrainConfig(epochs=1, samples=4, two_stage_epochs=0,
                                                                        gmm_components=0)), run, quiet=True)
    (run / ".vaekit-run").write_text(f"a vaekit run folder\nwriting: {HOST}-{dead_pid()}\n")  # as if killed
    aside = old_run(tmp_path / f".run.replaced-{HOST}-{dead_pid()}", "old")
    train(None, run, resume=True, epochs=2, quiet=True)
    assert "continues a run that an interrupted --overwrite began" in capsys.readouterr().err
    assert not aside.exists() and "complete" in (run / ".vaekit-run").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_two_processes_never_both_hold_a_lock_of_one_name(tmp_path):
    """The lock of a folder's decode: one holder at a time, however the holders come and go (a holder removes the
    lock file when it ends; one that was waiting on the removed file must not hold it beside a newcomer)."""
    script = ("import sys, time; from pathlib import Path; from vaekit.outputs import exclusive\n"
              "time.sleep(float(sys.argv[2]))\n"
              "with exclusive(Path(sys.argv[1]), wait=True):\n"
              "    start = time.time(); time.sleep(0.6); print(start, time.time(), flush=True)\n")
    lock = tmp_path / "k.lock"
    procs = [subprocess.Popen([sys.executable, "-c", script, str(lock), str(delay)], stdout=subprocess.PIPE, text=True)
             for delay in (0.0, 0.2, 0.65, 0.7)]
    spans = sorted(tuple(map(float, p.communicate(timeout=SLOW)[0].split())) for p in procs)
    assert len(spans) == 4 and all(a[1] <= b[0] + 1e-3 for a, b in zip(spans, spans[1:])), spans
    assert not lock.exists()


def test_a_link_to_an_output_shares_its_lock(tmp_path):
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target", target_is_directory=True)
    assert lock_file(tmp_path / "link") == lock_file(tmp_path / "target")
