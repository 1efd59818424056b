"""The benchmarks of benchmarks/gpu_check.sh in one process: each case is appended to
$OUT/bench.jsonl as soon as it finishes (a time-out still returns what ran), with its own
time limit, and a failing case is recorded and the rest go on.

Each case is what the matching `lshx bench ...` command runs (lshx.studies.bench), on CUDA."""
from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback

import torch

from lshx.studies import bench

OUT = os.environ.get("OUT", "gpu-results")


class CaseTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise CaseTimeout()


def run(label: str, limit_s: int, fn, *args, **kwargs) -> None:
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(limit_s)
    t0 = time.perf_counter()
    try:
        rec = {"case": label, **fn(*args, **kwargs)}
    except CaseTimeout:
        rec = {"case": label, "error": f"timed out after {limit_s} s"}
    except Exception as exc:  # noqa: BLE001 - recorded, the next case runs
        rec = {"case": label, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-1500:]}
    finally:
        signal.alarm(0)
    rec["wall_s"] = round(time.perf_counter() - t0, 2)
    with open(os.path.join(OUT, "bench.jsonl"), "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(json.dumps({k: v for k, v in rec.items() if k != "trace"}), flush=True)


def main(which: str) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 everywhere: the CPU numbers are fp32 too
    dev = "cuda"
    if which in ("all", "train"):
        run("train-epoch ptb-lstm paper", 150, bench.train_epoch_case, "ptb-lstm", "paper", 0.33, 10, device=dev)
        run("train-epoch ptb-lstm small", 60, bench.train_epoch_case, "ptb-lstm", "small", 0.33, 20, device=dev)
        run("train-epoch ptb-rhn small", 60, bench.train_epoch_case, "ptb-rhn", "small", 0.472, 10, device=dev)
    if which in ("all", "kernels"):
        for d in (0.33, 0.1):
            run(f"matmul inference d={d}", 30, bench.matmul_case, 6000, 1500, 20, d, dev, path="csr")
            run(f"matmul train d={d}", 30, bench.matmul_case, 6000, 1500, 20, d, dev, train=True, path="csr")
            run(f"recurrence d={d}", 30, bench.recurrence_case, 1500, 20, 35, d, dev)
        run("recurrence d=0.5 (global-memory path)", 30, bench.recurrence_case, 1500, 20, 35, 0.5, dev)
    if which == "recurrence":
        for d in (0.05, 0.1, 0.2, 0.25, 0.33):
            run(f"recurrence d={d}", 30, bench.recurrence_case, 1500, 20, 35, d, dev)
        run("train-epoch ptb-lstm paper 30", 150, bench.train_epoch_case, "ptb-lstm", "paper", 0.33, 30, device=dev)
    if which in ("all", "kernels", "ls"):
        for qr in ("householder", "cholqr2"):
            run(f"ls-step H=1500 {qr}", 60, bench.ls_step_case, 1500, 2, reference=False, device=dev, qr=qr)
        for qr in ("householder", "batched", "cholqr2"):
            run(f"ls-step H=256 k=64 K=16 {qr}", 30, bench.ls_step_case, 256, 2, 64, 16, reference=False,
                device=dev, qr=qr)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    main(sys.argv[1] if len(sys.argv) > 1 else "all")
