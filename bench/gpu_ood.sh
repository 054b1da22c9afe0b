#!/usr/bin/env bash
# The GPU check of `vaekit score / ood` (issue 15): scoring speed on cuda and cpu in one process, then the commands
# end to end on cuda (a VAE on the shipped digits, its OOD report and a thresholded score file).
OUT=${OUT:-bench/gpu-out}; mkdir -p "$OUT"
export VAEKIT_DATA=$PWD/.vdata PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
timeout 240 python3 bench/ood_speed.py --devices cuda cpu --ks 0 100 1000 --images 2000 --out "$OUT/RESULTS-ood-gpu.md"
cd "$(mktemp -d)" || exit 1
timeout 120 python3 -m vaekit train --data digits --classes 0,1,2,3,4 --epochs 10 --device cuda --out vae --quiet
timeout 120 python3 -m vaekit ood vae --device cuda --ood held-out --ood invert --ood noise --out ood -k 1000
timeout 60 python3 -m vaekit score vae --device cuda --threshold ood/thresholds.json --out s.csv
cp ood/report.html "$OUT/ood-report.html"; cp ood/metrics.json "$OUT/ood-metrics.json"
