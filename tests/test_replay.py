"""Replays on a table take the live search's decisions; a replay is deterministic."""
import json
import math
import subprocess
import sys

import pytest

from lshx.studies.replay import Method, default_methods, replay, replay_one
from lshx.search.executors import SerialExecutor
from lshx.search.hpo import GridProposer
from lshx.search.config import SearchConfig
from lshx.search.engine import run_search
from lshx.studies.table import load_table


@pytest.mark.parametrize("hpo,distance", [("grid", "pca2"), ("tpe", "pca2"), ("grid", "loss"), ("tpe", "raw")])
def test_replay_takes_the_live_searchs_decisions(table_db, tmp_path, hpo, distance):
    """n = 6 of 8: an elimination, an insertion proposed by the HPO method from the survivors,
    its catch-up, a second elimination with it in the PCA fit, the final pick. The live
    loss-based search computes no spectrum and trains its own runs: the same training seeds
    must give it the table's perplexities."""
    from lshx.search.hpo import HyperoptProposer

    db, data = table_db
    table = load_table(db, "t")
    pool = [c for c in table.configs if c is not None]
    proposer = GridProposer("ptb-lstm", points=pool) if hpo == "grid" else HyperoptProposer("tpe", configs=pool)
    cfg = SearchConfig.from_preset("ptb-lstm", "smoke", data=data, max_batches=3, n=6, e0=2, ei=1, final_epochs=4,
                                   hpo=hpo, train_seed=0, seed=5, distance=distance)
    live = run_search(cfg, tmp_path / "live.sqlite", SerialExecutor(threads=1), quiet=True, proposer=proposer)
    rep = replay_one(table, Method(distance, distance=distance), hpo, 6, 2, 1, 5, train_seed=0)
    assert len(live["rounds"]) == len(rep["rounds"]) == 2 and live["rounds"][0]["inserted"]
    for a, b in zip(live["rounds"], rep["rounds"]):
        assert (a["epoch"], a["alive"], a["eliminated"], a["inserted"]) == \
            (b["epoch"], b["alive"], b["eliminated"], b["inserted"])
        for k in a["distances"]:
            assert a["distances"][k] == pytest.approx(b["distances"][k], rel=1e-9, abs=1e-12)
    assert table.index(live["best"]["config"]) == rep["pick"]
    assert live["best"]["test_ppl"] == pytest.approx(rep["test_ppl"], rel=1e-9)
    assert live["train_epochs"] == rep["train_epochs"]


@pytest.mark.parametrize("method", [Method("lsh-raw", distance="raw"), Method("loss", distance="loss"),
                                    Method("full", strategy="full"), Method("random", strategy="random")])
@pytest.mark.parametrize("hpo", ["grid", "tpe"])
def test_a_replay_is_deterministic(table_db, method, hpo):
    table = load_table(table_db[0], "t")
    a = replay_one(table, method, hpo, 6, 2, 1, 3)
    b = replay_one(table, method, hpo, 6, 2, 1, 3)
    assert a == b
    assert 1 <= a["pick"] < len(table.configs) and math.isfinite(a["test_ppl"])


