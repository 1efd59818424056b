"""Correlation study: bootstrap Spearman and an end-to-end smoke study."""
import math

import pytest

from lshx.search.executors import SerialExecutor
from lshx.search.config import SearchConfig
from lshx.studies.correlation import bootstrap_spearman, correlation_study


def test_bootstrap_spearman_known_cases():
    x = [1, 2, 3, 4, 5, 6, 7, 8]
    up = bootstrap_spearman(x, [10, 20, 25, 40, 41, 60, 70, 90])
    assert up["rho"] == pytest.approx(1.0) and up["lo"] == pytest.approx(1.0) and up["n"] == 8
    down = bootstrap_spearman(x, [9, 8, 7, 6, 5, 4, 3, 2])
    assert down["rho"] == pytest.approx(-1.0) and down["hi"] == pytest.approx(-1.0)
    assert bootstrap_spearman([1, math.inf, 3], [1, 2, 3])["rho"] is None  # too few finite points
    mixed = bootstrap_spearman(x, [3, 1, 4, 1.5, 5, 9, 2, 6])
    assert mixed["lo"] <= mixed["rho"] <= mixed["hi"]


def test_correlation_study_smoke(tiny_data, tmp_path):
    cfg = SearchConfig.from_preset("ptb-lstm", "smoke", hpo="random", n=4, final_epochs=3, e0=1, data=tiny_data,
                                   max_batches=4)
    res = correlation_study(cfg, tmp_path / "c.sqlite", SerialExecutor(threads=1), "c", quiet=True)
    assert res["n"] == 4 and len(res["final_test_ppl"]) == 4
    assert [r["epoch"] for r in res["epochs"]] == [1, 2, 3]
    for r in res["epochs"]:
        assert set(r) == {"epoch", "ls_distance", "val_ppl"}
    for r in res["epochs"]:
        for sig in ("ls_distance", "val_ppl"):
            assert r[sig]["rho"] is None or -1 <= r[sig]["rho"] <= 1
    # the test perplexity is the best-validation checkpoint's: the best validation ppl ranks it
    from scipy.stats import spearmanr

    from lshx.search.rundb import RunDB

    db = RunDB(tmp_path / "c.sqlite")
    best_val = {str(c["cid"]): min(e["val_ppl"] for e in db.evals(c["eval_key"], 0).values())
                for c in db.candidates("c") if c["origin"] != "dense"}
    db.close()
    ids = sorted(best_val)
    assert spearmanr([best_val[i] for i in ids], [res["final_test_ppl"][i] for i in ids]).statistic > 0.5
