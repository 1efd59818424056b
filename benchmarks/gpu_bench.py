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

from lshx.studies import bench, bench_spectrum

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


def precision(tf32: bool) -> str:
    """One precision for every op of a case: TF32 on or off for cuBLAS and for cuDNN (whose RNN
    kernels ignore the cuBLAS switch: torch.backends.cudnn.rnn.fp32_precision, default tf32)."""
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    rnn = getattr(torch.backends.cudnn, "rnn", None)
    if rnn is not None and hasattr(rnn, "fp32_precision"):
        rnn.fp32_precision = "tf32" if tf32 else "ieee"
    return "tf32 (cuBLAS and cuDNN)" if tf32 else "fp32 (TF32 off in cuBLAS and cuDNN)"


def cased(fn, tf32: bool):
    """fn's record with the precision it ran in."""
    def run_in(*args, **kwargs):
        p = precision(tf32)
        return {"precision": p, **fn(*args, **kwargs)}
    return run_in


def main(which: str) -> None:
    dev = "cuda"
    fp32 = lambda fn: cased(fn, False)  # noqa: E731
    if which in ("all", "train"):
        for tf32 in (False, True):  # the training-step table in both precisions
            tag = "tf32" if tf32 else "fp32"
            run(f"train-epoch ptb-lstm paper {tag}", 120, cased(bench.train_epoch_case, tf32), "ptb-lstm", "paper",
                0.33, 10, device=dev, repeats=3)
            run(f"train-epoch ptb-lstm small {tag}", 60, cased(bench.train_epoch_case, tf32), "ptb-lstm", "small",
                0.33, 20, device=dev, repeats=3)
    if which in ("all", "kernels"):
        for d in (0.33, 0.1):
            run(f"matmul inference d={d}", 30, fp32(bench.matmul_case), 6000, 1500, 20, d, dev, path="csr")
            run(f"matmul train d={d}", 30, fp32(bench.matmul_case), 6000, 1500, 20, d, dev, train=True, path="csr")
            run(f"recurrence d={d}", 30, fp32(bench.recurrence_case), 1500, 20, 35, d, dev)
    if which in ("all", "kernels", "ls"):
        variants = (("householder", 1), ("householder", "auto"), ("cholqr2", 1), ("cholqr2", "auto"))
        run("ls-step H=1500 (N = 3000)", 120, fp32(bench_spectrum.ls_step_case), 1500, 2, device=dev, variants=variants,
            steps=4, repeats=3)
        run("ls-step H=256 k=64 K=16", 30, fp32(bench_spectrum.ls_step_case), 256, 2, 64, 16, device=dev,
            variants=variants + (("batched", 1),), steps=8, repeats=3)
    if which == "rhn":  # last, in its own process (gpu_check.sh): the RHN kernels have never run on a GPU
        for tf32 in (False, True):
            run(f"train-epoch ptb-rhn small {'tf32' if tf32 else 'fp32'}", 60, cased(bench.train_epoch_case, tf32),
                "ptb-rhn", "small", 0.472, 10, device=dev, repeats=3)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    main(sys.argv[1] if len(sys.argv) > 1 else "all")
