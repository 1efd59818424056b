#!/usr/bin/env bash
# A scaled Table 1 (docs/results.md): LSH-TPE (pca2), loss-TPE and LSH-grid on the same
# schedule, lshx's DST default and Selfish-RNN's published LSTM config trained alone,
# 3 seeds each, small preset with 150 training windows per epoch (the scale of the
# correlation study). Results: runs/table1/*.json ($RUNS); summary: python scripts/table1_summary.py
set -euo pipefail
. "$(dirname "$0")/study_settings.sh"
mkdir -p $R/table1
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
