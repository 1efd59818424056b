#!/usr/bin/env bash
# A scaled Table 1 (docs/results.md): LSH-TPE (pca2), loss-TPE and LSH-grid on the same
# schedule, lshx's DST default and Selfish-RNN's published LSTM config trained alone,
# 3 seeds each, small preset with 150 training windows per epoch (the scale of the
# correlation study). Results: $R/table1/*.json; summary: python scripts/table1_summary.py
set -euo pipefail
# On a GPU: RUNS=runs-gpu DEVICE=cuda WORKERS=1 PRESET=small MAX_BATCHES=0 (0: whole epochs) bash scripts/...
R=${RUNS:-runs}  # results folder: use another one for GPU runs
DEVICE=${DEVICE:-cpu} WORKERS=${WORKERS:-2} PRESET=${PRESET:-small} MAX_BATCHES=${MAX_BATCHES:-150}
CAP=$([ "$MAX_BATCHES" = 0 ] || echo "--max-batches $MAX_BATCHES")
COMMON="--preset $PRESET --n 8 --e0 2 --ei 1 --final-epochs 5 $CAP --device $DEVICE --executor process --workers $WORKERS"
TRAIN="--preset $PRESET --epochs 5 $CAP --device $DEVICE"
mkdir -p $R/table1
# Selfish-RNN's README command for the stacked LSTM: uniform (per-layer) init, magnitude
# death, random growth, no redistribution, death rate 0.8.
SELFISH="--init uniform --death magnitude --growth random --redistribution none --death-rate 0.8"
for seed in 0 1 2; do
  for run in tpe-pca2 tpe-loss grid-pca2; do
    out=$R/table1/$run-s$seed.json
    [ -s "$out" ] || lshx search ptb-lstm $COMMON --hpo "${run%-*}" --distance "${run#*-}" --seed $seed \
      --db $R/table1.sqlite --name $run-s$seed --resume --json --quiet > "$out"
  done
  out=$R/table1/default-s$seed.json
  [ -s "$out" ] || OMP_NUM_THREADS=2 lshx train ptb-lstm $TRAIN \
    --seed $seed --out $R/table1/default-s$seed --json --quiet > "$out"
  out=$R/table1/selfish-s$seed.json
  [ -s "$out" ] || OMP_NUM_THREADS=2 lshx train ptb-lstm $TRAIN \
    $SELFISH --seed $seed --out $R/table1/selfish-s$seed --json --quiet > "$out"
done
