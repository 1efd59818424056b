#!/usr/bin/env bash
# One prepared GPU check (an H100 or H200, < 5 minutes): builds lshx with CUDA, runs the
# CUDA tests and the benchmarks, writes everything into one folder ($OUT when set).
# Run from the repository root: bash benchmarks/gpu_check.sh
set -uo pipefail
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpu.txt"
log "build (FORCE_CUDA=1)"
FORCE_CUDA=1 python3 -m pip install -q --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 \
  || { tail -40 "$OUT/build.log"; exit 1; }
log "CUDA tests"
python3 -m pytest -q tests/test_cuda.py tests/test_ops.py 2>&1 | tee "$OUT/tests.txt" | tail -5
log "bench matmul (paper LSTM W_hh: 6000x1500, batch 20)"
timeout 120 lshx bench matmul --device cuda --density 0.33 --density 0.1 --json | tee "$OUT/bench_matmul.json"
log "bench ls-step (H=1500, 2 layers, k=N)"
timeout 120 lshx bench ls-step --hidden 1500 --layers 2 --no-reference --device cuda --json \
  | tee "$OUT/bench_ls_step.json"
log "bench train-epoch (paper preset, density 0.33 vs dense)"
timeout 150 lshx bench train-epoch ptb-lstm --preset paper --density 0.33 --batches 20 --device cuda --json \
  | tee "$OUT/bench_train_epoch.json"
log "done"
