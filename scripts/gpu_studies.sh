#!/usr/bin/env bash
# The studies of docs/results.md on a GPU, in one go: the correlation study, the scaled
# Table 1 and the Fig. 3 sweep with whole PTB-16% epochs (no --max-batches cap) and the
# small preset, everything resumable (re-run the script after an interruption). Results go
# to $RUNS (default runs-gpu); summaries and figures to $OUT (default gpu-studies).
# Not run yet: no GPU has been lent to this project. Run from the repository root after a
# CUDA build (FORCE_CUDA=1 pip install --no-build-isolation -e .).
set -euo pipefail
export RUNS=${RUNS:-runs-gpu} DEVICE=cuda WORKERS=${WORKERS:-1} PRESET=${PRESET:-small} MAX_BATCHES=${MAX_BATCHES:-0}
OUT=${OUT:-gpu-studies}
mkdir -p "$RUNS" "$OUT"
CAP=$([ "$MAX_BATCHES" = 0 ] || echo "--max-batches $MAX_BATCHES")
lshx study correlation ptb-lstm --preset "$PRESET" --n 10 --final-epochs 5 $CAP --device cuda \
  --executor process --workers "$WORKERS" --db "$RUNS/study.sqlite" --resume --json > "$OUT/correlation.json"
bash scripts/table1.sh
python scripts/table1_summary.py > "$OUT/table1.md"
bash scripts/fig3.sh
python scripts/fig3_summary.py "$OUT/fig3" > "$OUT/fig3.md"
lshx report "$RUNS/study.sqlite" --out "$OUT/study-report"
