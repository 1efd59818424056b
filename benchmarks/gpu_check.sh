#!/usr/bin/env bash
# One prepared GPU check for the lent machine as it is (Python 3.12, torch 2.11 + CUDA 13, nvcc;
# no hyperopt or lightgbm, nothing to download): builds lshx with CUDA for the card, runs the
# CUDA tests and the benchmarks. Everything lands in $OUT (default gpu-results) as each step
# finishes: gpu.txt, build.log, tests.txt, bench.jsonl (every case with its precision),
# tests-rhn.txt, sanitizer.txt, summary.txt. What could fault (the RHN kernels, which have never
# run on a GPU, and compute-sanitizer) runs last, each in its own process. The whole call stays
# within BUDGET_S (460 s, under the device's 8 minutes): each step's limit is cut to what is
# left, and a step with no time left is skipped and said. Run from the repository root:
#   bash benchmarks/gpu_check.sh [all|train|kernels]
set -uo pipefail
OUT=${OUT:-gpu-results}
WHICH=${1:-all}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
START=$(date +%s)
DEADLINE=$(( START + ${BUDGET_S:-460} ))  # the whole call in under 8 minutes, whatever each step takes
log() { echo "== [$(( $(date +%s) - START )) s] $*" | tee -a "$OUT/summary.txt"; }
# a step's time limit: what it asks for, or what is left of the budget (0: skip it)
limit() { local left=$(( DEADLINE - $(date +%s) )); if [ "$left" -lt 15 ]; then echo 0; elif [ "$1" -lt "$left" ]; then echo "$1"; else echo "$left"; fi; }
step() { local s; s=$(limit "$1"); shift; if [ "$s" -eq 0 ]; then log "skipped (no time left): $*"; return 124; fi; timeout "$s" "$@"; }
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
  nvcc --version | tail -2; date -u; } > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

log "build (FORCE_CUDA=1, sm_90, flags of csrc/cuda/nvcc.flags)"
. benchmarks/gpu_build.sh || exit 1
python3 -c "from lshx import ops; print('cuda_version', ops.cuda_version())" | tee -a "$OUT/summary.txt"

log "error path: a failing check must raise, not crash"
step 60 python3 benchmarks/gpu_repro_segv.py 2>&1 | tail -3 | tee -a "$OUT/summary.txt"
log "CUDA tests but the RHN's (tests/test_cuda.py, the ops and the models on the CPU too)"
step 150 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_ops_*.py tests/test_models.py \
  -k "not rhn" > "$OUT/tests.txt" 2>&1
tail -15 "$OUT/tests.txt" | tee -a "$OUT/summary.txt"

log "benchmarks ($WHICH) -> bench.jsonl"
step 300 python3 benchmarks/gpu_bench.py "$WHICH"

# what could fault runs last, each in its own process: an illegal address voids nothing above
log "the RHN kernels for the first time: their tests, then their training step"
step 90 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_rhn.py -k rhn \
  > "$OUT/tests-rhn.txt" 2>&1
tail -8 "$OUT/tests-rhn.txt" | tee -a "$OUT/summary.txt"
step 60 python3 benchmarks/gpu_bench.py rhn
if command -v compute-sanitizer >/dev/null 2>&1; then
  log "compute-sanitizer memcheck over tests/test_cuda.py"
  step 150 compute-sanitizer --tool memcheck --error-exitcode 9 python3 -m pytest -q -p no:cacheprovider \
    tests/test_cuda.py -x > "$OUT/sanitizer.txt" 2>&1
  echo "compute-sanitizer exit $?" | tee -a "$OUT/summary.txt"
  grep -E "ERROR SUMMARY|passed|failed" "$OUT/sanitizer.txt" | tail -3 | tee -a "$OUT/summary.txt"
else
  log "compute-sanitizer not on PATH"
fi
log "done"
