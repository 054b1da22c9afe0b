#!/usr/bin/env bash
# The second GPU call: training speed only, each loop's second epoch timed (the first call timed vaekit's first).
OUT=${OUT:-bench/gpu-out}; mkdir -p "$OUT"
export VAEKIT_DATA=$PWD/.vdata PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
timeout 170 python3 bench/train_speed.py --device cuda --rounds 1 --archs mlp conv --nll-rounds 0 \
  --out "$OUT/RESULTS-cuda.md" 2>&1 | tail -30