def test_replay_summary_and_cli(table_db, tmp_path):
    db, _ = table_db
    table = load_table(db, "t")
    res = replay(table, [Method("lsh-pca2"), Method("loss", distance="loss"), Method("random", strategy="random"),
                         Method("full", strategy="full")], ("grid",), n=6, e0s=(1, 2), eis=(1,), seeds=12)
    assert {(m["method"], m["e0"]) for m in res["methods"]} == {("lsh-pca2", 1), ("lsh-pca2", 2), ("loss", 1),
                                                                 ("loss", 2), ("random", None), ("full", None)}
    for m in res["methods"]:
        assert m["seeds"] == 12 and m["regret_mean"] >= 0 and 0 <= m["p_best"] <= 1
        assert m["diverged_picks"] == 0 and 1 <= m["distinct_picks"] <= 8
    rnd = [m for m in res["methods"] if m["method"] == "random"][0]
    assert rnd["train_epochs_mean"] == table.final_epochs  # the pick still has to be trained
    full = [m for m in res["methods"] if m["method"] == "full"][0]
    assert full["train_epochs_mean"] == 6 * table.final_epochs  # every initial config trained to P
    # the anytime baseline: k = 1..8 configs trained fully; its k = 6 is the full method itself,
    # and with all 8 trained on one training seed it picks that seed's best validation ppl
    curve = res["full_curve"]
    assert [c["k"] for c in curve] == list(range(1, 9)) and curve[5]["regret_mean"] == full["regret_mean"]
    assert curve[-1]["train_epochs"] == 8 * table.final_epochs
    mean_test = [table.mean_test(i) for i in range(9)]
    for t in range(2):
        pick = min(range(1, 9), key=lambda i: (min(e["val_ppl"] for e in table.evals[t][i].values()), i))
        assert curve[-1]["regret_per_seed"][t] == pytest.approx(mean_test[pick] - min(mean_test[1:]))
    for m in res["methods"]:
        f = m["full_epochs_same_regret"]
        assert f is None or (f % table.final_epochs == 0 and
                             [c for c in curve if c["train_epochs"] == f][0]["regret_mean"] <= m["regret_mean"])
    assert res["off_plateau"][-1]["runs"] == 16 and len(res["curves"]) == 9  # 8 configs x 2 seeds; dense + 8
    # two training seeds: every method also replayed on each seed alone, with a t-interval across them
    for m in res["methods"]:
        assert len(m["regret_per_seed"]) == 2
        lo, hi = m["regret_t_ci"]
        assert lo <= sum(m["regret_per_seed"]) / 2 <= hi
        assert m["regret_ci"][0] <= m["regret_mean"] <= m["regret_ci"][1]
    for d in res["differences"]:
        assert d["p_a_better"] + d["p_b_better"] + d["p_tie"] == pytest.approx(1.0)
        assert d["includes_training_noise"] and len(d["per_seed"]) == 2
        assert d["verdict"] in ("not distinguishable", "a picks better", "b picks better")
        if not (d["t_ci_excludes_zero"] and d["ci_excludes_zero"]):
            assert d["verdict"] == "not distinguishable"
    assert {(d["a"], d["b"]) for d in res["differences"]} == {("lsh-pca2", "loss"), ("lsh-pca2", "random"),
                                                              ("lsh-pca2", "full"), ("loss", "random"),
                                                              ("loss", "full")}
    assert len([d for d in res["differences"] if d["b"] == "loss"]) == 2  # once per setting (e0 = 1, 2)
    rho = res["rho"]["epochs"]
    assert [r["epoch"] for r in rho] == [1, 2, 3, 4] and len(rho[0]["val_ppl"]["per_seed"]) == 2
    assert set(rho[0]["minus_val_ppl"]) == {"lsh-pca2"}
    # a difference of zero width (every signal tied, as at epoch 1 where runs of one init are
    # identical) examines nothing and is not counted; each other one has two intervals
    wide = [r["epoch"] for r in rho if r["minus_val_ppl"]["lsh-pca2"]["hi"] > r["minus_val_ppl"]["lsh-pca2"]["lo"]]
    assert 1 <= len(wide) < 4 and 1 not in wide
    assert res["rho"]["pairs_examined"] == len(wide) and res["rho"]["intervals_examined"] == 2 * len(wide)
    # held out: each seed's val ppl against the other seed's test ppl (scipy, independently)
    from scipy.stats import spearmanr

    last = rho[-1]
    want = [spearmanr([table.evals[t][i][4]["val_ppl"] for i in range(1, 9)],
                      [table.test[1 - t][i] for i in range(1, 9)]).statistic for t in range(2)]
    assert last["held_out"]["val_ppl"]["per_seed"] == pytest.approx(want)
    d = last["minus_val_ppl_held_out"]["lsh-pca2"]
    assert d["diff"] == pytest.approx(last["held_out"]["lsh-pca2"]["rho"] - last["held_out"]["val_ppl"]["rho"])
    noise = res["noise"]
    assert noise["seeds"] == 2 and noise["test_ppl"]["all"]["df"] == 8 and len(noise["per_config"]) == 8
    out = subprocess.run([sys.executable, "-m", "lshx.cli.main", "study", "replay", str(db), "--table", "t",
                          "--n", "6", "--e0", "2", "--ei", "1", "--seeds", "3", "--hpo", "grid",
                          "--methods", "lsh-pca2,loss", "--json", "--quiet", "--out", str(tmp_path / "fig")],
                         capture_output=True, text=True, check=True)
    parsed = json.loads(out.stdout)
    assert parsed["n"] == 6 and len(parsed["methods"]) == 2
    assert all((tmp_path / "fig" / f).exists() for f in ("regret.png", "rho.png", "curves.png", "replay.json"))
    text = subprocess.run([sys.executable, "-m", "lshx.cli.main", "study", "replay", str(db), "--table", "t",
                           "--n", "6", "--e0", "2", "--ei", "1", "--seeds", "3", "--hpo", "grid",
                           "--methods", "lsh-pca2,loss,random", "--quiet"], capture_output=True, text=True, check=True)
    assert "sparse runs with val ppl < 450" in text.stdout and "training noise, SD of the final test ppl" in text.stdout
    diff = [ln for ln in text.stdout.splitlines() if ln.startswith("  grid  e0 = 2, ei = 1")]
    assert len(diff) == 1 and "across 2 seeds" in diff[0]
    bad = subprocess.run([sys.executable, "-m", "lshx.cli.main", "study", "replay", str(db), "--table", "t",
                          "--methods", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown method" in bad.stderr and "Traceback" not in bad.stderr


def test_default_methods_follow_what_the_table_recorded(table_db):
    names = [m.name for m in default_methods(load_table(table_db[0], "t"))]
    assert "lsh-pca2" in names and "lsh-pca2-top8" in names and "loss" in names
    assert not any("hc" in n for n in names)  # this table recorded the h spectrum only


def test_a_diverged_pick_is_penalized_not_dropped(table_db):
    import numpy as np

    from lshx.studies.replay_stats import penalized

    table = load_table(table_db[0], "t")
    worst = max(v for t in table.test for v in t if math.isfinite(v))
    assert penalized(table, np.array([1.0, math.inf, math.nan])).tolist() == [1.0, worst, worst]


def test_a_replay_refuses_a_schedule_past_the_tables_epochs(table_db):
    from lshx.errors import ConfigError

    with pytest.raises(ConfigError, match="final-epochs"):
        replay_one(load_table(table_db[0], "t"), Method("lsh-pca2"), "grid", 8, 3, 2, 0)


def test_memo_proposer_answers_as_its_proposer():
    """Replays memoize proposals: the memo must give exactly the inner proposer's answers,
    copies that a caller cannot alter, for every history, exclusion and round seed."""
    from lshx.studies.replay import MemoProposer
    from lshx.search.hpo import HyperoptProposer
    from lshx.search.space import config_hash, grid

    pool = grid("ptb-lstm")
    for make in (lambda: GridProposer("ptb-lstm"), lambda: HyperoptProposer("tpe", configs=pool)):
        memo = MemoProposer(make())
        for rep in range(2):
            for i in range(5):
                history = [(pool[(5 * i + j) % 24], float(j + i)) for j in range(i)]
                exclude = {config_hash(c) for c, _ in history}
                out = memo.propose(history, 3, exclude, i)
                fresh = make()
                assert out == fresh.propose(history, 3, exclude, i)
                assert memo.from_model == getattr(fresh, "from_model", None)
                out[0]["init"] = "changed"
        assert len(memo.memo) == 5
    assert MemoProposer(GridProposer("ptb-lstm")).points == GridProposer("ptb-lstm").points


def test_settings_past_the_tables_epochs_are_skipped_and_said(table_db):
    from lshx.errors import ConfigError

    table = load_table(table_db[0], "t")  # P = 4
    with pytest.raises(ConfigError, match="no setting fits the table's 4 epochs"):
        replay(table, [Method("lsh-pca2")], ("grid",), n=6, e0s=(4,), eis=(2,), seeds=1)
    res = replay(table, [Method("lsh-pca2")], ("grid",), n=6, e0s=(1, 4), eis=(1,), seeds=1)
    assert [(m["e0"], m["ei"]) for m in res["methods"]] == [(1, 1)]
    assert res["skipped_settings"] == [{"e0": 4, "ei": 1, "last_elimination": 5}]


def test_diverged_values_rank_last_in_rho():
    from lshx.studies.replay_stats import last_ranked

    assert last_ranked([3.0, math.inf, None, 1.0, float("nan")]) == [3.0, 4.0, 4.0, 1.0, 4.0]
    assert last_ranked([None, None]) == [1.0, 1.0]


def test_replay_summary_script_on_a_replay(table_db, tmp_path):
    """scripts/replay_summary.py reads what `--out` writes (inf and NaN written as null)."""
    import pathlib

    db, _ = table_db
    subprocess.run([sys.executable, "-m", "lshx.cli.main", "study", "replay", str(db), "--table", "t", "--n", "6",
                    "--e0", "1,2", "--ei", "1", "--seeds", "4", "--methods", "lsh-pca2,loss,full,random",
                    "--quiet", "--out", str(tmp_path)], check=True, capture_output=True)
    json.loads((tmp_path / "replay.json").read_text())  # strict: no Infinity / NaN tokens
    script = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "replay_summary.py"
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "replay.json")], check=True,
                         capture_output=True, text=True).stdout
    assert "| e0=1 ei=1 |" in out and "| e0=2 ei=1 |" in out  # LSH against loss at both settings
    assert "training noise" in out and "[95%, across seeds]" in out
    assert "full training's epochs for that regret" in out and "highest rho" in out
    assert "| 8 | 32 |" in out  # the anytime curve ends with all 8 configurations trained 4 epochs


