#!/usr/bin/env bash
# Issue 14, item 7, on a lent GPU (the machine as it is: no hyperopt, nothing to download): the
# GS-24 table at the paper preset (1500 units, density 0.33) for P epochs, trained for at most
# MINUTES, resumable: a warm machine keeps runs/ between calls, so a second call goes on where
# the first stopped. Its run DB comes back gzipped in $OUT (spectra and perplexities, no
# checkpoints); replay it here once every configuration is finished:
#   gunzip -k gpu-table/gs24-paper-P8.sqlite.gz
#   lshx study replay gpu-table/gs24-paper-P8.sqlite --table gs24-paper-P8 --out docs/figures/replay-paper
# Usage, from the repository root:  bash scripts/gpu_table.sh [P]
#   env: MINUTES (default 7), WORKERS (training processes sharing the GPU, default 4),
#        STATE (h or both, default h: the hc spectrum at N = 6000 costs ~8x the h one),
#        PRESET (paper), DEVICE (cuda), OUT (gpu-table)
set -uo pipefail
P=${1:-8}
OUT=${OUT:-gpu-table} MINUTES=${MINUTES:-7} WORKERS=${WORKERS:-4} STATE=${STATE:-h}
PRESET=${PRESET:-paper} DEVICE=${DEVICE:-cuda}
NAME=gs24-$PRESET-P$P
DB=runs/gpu-table.sqlite
mkdir -p "$OUT" runs
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
START=$(date +%s)
log() { echo "== [$(( $(date +%s) - START )) s] $*" | tee -a "$OUT/summary.txt"; }
if [ "$DEVICE" != cpu ]; then
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; date -u; } > "$OUT/gpu.txt" 2>&1
  if python3 -c "from lshx import ops; assert ops.cuda_version() > 0" 2>/dev/null; then
    log "the CUDA build is already there"
  else
    log "build"
    . benchmarks/gpu_build.sh || exit 1
  fi
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
log "table $NAME: $WORKERS workers on $DEVICE, state $STATE, for at most $MINUTES min (resumes $DB)"
# timeout signals the whole process group (the workers too); the DB stays consistent and resumes
timeout "${MINUTES}m" python3 -m lshx.cli.main study table ptb-lstm --space gs24 --preset "$PRESET" \
  --final-epochs "$P" --state "$STATE" --device "$DEVICE" --executor process --workers "$WORKERS" \
  --db "$DB" --name "$NAME" --resume > "$OUT/table.log" 2>&1
log "table exit status $? (124: stopped at the time limit; rerun to resume)"
tail -5 "$OUT/table.log" | tee -a "$OUT/summary.txt"
python3 - "$DB" "$OUT/$NAME.sqlite.gz" "$NAME" "$P" <<'PY' | tee -a "$OUT/summary.txt"
import gzip, os, shutil, sqlite3, sys, tempfile
src, dst, name, P = sys.argv[1:]
tmp = os.path.join(tempfile.mkdtemp(), "t.sqlite")
sqlite3.connect(src).execute("VACUUM INTO ?", (tmp,))
with sqlite3.connect(tmp) as c:
    c.execute("DELETE FROM leases")
    keys = [k for (k,) in c.execute("SELECT eval_key FROM candidates WHERE search = ?", (f"{name}-t0",))]
    done = {k for (k, e) in c.execute("SELECT eval_key, max(epoch) FROM evals GROUP BY eval_key") if e >= int(P)}
    tests = {k for (k,) in c.execute("SELECT eval_key FROM tests")}
    epochs = c.execute("SELECT count(*) FROM evals").fetchone()[0]
with open(tmp, "rb") as f, gzip.open(dst, "wb") as g:
    shutil.copyfileobj(f, g)
print(f"{dst}: {len(keys)} candidates, {sum(k in done for k in keys)} trained to P = {P}, {len(tests & set(keys))} "
      f"with a test ppl, {epochs} epochs recorded; {os.path.getsize(dst) / 2**20:.1f} MiB")
PY
log "done"
