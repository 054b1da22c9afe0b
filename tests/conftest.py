import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def run_cli(tmp_path):
    """Run `python -m vaekit ...` as a user would, in a real subprocess."""

    def run(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        env = {**os.environ, "VAEKIT_DATA": str(tmp_path / "cache")}
        proc = subprocess.run([sys.executable, "-m", "vaekit", *map(str, args)], capture_output=True, text=True,
                              cwd=tmp_path, env=env, timeout=timeout)
        if check and proc.returncode != 0:
            command = " ".join(map(str, args))
            raise AssertionError(f"vaekit {command} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return proc

    return run


FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def require_fashion_mnist() -> None:
    """The real data set, installed by scripts/setup.sh; in CI its absence is a failure, not a skip."""
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        if os.environ.get("CI"):
            pytest.fail("Fashion-MNIST is not installed; scripts/setup.sh should have installed it")
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
