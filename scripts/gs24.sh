#!/usr/bin/env bash
# The GS-24 experiment, end to end and resumable: trains the GS-24 table (whole PTB-16% epochs,
# P = 12, small preset, SEEDS training seeds; 2.5 to 7 h a seed on 2 cores: rerun to resume), a
# commit-ready copy of its run DB in docs/tables/ (spectra and perplexities, no checkpoints),
# replays searches on it (first LSH against the loss-based search at three settings, 1000 a
# setting, docs/figures/replay-claim/; then every method at every setting, REPLAYS_ALL a setting,
# docs/figures/replay/)
# and writes the figures, replay.json and the markdown tables of docs/results.md (f).
#   nice -n 10 bash scripts/gs24.sh            (WORKERS=2, SEEDS=3 by default; lshx from .venv or PATH)
#   bash scripts/gs24.sh snapshot              (while it trains: the run DB as it is now, into
#                                               docs/tables/NAME.partial.sqlite, to commit)
# On a machine without runs/gs24.sqlite the run starts from the newest committed state: the
# partial snapshot if there is one, else the finished table. Finished evaluations and tests are
# never trained again; what was in flight when the snapshot was taken is retrained.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$( [ -x .venv/bin/lshx ] && echo .venv/bin || dirname "$(command -v lshx)" )}
WORKERS=${WORKERS:-2}
SEEDS=${SEEDS:-3}
NAME=gs24-small-P12
DB=runs/gs24.sqlite
TABLE=docs/tables/$NAME.sqlite
PARTIAL=docs/tables/$NAME.partial.sqlite
OUT=docs/figures/replay
CLAIM=docs/figures/replay-claim
export OMP_NUM_THREADS=1
if [ "${1:-}" = snapshot ]; then
  exec "$BIN/lshx" study snapshot "$DB" "$PARTIAL"
fi
if [ ! -f "$DB" ]; then
  mkdir -p "$(dirname "$DB")"
  if [ -f "$PARTIAL" ]; then cp "$PARTIAL" "$DB"; else cp "$TABLE" "$DB"; fi
fi
"$BIN/lshx" study table ptb-lstm --space gs24 --preset small --final-epochs 12 --state both --seeds "$SEEDS" \
  --executor process --workers "$WORKERS" --db "$DB" --name "$NAME" --resume
# one self-contained file (no -wal, rollback journal: reading it read-only writes nothing beside it),
# without the lease of the process that trained it; the partial snapshot has done its job
"$BIN/lshx" study snapshot "$DB" "$TABLE"
rm -f "$PARTIAL"
mkdir -p "$OUT"
"$BIN/lshx" study table ptb-lstm --space gs24 --preset small --final-epochs 12 --state both --seeds "$SEEDS" \
  --db "$DB" --name "$NAME" --resume --quiet > "$OUT/table.txt"  # (finished: prints its summary)
# every method at every setting: REPLAYS_ALL search seeds per setting (each also on every training
# seed alone); 300 makes it about 40 min on 2 cores with three seeds, 1000 about 2 h
REPLAYS_ALL=${REPLAYS_ALL:-300}
# first the claim (minutes): LSH (pca2) against the loss-based search, full training of the 8 initial
# configurations and a random pick of them, at the cheapest schedule, the paper's (e0 = ei = 3) and
# the latest, with the training noise and the signals (1000 search seeds, ~12 min); then every method
# at every setting. Each resumes where it stopped (its --out keeps the settings replayed so far).
SETTINGS=(--setting 1/1 --setting 1/2 --setting 2/1 --setting 2/2 --setting 3/1 --setting 3/2 --setting 3/3
          --setting 4/1 --setting 4/2)
for what in claim all; do
  if [ $what = claim ]; then
    dir=$CLAIM; args=(--methods lsh-pca2,loss,full,random --setting 1/1 --setting 3/3 --setting 4/2 --no-full-curve
                      --seeds 1000)
  else
    dir=$OUT; args=("${SETTINGS[@]}" --seeds "$REPLAYS_ALL")
  fi
  # (done by an earlier run: a replay.json of this many training seeds, and its summary)
  if [ -f "$dir/summary.md" ] && "$BIN/python" -c 'import json, sys
sys.exit(json.load(open(sys.argv[1])).get("table_seeds") != int(sys.argv[2]))' "$dir/replay.json" "$SEEDS" 2>/dev/null
  then continue; fi
  mkdir -p "$dir"
  SECONDS=0
  "$BIN/lshx" study replay "$TABLE" --table "$NAME" "${args[@]}" --workers "$WORKERS" --out "$dir" --quiet \
    > "$dir/replay.txt"
  echo "replay: $SECONDS s with $WORKERS workers" | tee -a "$dir/replay.txt"
  "$BIN/python" scripts/replay_summary.py "$dir/replay.json" > "$dir/summary.md"
done
echo "done: $TABLE, $CLAIM/ and $OUT/{table.txt,replay.txt,replay.json,summary.md,regret.png,rho.png,curves.png}"
