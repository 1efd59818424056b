#!/usr/bin/env bash
# A scaled Table 1 (docs/results.md): LSH-TPE (pca2), loss-TPE and LSH-grid on the same
# schedule, lshx's DST default and Selfish-RNN's published LSTM config trained alone,
# 3 seeds each, small preset with 150 training windows per epoch (the scale of the
# correlation study). Results: runs/table1/*.json; summary: python scripts/table1_summary.py
set -euo pipefail
mkdir -p runs/table1
COMMON="--preset small --n 8 --e0 2 --ei 1 --final-epochs 5 --max-batches 150 --executor process --workers 2"
# Selfish-RNN's README command for the stacked LSTM: uniform (per-layer) init, magnitude
# death, random growth, no redistribution, death rate 0.8.
SELFISH="--init uniform --death magnitude --growth random --redistribution none --death-rate 0.8"
for seed in 0 1 2; do
  for run in tpe-pca2 tpe-loss grid-pca2; do
    out=runs/table1/$run-s$seed.json
    [ -s "$out" ] || lshx search ptb-lstm $COMMON --hpo "${run%-*}" --distance "${run#*-}" --seed $seed \
      --db runs/table1.sqlite --name $run-s$seed --resume --json --quiet > "$out"
  done
  out=runs/table1/default-s$seed.json
  [ -s "$out" ] || OMP_NUM_THREADS=2 lshx train ptb-lstm --preset small --epochs 5 --max-batches 150 \
    --seed $seed --out runs/table1/default-s$seed --json --quiet > "$out"
  out=runs/table1/selfish-s$seed.json
  [ -s "$out" ] || OMP_NUM_THREADS=2 lshx train ptb-lstm --preset small --epochs 5 --max-batches 150 \
    $SELFISH --seed $seed --out runs/table1/selfish-s$seed --json --quiet > "$out"
done
