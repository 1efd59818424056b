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
MAX_JOBS=${MAX_JOBS:-16} FORCE_CUDA=1 python3 -m pip install -q --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 \
  || { tail -40 "$OUT/build.log"; exit 1; }
log "CUDA tests"
python3 -m pytest -q tests/test_cuda.py tests/test_ops.py 2>&1 | tee "$OUT/tests.txt" | tail -5
log "bench matmul (paper LSTM W_hh: 6000x1500, batch 20): cuBLAS on the masked weight vs lshx's CSR kernels"
timeout 40 lshx bench matmul --device cuda --path csr --density 0.33 --density 0.1 --json | tee "$OUT/bench_matmul.json"
timeout 40 lshx bench matmul --device cuda --path csr --train --density 0.33 --density 0.1 --json \
  | tee "$OUT/bench_matmul_train.json"
log "bench recurrence (H=1500, B=20, T=35): per-step cuBLAS vs the persistent kernel"
timeout 40 lshx bench recurrence --device cuda --density 0.33 --density 0.1 --json | tee "$OUT/bench_recurrence.json"
log "bench ls-step (H=1500, 2 layers, k=N; cuSOLVER QR, then CholeskyQR2)"
timeout 60 lshx bench ls-step --hidden 1500 --layers 2 --no-reference --device cuda --json \
  | tee "$OUT/bench_ls_step.json"
timeout 40 lshx bench ls-step --hidden 1500 --layers 2 --no-reference --device cuda --qr cholqr2 --json \
  | tee "$OUT/bench_ls_step_cholqr2.json"
log "bench ls-step (H=256, k=64, 16 samples): cuSOLVER against lshx's batched Householder kernel"
for qr in householder batched cholqr2; do
  timeout 30 lshx bench ls-step --hidden 256 --layers 2 --k 64 --samples 16 --no-reference --device cuda \
    --qr $qr --json | tee "$OUT/bench_ls_step_small_$qr.json"
done
log "bench train-epoch (paper preset, density 0.33 vs dense)"
timeout 90 lshx bench train-epoch ptb-lstm --preset paper --density 0.33 --batches 20 --device cuda --json \
  | tee "$OUT/bench_train_epoch.json"
log "done"
