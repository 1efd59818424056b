#!/usr/bin/env bash
# Issue 14's experiment, end to end and resumable: trains the GS-24 table (whole PTB-16%
# epochs, P = 12, small preset; hours on 2 cores: rerun to resume), a commit-ready copy of its
# run DB in docs/tables/ (spectra and perplexities, no checkpoints), replays 1000 searches per
# setting on it and writes the figures, replay.json and the markdown tables of docs/results.md (f).
#   nice -n 10 bash scripts/gs24.sh            (WORKERS=2 by default; lshx from .venv or PATH)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$( [ -x .venv/bin/lshx ] && echo .venv/bin || dirname "$(command -v lshx)" )}
WORKERS=${WORKERS:-2}
NAME=gs24-small-P12
DB=runs/gs24.sqlite
TABLE=docs/tables/$NAME.sqlite
OUT=docs/figures/replay
export OMP_NUM_THREADS=1
"$BIN/lshx" study table ptb-lstm --space gs24 --preset small --final-epochs 12 --state both \
  --executor process --workers "$WORKERS" --db "$DB" --name "$NAME" --resume
# one self-contained file (no -wal, rollback journal: reading it read-only writes nothing beside it),
# without the lease of the process that trained it
rm -f "$TABLE"
"$BIN/python" - "$DB" "$TABLE" <<'PY'
import sqlite3, sys
sqlite3.connect(sys.argv[1]).execute("VACUUM INTO ?", (sys.argv[2],))
with sqlite3.connect(sys.argv[2]) as c:
    c.execute("DELETE FROM leases")
c = sqlite3.connect(sys.argv[2]); c.execute("VACUUM"); c.execute("PRAGMA journal_mode=DELETE"); c.close()
PY
mkdir -p "$OUT"
"$BIN/lshx" study table ptb-lstm --space gs24 --preset small --final-epochs 12 --state both \
  --db "$DB" --name "$NAME" --resume --quiet > "$OUT/table.txt"  # (finished: prints its summary)
SECONDS=0
"$BIN/lshx" study replay "$TABLE" --table "$NAME" --workers "$WORKERS" --out "$OUT" --quiet > "$OUT/replay.txt"
echo "replay: $SECONDS s with $WORKERS workers" | tee -a "$OUT/replay.txt"
"$BIN/python" scripts/replay_summary.py "$OUT/replay.json" > "$OUT/summary.md"
echo "done: $TABLE, $OUT/{table.txt,replay.txt,replay.json,summary.md,regret.png,rho.png,curves.png}"
