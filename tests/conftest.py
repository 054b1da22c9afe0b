import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))

# Limits for commands the tests run in subprocesses: generous, so a busy machine (CI at load 6 on 2 cores) makes a
# test slower, never red. A hang still ends, well inside CI's 90 minutes.
SLOW = 1800


@pytest.fixture
def run_cli(tmp_path):
    """Run `python -m vaekit ...` as a user would, in a real subprocess."""

    def run(*args: str, check: bool = True, timeout: float = SLOW) -> subprocess.CompletedProcess:
        env = {**os.environ, "VAEKIT_DATA": str(tmp_path / "cache")}
        proc = subprocess.run([sys.executable, "-m", "vaekit", *map(str, args)], capture_output=True, text=True,
                              cwd=tmp_path, env=env, timeout=timeout)
        if check and proc.returncode != 0:
            command = " ".join(map(str, args))
            raise AssertionError(f"vaekit {command} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return proc

    return run


def run_many(cases: list[dict], limit: int = 3 << 30) -> list[dict]:
    """Many `vaekit` command lines ({"argv", "cwd", "env"}) in one fresh interpreter under an address-space
    limit (torch alone maps about 1 GiB): the same main() and boundary as the command, one start-up for all."""
    import json

    runner = Path(__file__).parent / "hostile_runner.py"
    proc = subprocess.run([sys.executable, str(runner), str(limit)], input=json.dumps(cases), text=True,
                          capture_output=True, timeout=2 * SLOW)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """`vaekit ...` through the command's own main() in this process, from inside tmp_path: the same parser,
    commands and error boundary, without a second start-up of torch (`run_cli` runs a real process)."""
    from vaekit.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VAEKIT_DATA", str(tmp_path / "cache"))

    def run(*args, check: bool = True) -> subprocess.CompletedProcess:
        capsys.readouterr()
        try:
            status = main([str(a) for a in args])
        except SystemExit as e:  # --help and --version exit from argparse
            status = e.code
        out, err = capsys.readouterr()
        if check and status != 0:
            raise AssertionError(f"vaekit {' '.join(map(str, args))} failed ({status}):\n{err[-3000:]}")
        return subprocess.CompletedProcess(args, status, out, err)

    return run


FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def fashion_cache(tmp_path_factory):
    """One data directory for the tests on Fashion-MNIST: its feature classifier is trained once."""
    return tmp_path_factory.mktemp("fashion-cache")


def require_fashion_mnist() -> None:
    """The real data set, installed by scripts/setup.sh; in CI its absence is a failure, not a skip."""
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        if os.environ.get("CI"):
            pytest.fail("Fashion-MNIST is not installed; scripts/setup.sh should have installed it")
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


CHROMIUM = "/usr/bin/chromium"
# As root, without a display, on a machine whose network is closed: no sandbox, no GPU, no background traffic.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextmanager
def chromium_page(errors: list[str], allowed: tuple[str, ...] = ("file:", "data:", "blob:")) -> Iterator:
    """A Playwright page in Debian's Chromium that records page errors, console errors, and requests to any
    address not starting with one of `allowed` into `errors`."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; scripts/setup.sh --test should have installed it")
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("request", lambda r: None if r.url.startswith(allowed) else errors.append(f"request: {r.url}"))
        try:
            yield page
        finally:
            browser.close()
