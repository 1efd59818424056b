# Settings shared by scripts/table1.sh and scripts/fig3.sh (sourced, not run).
# On a GPU: RUNS=runs-gpu DEVICE=cuda WORKERS=1 PRESET=small MAX_BATCHES=0 (0: whole epochs).
R=${RUNS:-runs}  # results folder: use another one for GPU runs
DEVICE=${DEVICE:-cpu} WORKERS=${WORKERS:-2} PRESET=${PRESET:-small} MAX_BATCHES=${MAX_BATCHES:-150}
CAP=$([ "$MAX_BATCHES" = 0 ] || echo "--max-batches $MAX_BATCHES")
# every search: n = 8, e0 = 2, ei = 1, P = 5; every config trained alone: the same 5 epochs
COMMON="--preset $PRESET --n 8 --e0 2 --ei 1 --final-epochs 5 $CAP --device $DEVICE --executor process --workers $WORKERS"
TRAIN="--preset $PRESET --epochs 5 $CAP --device $DEVICE"
# Selfish-RNN's README command for the stacked LSTM: uniform (per-layer) init, magnitude
# death, random growth, no redistribution, death rate 0.8.
SELFISH="--init uniform --death magnitude --growth random --redistribution none --death-rate 0.8"
