#!/usr/bin/env bash
# One prepared GPU check for the lent machine as it is (Python 3.12, torch 2.11 + CUDA 13, nvcc;
# no hyperopt or lightgbm, nothing to download): builds lshx with CUDA for the card, runs the
# CUDA tests and the benchmarks. Everything lands in $OUT (default gpu-results) as each step
# finishes, in at most 8 files (what the device tool returns): gpu.txt, build.log, tests.txt,
# bench.jsonl, summary.txt. Whole script < 8 minutes. Run from the repository root:
#   bash benchmarks/gpu_check.sh [all|train|kernels]
set -uo pipefail
OUT=${OUT:-gpu-results}
WHICH=${1:-all}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
START=$(date +%s)
log() { echo "== [$(( $(date +%s) - START )) s] $*" | tee -a "$OUT/summary.txt"; }
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
  nvcc --version | tail -2; date -u; } > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

log "build (FORCE_CUDA=1, sm_90, flags of csrc/cuda/nvcc.flags)"
. benchmarks/gpu_build.sh || exit 1
python3 -c "from lshx import ops; print('cuda_version', ops.cuda_version())" | tee -a "$OUT/summary.txt"

log "error path: a failing check must raise, not crash"
timeout 60 python3 benchmarks/gpu_repro_segv.py 2>&1 | tail -3 | tee -a "$OUT/summary.txt"
log "CUDA tests (tests/test_cuda.py, the ops and the models on the CPU too)"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_ops_*.py tests/test_models.py \
  > "$OUT/tests.txt" 2>&1
tail -15 "$OUT/tests.txt" | tee -a "$OUT/summary.txt"

log "benchmarks ($WHICH) -> bench.jsonl"
timeout 330 python3 benchmarks/gpu_bench.py "$WHICH"
log "done"
