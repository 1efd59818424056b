"""Where a table epoch's time goes (docs/lyapunov.md): one whole PTB-16% training epoch of the
small preset at density 0.33, its validation, and the three spectra a table records after it
(h, hc and h with the aligned warm-up), each spectrum also with a float64 tangent; one thread, as
a table's worker. Run with the table paused (kill -STOP) so that the timings are the machine's.

    OMP_NUM_THREADS=1 python scripts/table_epoch_split.py
"""
import json
import time

import torch

from lshx.data import load_split
from lshx.lyapunov import LSConfig, model_spectrum, sample_windows
from lshx.train import TrainConfig, Trainer


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    torch.set_num_threads(1)
    cfg = TrainConfig.from_preset("ptb-lstm", "small", epochs=12, seed=1, dst={"density": 0.33})
    tr = Trainer(cfg, quiet=True, progress=False)
    out = {"train_s": timed(tr.train_epoch), "valid_s": timed(lambda: tr.evaluate("valid"))}
    ids, _ = load_split(None, "valid", tr.corpus.vocab)
    tokens = sample_windows(ids, 2, 45)
    for label, over in (("h", {}), ("hc", {"state": "hc"}), ("h-orth", {"warmup_mode": "orthonormalize"})):
        for tangent in (None, "float64"):
            key = label + ("" if tangent is None else " float64")
            out[key + "_s"] = timed(lambda: model_spectrum(tr.model, tokens, LSConfig(tangent_dtype=tangent, **over)))
    out["spectra_s"] = sum(out[f"{x}_s"] for x in ("h", "hc", "h-orth"))
    print(json.dumps({k: round(v, 2) for k, v in out.items()}))


if __name__ == "__main__":
    main()
