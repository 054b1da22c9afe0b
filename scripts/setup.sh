#!/usr/bin/env bash
# Install vaekit into the current Python environment, with the data its default run and tests read.
#   bash scripts/setup.sh          the library and the `vaekit` command
#   bash scripts/setup.sh --test   also the test tools
# PyTorch is pinned here (not in pyproject, which keeps torch>=2.2 open) to the CPU build that this
# project's machines carry on disk; any other resolution would download a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q "torch==2.13.0" || python3 -c "import torch" \
  || { echo "setup: could not install torch==2.13.0; install PyTorch (>= 2.2) first" >&2; exit 1; }
if [[ "${1:-}" == "--test" ]]; then
  python3 -m pip install -q -e ".[test]"
else
  python3 -m pip install -q -e .
fi
# Fashion-MNIST from Debian's package when apt is usable; elsewhere vaekit downloads it on first use.
if [[ ! -d /usr/share/datasets/fashion-mnist ]] && command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
    || echo "setup: could not install dataset-fashion-mnist; vaekit will try to download it" >&2
fi
