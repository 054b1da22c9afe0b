#!/usr/bin/env bash
# Install vaekit into the current Python environment.
#   bash scripts/setup.sh          the library and the `vaekit` command
#   bash scripts/setup.sh --test   also the test tools and the data the tests read
# PyTorch is pinned here (not in pyproject) to the CPU build on this machine's disk; any other
# resolution would download a multi-GB CUDA build. On your own machine, install torch as you like first.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q "torch==2.13.0" 2>/dev/null || python3 -c "import torch" 2>/dev/null \
  || { echo "setup: could not install torch==2.13.0; install PyTorch (>= 2.2) first" >&2; exit 1; }
if [[ "${1:-}" == "--test" ]]; then
  python3 -m pip install -q -e ".[test]"
  # The real Fashion-MNIST (Debian package) for the tests that read it, when apt is usable.
  if [[ ! -d /usr/share/datasets/fashion-mnist ]] && command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
      || echo "setup: could not install dataset-fashion-mnist; the Fashion-MNIST test will be skipped" >&2
  fi
else
  python3 -m pip install -q -e .
  # Fashion-MNIST: the Debian package when apt is usable; otherwise vaekit downloads it on first use.
  if [[ ! -d /usr/share/datasets/fashion-mnist ]] && command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 || true
  fi
fi
