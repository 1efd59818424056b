#!/usr/bin/env bash
# A GS-24 table (or one training seed of it) on a lent GPU, the machine as it is (Python 3.12,
# torch + CUDA, no hyperopt or optuna, nothing to download): imports checked first, lshx built in
# place and run as `python3 -m lshx` (no install), the whole call within BUDGET_S (460 s, under
# the device's 8 minutes), resumable on a warm machine (runs/ stays between calls), and the run DB
# snapshotted into $OUT every SNAP_S seconds while it trains (no lease, no checkpoints), so a
# call stopped at its limit still returns every finished epoch.
#   bash scripts/gpu_table.sh [P]          the paper preset (1500 units), P epochs (default 8)
#   PRESET=small SEED=1 bash scripts/gpu_table.sh 12
#       seed 1 of docs/tables/gs24-small-P12 on the GPU (starts from the committed table or its
#       partial snapshot; copy the seed's rows back with scripts/merge_table_seed.py)
#   env: BUDGET_S (460), SNAP_S (30), WORKERS (4), STATE (h; both for the small table), PRESET
#        (paper), SEED (every seed 0 .. SEEDS-1 when unset), SEEDS (1), DEVICE (cuda), OUT (gpu-table)
set -uo pipefail
P=${1:-8}
OUT=${OUT:-gpu-table} BUDGET_S=${BUDGET_S:-460} SNAP_S=${SNAP_S:-30} WORKERS=${WORKERS:-4}
PRESET=${PRESET:-paper} DEVICE=${DEVICE:-cuda} SEEDS=${SEEDS:-1} SEED=${SEED:-}
STATE=${STATE:-$([ "$PRESET" = small ] && echo both || echo h)}
NAME=gs24-$PRESET-P$P
DB=runs/gpu-table.sqlite
mkdir -p "$OUT" runs
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
START=$(date +%s)
DEADLINE=$(( START + BUDGET_S ))
log() { echo "== [$(( $(date +%s) - START )) s] $*" | tee -a "$OUT/summary.txt"; }
log "imports"
python3 - <<'PY' 2>&1 | tee -a "$OUT/summary.txt" || exit 1
import importlib, sys
missing = [m for m in ("torch", "numpy", "scipy", "click") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"missing: {', '.join(missing)} (nothing can be installed on the lent machine)")
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "devices", torch.cuda.device_count())
PY
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ "$DEVICE" != cpu ]; then
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; date -u; } > "$OUT/gpu.txt" 2>&1
  if python3 -c "from lshx import ops; assert ops.cuda_version() > 0" 2>/dev/null; then
    log "the CUDA build is already there"
  else
    log "build"
    . benchmarks/gpu_build.sh || exit 1
  fi
fi
if [ ! -f "$DB" ]; then  # a seed of a committed table starts from its newest committed state
  for f in "docs/tables/$NAME.partial.sqlite" "docs/tables/$NAME.sqlite"; do
    if [ -f "$f" ]; then cp "$f" "$DB"; log "starting from $f"; break; fi
  done
fi
LEFT=$(( DEADLINE - $(date +%s) - 20 ))  # (20 s for the last snapshot)
if [ "$LEFT" -lt 30 ]; then log "no time left to train"; exit 0; fi
SEED_OPT=$([ -n "$SEED" ] && echo "--only-seed $SEED" || echo "--seeds $SEEDS")
log "table $NAME ($SEED_OPT): $WORKERS workers on $DEVICE, state $STATE, for at most $LEFT s (resumes $DB)"
# timeout signals the whole process group (the workers too); the DB stays consistent and resumes
timeout "$LEFT" python3 -m lshx study table ptb-lstm --space gs24 --preset "$PRESET" --final-epochs "$P" \
  --state "$STATE" --device "$DEVICE" --executor process --workers "$WORKERS" $SEED_OPT \
  --db "$DB" --name "$NAME" --resume > "$OUT/table.log" 2>&1 &
TABLE=$!
snapshot() {  # the run DB as it is now, gzipped, under $OUT (atomic: the old one or the new one)
  python3 -m lshx study snapshot "$DB" "$OUT/.snap.sqlite" > /dev/null 2>&1 && \
    gzip -c "$OUT/.snap.sqlite" > "$OUT/.snap.gz" && mv "$OUT/.snap.gz" "$OUT/$NAME.sqlite.gz"
  rm -f "$OUT/.snap.sqlite"
}
while kill -0 "$TABLE" 2>/dev/null; do
  sleep "$SNAP_S"
  [ -f "$DB" ] && snapshot
done
wait "$TABLE"
log "table exit status $? (124: stopped at the time limit; rerun to resume)"
tail -5 "$OUT/table.log" | tee -a "$OUT/summary.txt"
snapshot
python3 - "$OUT/$NAME.sqlite.gz" "$NAME" "$P" <<'PY' | tee -a "$OUT/summary.txt"
import gzip, os, shutil, sqlite3, sys, tempfile
src, name, P = sys.argv[1:]
tmp = os.path.join(tempfile.mkdtemp(), "t.sqlite")
with gzip.open(src) as g, open(tmp, "wb") as f:
    shutil.copyfileobj(g, f)
with sqlite3.connect(tmp) as c:
    for (search,) in c.execute("SELECT name FROM searches WHERE name LIKE ? ORDER BY name", (f"{name}-t%",)):
        keys = [k for (k,) in c.execute("SELECT eval_key FROM candidates WHERE search = ?", (search,))]
        done = {k for (k, e) in c.execute("SELECT eval_key, max(epoch) FROM evals GROUP BY eval_key") if e >= int(P)}
        tests = {k for (k,) in c.execute("SELECT eval_key FROM tests")}
        print(f"{search}: {len(keys)} runs, {sum(k in done for k in keys)} trained to P = {P}, "
              f"{len(tests & set(keys))} with a test ppl")
print(f"{src}: {os.path.getsize(src) / 2**20:.1f} MiB")
PY
log "done"
