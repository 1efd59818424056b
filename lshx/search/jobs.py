"""The unit of work of a search: bring one candidate to a target epoch.

After each epoch the candidate's validation perplexity and Lyapunov spectrum are written
into its own checkpoint (atomically) before anything else happens, so a killed job loses
at most the epoch it was in, and a rerun continues from the last finished epoch.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict
import math
import os
import time
from pathlib import Path
from typing import Dict

import torch

_CORPORA: Dict[str, object] = {}


def corpus(data):
    """The corpus of a data folder (the default one for None), loaded once per process."""
    from lshx.data import default_data_dir, load_corpus

    key = str(Path(data if data is not None else default_data_dir()).resolve())
    if key not in _CORPORA:
        _CORPORA[key] = load_corpus(key)
    return _CORPORA[key]


@contextmanager
def _threads(n):
    """The job's intra-op thread count (the search's), restored after: a serial search leaves
    the caller's setting as it found it."""
    prev = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        if n:
            torch.set_num_threads(prev)


def advance(job: dict) -> dict:
    """job: {key, train (TrainConfig dict), ls (LSConfig dict or None), target, dir, threads,
    ls_extra (optional {label: LSConfig overrides}: more spectra per epoch, e.g. the hc state),
    node (optional: where it runs, recorded with each epoch), test (optional: also return the
    test perplexity of the best-validation checkpoint, as test_ppl)}."""
    with _threads(job.get("threads")):
        return _advance(job)


def test_perplexity(job: dict) -> float:
    """Test perplexity of a candidate's best-validation checkpoint."""
    with _threads(job.get("threads")):
        return _test_perplexity(job)


def _advance(job: dict) -> dict:
    from lshx.checkpoint import load_checkpoint
    from lshx.data import load_split
    from lshx.lyapunov import LSConfig, model_spectrum, sample_windows
    from lshx.train import TrainConfig, Trainer

    cfg = TrainConfig.from_dict(job["train"])
    ls = LSConfig(**job["ls"]) if job.get("ls") else None
    d = Path(job["dir"])
    last, best = d / "last.pt", d / "best.pt"
    words = corpus(cfg.data)
    trainer = Trainer(cfg, corpus=words, quiet=True, progress=False)
    evals = []
    if last.exists():
        ck = load_checkpoint(last)
        trainer.restore(ck)
        evals = list(ck.get("lsh_evals", []))
    tokens = None
    if ls is not None:
        ids, _ = load_split(cfg.data, "valid", words.vocab)
        tokens = sample_windows(ids, ls.samples, ls.warmup + ls.steps, ls.seed)
    trained = 0
    while trainer.epoch < job["target"] and not trainer.diverged:
        spec = {}

        def measure(tr, spec=spec):
            if tokens is not None:
                res = model_spectrum(tr.model, tokens, ls)
                spec["spectrum"] = res.spectrum
                for label, over in (job.get("ls_extra") or {}).items():
                    spec.setdefault("extra", {})[label] = \
                        model_spectrum(tr.model, tokens, LSConfig(**{**asdict(ls), **over})).spectrum

        t0 = time.perf_counter()
        r = trainer.run_epoch(best_path=best, after_validation=measure)
        trained += 1
        spectrum = spec.get("spectrum")
        # NaN or +inf is divergence; a collapsed layer gives finite, very negative exponents
        diverged = trainer.diverged or (spectrum is not None and not all(math.isfinite(v) for v in spectrum))
        evals.append({"epoch": trainer.epoch, "val_ppl": r["val_ppl"], "spectrum": spectrum, "diverged": diverged,
                      "train_loss": r.get("train_loss"), "extra": spec.get("extra"),
                      "seconds": time.perf_counter() - t0, "created": time.time(), "pid": os.getpid(),
                      "node": job.get("node")})  # (the Ray node it ran on, under --executor ray)
        trainer.save(last, extra={"lsh_evals": evals})
        if diverged:
            break
    out = {"key": job["key"], "evals": evals, "trained": trained, "dir": str(d)}
    if job.get("test"):  # while the checkpoint is here: a run DB moved without its checkpoints keeps it
        diverged = trainer.diverged or any(e["diverged"] for e in evals)
        out["test_ppl"] = _best_test_ppl(trainer, best) if best.exists() else (math.inf if diverged else None)
    return out


def _test_perplexity(job: dict) -> float:
    from lshx.train import TrainConfig, Trainer

    cfg = TrainConfig.from_dict(job["train"])
    trainer = Trainer(cfg, corpus=corpus(cfg.data), quiet=True, progress=False)
    return _best_test_ppl(trainer, Path(job["dir"]) / "best.pt")


def _best_test_ppl(trainer, best: Path) -> float:
    """Test perplexity of the checkpoint `best`, loaded into the trainer's model."""
    from lshx.train import load_model, perplexity

    _, ck = load_model(best)
    trainer.model.load_state_dict(ck["state_dict"])
    trainer.model.set_masks(ck["masks"])
    return perplexity(trainer.evaluate("test"))
