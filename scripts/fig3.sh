#!/usr/bin/env bash
# Like the paper's Fig. 3 (left): LSH-TPE (pca2) against loss-TPE and Selfish-RNN's
# published LSTM config at pruning ratios 0.5, 0.6, 0.7, 0.8 (density 1 - ratio), seed 0,
# at the scale of scripts/table1.sh (whose seed-0 runs give the 0.67 point).
# Results: $RUNS (default runs)/fig3/*.json; figure: python scripts/fig3_summary.py
set -euo pipefail
. "$(dirname "$0")/study_settings.sh"
mkdir -p $R/fig3
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
