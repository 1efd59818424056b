"""Correlation study: does the early LS distance (or the early validation perplexity)
rank configurations like their final test perplexity does?

N random configurations are trained fully (the search's 'full' strategy, spectra at every
epoch, all in the run DB, so the study resumes); then for each early epoch e we report
Spearman rho(distance at e, final test ppl) and rho(val ppl at e, final test ppl) with
bootstrap confidence intervals.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional

import numpy as np
from scipy.stats import rankdata, spearmanr

from lshx.search.executors import Executor
from lshx.search.config import SearchConfig
from lshx.search.engine import Search, run_search
from lshx.search.schedule import distances
from lshx.search.rundb import RunDB


def bootstrap_spearman(x: List[float], y: List[float], reps: int = 2000, seed: int = 0,
                       level: float = 0.95) -> Dict[str, Optional[float]]:
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3:
        return {"rho": None, "lo": None, "hi": None, "n": int(len(x))}
    rho = float(spearmanr(x, y).statistic)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), (reps, len(x)))
    distinct = np.array([len(np.unique(row)) for row in idx])
    idx = idx[distinct >= 3]
    # Spearman = Pearson of the (average) ranks, for every resample at once
    rx, ry = rankdata(x[idx], axis=1), rankdata(y[idx], axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (rx * ry).sum(axis=1) / np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    boots = r[np.isfinite(r)]
    a = (1 - level) / 2
    lo, hi = (float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a))) if len(boots) else (None, None)
    return {"rho": rho, "lo": lo, "hi": hi, "n": int(len(x))}


def correlation_study(cfg: SearchConfig, db_path, executor: Executor, name: str, resume: bool = False,
                      quiet: bool = False, early_epochs: Optional[List[int]] = None, wait: bool = False) -> dict:
    cfg.strategy = "full"
    run_search(cfg, db_path, executor, name=name, resume=resume, quiet=quiet, wait=wait)
    db = RunDB(db_path)
    try:
        search = Search(cfg, db, executor, name, quiet=True)
        cands = {c["cid"]: c for c in db.candidates(name)}
        ids = sorted(c for c in cands if cands[c]["origin"] != "dense")
        tests = search.test_perplexities([cands[c] for c in ids])
        final = dict(zip(ids, tests))
        dense_ev = search.evals(cands[Search.DENSE])
        cand_ev = {c: search.evals(cands[c]) for c in ids}
        rows = []
        for e in early_epochs or list(range(1, min(cfg.final_epochs, 6) + 1)):
            if e not in dense_ev:
                continue
            dist = distances(cfg.distance if cfg.distance != "loss" else "pca2", dense_ev, cand_ev, e, ids)
            val = {c: (cand_ev[c][e]["val_ppl"] if e in cand_ev[c] else math.inf) for c in ids}
            y = [final[c] for c in ids]
            rows.append({"epoch": e,
                         "ls_distance": bootstrap_spearman([dist[c] for c in ids], y, seed=e),
                         "val_ppl": bootstrap_spearman([val[c] for c in ids], y, seed=1000 + e)})
        return {"name": name, "n": len(ids), "final_epochs": cfg.final_epochs, "distance": cfg.distance,
                "final_test_ppl": {str(c): final[c] for c in ids}, "epochs": rows}
    finally:
        db.close()