def test_the_finished_seeds_of_a_table_in_training_replay_alone(table_db, tmp_path):
    """A table whose seed 1 is still training: replayed whole it is refused, pointing at
    --table-seeds; --table-seeds 0 replays seed 0 alone (in spawned workers too), with the
    numbers of the finished table's seed 0; a seed it lacks, or one named twice, is one line."""
    import shutil
    import sqlite3

    from lshx.errors import ConfigError

    db, _ = table_db
    part = tmp_path / "p.sqlite"
    shutil.copy(db, part)
    with sqlite3.connect(part) as con:
        con.execute("UPDATE searches SET status='running', result=NULL WHERE name='t-t1'")
    with pytest.raises(ConfigError, match=r"t-t1 is not finished .*--table-seeds 0\)"):
        load_table(part, "t")
    alone, whole = load_table(part, "t", [0]), load_table(db, "t")
    assert alone.seeds == [0] and alone.evals == whole.evals[:1] and alone.test == whole.test[:1]
    assert load_table(db, "t", [1]).evals == whole.evals[1:]
    with pytest.raises(ConfigError, match=r"has no training seed 3; it has 0, 1"):
        load_table(part, "t", [0, 3])
    with pytest.raises(ConfigError, match="is not finished"):
        load_table(part, "t", [1])
    args = ["--table", "t", "--n", "6", "--e0", "1", "--ei", "1", "--seeds", "6", "--hpo", "grid",
            "--methods", "lsh-pca2,loss", "--no-full-curve", "--quiet"]
    r = subprocess.run([sys.executable, "-m", "lshx.cli.main", "study", "replay", str(part), "--table-seeds", "0",
                        "--workers", "2", "--json", *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["table_seeds"] == 1 and got["training_seeds"] == [0]
    ref = replay(alone, [Method("lsh-pca2"), Method("loss", distance="loss")], ("grid",), n=6, e0s=(1,), eis=(1,),
                 seeds=6, full_curve=False)
    assert [m["regret_mean"] for m in got["methods"]] == pytest.approx([m["regret_mean"] for m in ref["methods"]])
    r = subprocess.run([sys.executable, "-m", "lshx.cli.main", "study", "replay", str(part), *args],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--table-seeds 0" in r.stderr and "Traceback" not in r.stderr
    for bad in ("0,0", "-1", "x"):
        r = subprocess.run([sys.executable, "-m", "lshx.cli.main", "study", "replay", str(part), "--table-seeds",
                            bad, *args], capture_output=True, text=True)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
