#!/usr/bin/env bash
# Like the paper's Fig. 3 (left): LSH-TPE (pca2) against loss-TPE and Selfish-RNN's
# published LSTM config at pruning ratios 0.5, 0.6, 0.7, 0.8 (density 1 - ratio), seed 0,
# at the scale of scripts/table1.sh (whose seed-0 runs give the 0.67 point).
# Results: $RUNS (default runs)/fig3/*.json; figure: python scripts/fig3_summary.py
set -euo pipefail
# On a GPU: RUNS=runs-gpu DEVICE=cuda WORKERS=1 PRESET=small MAX_BATCHES=0 (0: whole epochs) bash scripts/...
R=${RUNS:-runs}  # results folder: use another one for GPU runs
DEVICE=${DEVICE:-cpu} WORKERS=${WORKERS:-2} PRESET=${PRESET:-small} MAX_BATCHES=${MAX_BATCHES:-150}
CAP=$([ "$MAX_BATCHES" = 0 ] || echo "--max-batches $MAX_BATCHES")
COMMON="--preset $PRESET --n 8 --e0 2 --ei 1 --final-epochs 5 $CAP --device $DEVICE --executor process --workers $WORKERS"
TRAIN="--preset $PRESET --epochs 5 $CAP --device $DEVICE"
mkdir -p $R/fig3
SELFISH="--init uniform --death magnitude --growth random --redistribution none --death-rate 0.8"
seed=0
for ratio in 0.5 0.6 0.7 0.8; do
  density=$(python -c "print(round(1 - $ratio, 2))")
  out=$R/fig3/selfish-r$ratio.json
  [ -s "$out" ] || OMP_NUM_THREADS=2 lshx train ptb-lstm $TRAIN \
    $SELFISH --density "$density" --seed $seed --out $R/fig3/selfish-r$ratio --json --quiet > "$out"
  for dist in pca2 loss; do
    out=$R/fig3/tpe-$dist-r$ratio.json
    [ -s "$out" ] || lshx search ptb-lstm $COMMON --hpo tpe --distance $dist --density "$density" \
      --seed $seed --db $R/fig3.sqlite --name tpe-$dist-r$ratio --resume --json --quiet > "$out"
  done
done
