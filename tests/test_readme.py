"""README.md runs as written: its command lines top to bottom, its config file, its Python snippet.

The only changes, all here: every run uses the shipped 8x8 digits unless the line names its own data, one
epoch, `--quick` evaluation, and a benchmark of defects a few images large, so the whole README runs in about a
minute; `~` is a temporary home holding a `photos/` folder, made "larger than memory" by a tiny
`--max-in-memory-gb`; the server is started on a free port, asked for its models, and stopped.
"""

import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vaekit.cli import main

README = (Path(__file__).parent.parent / "README.md").read_text()

QUICK = {"train": ["--epochs", "1", "--samples", "4"], "compare": ["--epochs", "1", "--quick"],
         "evaluate": ["--quick"], "ood": ["-k", "10"], "oneclass": ["--epochs", "1", "-k", "10"],
         "defects": ["--train-images", "200", "--test-images", "5"]}
QUICK_RESUME = ["--epochs", "2"]  # a resumed run must go past the one epoch trained
DEFAULT_DATA = ["--data", "digits"]  # Fashion-MNIST takes minutes; the digits ship inside vaekit
PYTHON_CHANGES = {'summary = train(RunConfig(data=DataConfig(name="digits")), "runs/api-digits")':
                  'from vaekit import TrainConfig\nsummary = train(RunConfig(data=DataConfig(name="digits"), '
                  'train=TrainConfig(epochs=1)), "runs/api-digits", quiet=True)'}


def block(language: str, after: str) -> str:
    """The first fenced block of `language` after the heading or text `after`."""
    match = re.search(rf"```{language}\n(.*?)```", README[README.index(after):], re.S)
    assert match, f"no {language} block after {after!r}"
    return match.group(1)


def command_lines() -> list[list[str]]:
    lines = [line.split("#")[0].strip() for line in block("bash", "## Command line").splitlines()]
    return [shlex.split(line) for line in lines if line.startswith("vaekit ")]


def adapted(argv: list[str]) -> list[str]:
    command = argv[1]
    extra = QUICK_RESUME if "--resume" in argv else QUICK.get(command, [])
    fresh = "--resume" not in argv and "--ae" not in argv
    if command in ("train", "compare", "oneclass", "defects") and "--data" not in argv and fresh:
        extra = [*extra, *DEFAULT_DATA]
    if "--config" in argv:
        extra = [*extra, *DEFAULT_DATA]  # the config file names Fashion-MNIST too
    if "--max-in-memory-gb" in argv:  # the 24 photos (0.3 MB at 64x64) must not fit
        argv = [a if b != "--max-in-memory-gb" else "0.0001" for b, a in zip(["", *argv], argv)]
    return argv[1:] + extra


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(argv: list[str], cwd: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "vaekit", *argv[1:], "--port", str(port), "--quiet"], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/models", timeout=2) as r:
                    assert {m["name"] for m in __import__("json").load(r)} == {"ae", "vae"}
                    return
            except OSError:
                assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()[-2000:]
                time.sleep(0.3)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A user's home with a photos/ folder, as the README's `folder:~/photos` expects; the README's config
    file as run.toml in the working folder."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VAEKIT_DATA", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    photos = tmp_path / "home" / "photos"
    photos.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(24):
        Image.fromarray(rng.integers(0, 256, (48 + i, 64, 3), dtype=np.uint8)).save(photos / f"IMG_{i:04d}.jpg")
    (tmp_path / "run.toml").write_text(block("toml", "A config file has one section"))
    return tmp_path


def test_the_readme_commands_run_as_written(home):
    lines = command_lines()
    assert len(lines) >= 15 and lines[-1][1] == "serve"
    for argv in lines[:-1]:
        status = main(adapted(argv))
        assert status == 0, " ".join(argv)
    serve(lines[-1], home)
    assert (home / "runs" / "compare" / "report.html").is_file() and (home / "samples" / "000000.png").is_file()
    assert (home / "runs" / "photos" / "run.json").is_file() and "photos" in (home / "runs" / "photos" /
                                                                            "run.json").read_text()
    assert (home / "runs" / "big" / "summary.json").is_file()
    assert not list((home / "cache" / "folders").iterdir())  # made by runs/big, removed by `vaekit cache clear`


def test_the_readme_python_snippet_runs(home):
    main(["train", "--out", "runs/vae", *QUICK["train"], *DEFAULT_DATA])
    code = block("python", "## Python API")
    for old, new in PYTHON_CHANGES.items():
        assert old in code
        code = code.replace(old, new)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["images"].shape[0] == scope["mixture"].shape[0] == 16 and scope["summary"]["test"]["images"] > 0
