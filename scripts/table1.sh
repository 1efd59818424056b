#!/usr/bin/env bash
# A scaled Table 1 (docs/results.md): LSH-TPE (pca2) against loss-TPE on the same schedule,
# and the DST default config trained alone, 3 seeds each, small preset with 150 training
# windows per epoch (the scale of the correlation study). Results: runs/table1/*.json
set -euo pipefail
mkdir -p runs/table1
COMMON="--preset small --n 8 --e0 2 --ei 1 --final-epochs 5 --max-batches 150 --executor process --workers 2"
for seed in 0 1 2; do
  for dist in pca2 loss; do
    out=runs/table1/tpe-$dist-s$seed.json
    [ -s "$out" ] || lshx search ptb-lstm $COMMON --hpo tpe --distance $dist --seed $seed \
      --db runs/table1.sqlite --name tpe-$dist-s$seed --resume --json --quiet > "$out"
  done
  out=runs/table1/default-s$seed.json
  [ -s "$out" ] || OMP_NUM_THREADS=2 lshx train ptb-lstm --preset small --epochs 5 --max-batches 150 \
    --seed $seed --out runs/table1/default-s$seed --json --quiet > "$out"
done
