#!/usr/bin/env bash
# The GPU checks, in one call of a lent GPU machine (its python3 holds a CUDA PyTorch; vaekit runs from src/).
# Fashion-MNIST travels in .vdata/fashion-mnist (the four .gz files). Results land in $OUT (or bench/gpu-out).
set -u
OUT=${OUT:-bench/gpu-out}; mkdir -p "$OUT"
export VAEKIT_DATA=$PWD/.vdata PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, vaekit; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
# 1. the tests that train, on the GPU (device auto): the host-sync test also runs under set_sync_debug_mode("error")
timeout 90 python3 -m pytest -v -p no:cacheprovider -o addopts="" --durations=5 tests/test_host_sync.py \
  2>&1 | tail -40 | tee "$OUT/pytest.txt"
# 2. training speed on the GPU against the plain loop, batch 128
timeout 150 python3 bench/train_speed.py --device cuda --rounds 2 --archs mlp conv --nll-rounds 1 \
  --out "$OUT/RESULTS-cuda.md" 2>&1 | tail -45
# 3. folders on the GPU: in memory, streamed, decoded once into the cache
timeout 150 python3 bench/folder_speed.py --device cuda --images 20000 --epochs 2 --rounds 1 --ab-rounds 4 \
  --out "$OUT/RESULTS-folders-cuda.md" 2>&1 | tail -25
