"""The search: schedule arithmetic, elimination, distances, divergence, resume, executors."""
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from lshx.checkpoint import load_checkpoint
from lshx.search.executors import SerialExecutor, make_executor
from lshx.search.hpo import make_proposer
from lshx.search.config import SearchConfig
from lshx.search.engine import run_search
from lshx.search.schedule import distances, eliminate, plan, selection_epochs
from lshx.search.rundb import RunDB
from lshx.search.space import config_hash, grid


def test_table3_counts():
    # the paper's Table 3 (GS-24): rows e0 = 1..3, columns ei = 1..4
    table = {1: [82, 140, 198, 256], 2: [106, 164, 222, 280], 3: [130, 188, 246, 304]}
    for e0, row in table.items():
        assert [selection_epochs(24, e0, ei) for ei in (1, 2, 3, 4)] == row
    assert plan(24) == [(24, 12, 6), (18, 9, 4), (13, 7, 3), (10, 5, 2), (7, 4, 2), (6, 3, 1), (4, 2, 0)]


def test_grid_has_24_distinct_points():
    g = grid("ptb-lstm")
    assert len(g) == 24 and len({config_hash(c) for c in g}) == 24
    assert {c["death_rate"] for c in g} == {0.8} and {c["death_rate"] for c in grid("ptb-rhn")} == {0.5}


def test_config_hash_is_the_stored_one():
    """The memoized hash is the one every run DB stores: sha1 of the normalized config's JSON
    (keys sorted), 16 hex digits; a config's spelling (a death rate's last digits past the
    6th, a missing default growth) does not change it."""
    import hashlib
    import json
    import random

    from lshx.search.space import normalize, random_config

    rng = random.Random(3)
    for c in grid("ptb-lstm") + grid("ptb-rhn") + [random_config(rng) for _ in range(20)]:
        want = hashlib.sha1(json.dumps(normalize(c), sort_keys=True).encode()).hexdigest()[:16]
        assert config_hash(c) == config_hash(dict(c)) == want
    c = {"init": "ER", "death": "SET", "redistribution": "none", "death_rate": 0.8}
    assert config_hash(c) == config_hash({**c, "growth": "random", "death_rate": 0.80000004})


def test_grid_search_starts_from_seeded_grid_points(tiny_data, tmp_path):
    """With n < 24 a grid search starts from n distinct grid points in an order that depends
    on the seed (a fixed first slice would start every seed from the same uniform corner)."""
    starts = []
    for seed in (0, 1):
        cfg = SearchConfig.from_preset("ptb-lstm", "smoke", data=tiny_data, hpo="grid", n=4, seed=seed,
                                       max_batches=2)
        run_search(cfg, tmp_path / "g.sqlite", SerialExecutor(threads=1), name=f"g{seed}", quiet=True)
        db = RunDB(tmp_path / "g.sqlite")
        initial = [config_hash(c["config"]) for c in db.candidates(f"g{seed}") if c["origin"] == "initial"]
        db.close()
        assert len(set(initial)) == 4 and set(initial) <= {config_hash(c) for c in grid("ptb-lstm")}
        starts.append(initial)
    assert starts[0] != starts[1]
    assert starts[0] != [config_hash(c) for c in grid("ptb-lstm")[:4]]


def test_survivors_are_the_nearest_half():
    dist = {1: 0.5, 2: math.inf, 3: 0.1, 4: 2.0, 5: 0.5, 6: 0.3, 7: 1.0}
    keep, gone = eliminate(dist, 4)
    assert keep == [1, 3, 5, 6] and gone == [2, 4, 7]


def _ev(spec, ppl=100.0, diverged=False):
    return {"spectrum": spec, "val_ppl": ppl, "diverged": diverged}


def test_distances_raw_pca2_loss():
    dense = {1: _ev([0.0, -1.0, -2.0]), 2: _ev([0.1, -1.0, -2.5])}
    cands = {1: {1: _ev([0.0, -1.1, -2.0], 90), 2: _ev([0.1, -1.0, -2.4], 80)},
             2: {1: _ev([1.0, 0.0, -3.0], 70), 2: _ev([2.0, 0.5, -4.0], 60)},
             3: {1: _ev([0.0, 0.0, 0.0]), 2: _ev(None, math.nan, True)}}
    raw = distances("raw", dense, cands, 2, [1, 2, 3])
    assert raw[1] == pytest.approx(0.1) and raw[2] == pytest.approx(np.linalg.norm([1.9, 1.5, -1.5]))
    assert raw[3] == math.inf
    loss = distances("loss", dense, cands, 2, [1, 2, 3])
    assert loss == {1: 80, 2: 60, 3: math.inf}
    p = distances("pca2", dense, cands, 2, [1, 2, 3])
    assert p[3] == math.inf and p[1] < p[2]
    # the 2-D projection never stretches distances
    assert p[1] <= raw[1] + 1e-12 and p[2] <= raw[2] + 1e-12


@pytest.mark.parametrize("hpo", ["tpe", "atpe", "random", "grid", "optuna"])
def test_proposers_skip_tried_configs_and_are_seeded(hpo):
    if hpo == "optuna":
        pytest.importorskip("optuna")
    p = make_proposer(hpo, "ptb-lstm")
    first = p.propose([], 5, set(), 1)
    hist = [(c, float(i)) for i, c in enumerate(first)]
    more = p.propose(hist, 4, {config_hash(c) for c in first}, 2)
    assert len(more) == 4
    assert not {config_hash(c) for c in more} & {config_hash(c) for c in first}
    assert p.propose(hist, 4, {config_hash(c) for c in first}, 2) == more  # same seed, same proposals


def _search_args(tiny_data, db, *extra):
    return [sys.executable, "-m", "lshx.cli.main", "search", "ptb-lstm", "--preset", "smoke", "--data", tiny_data,
            "--db", db, "--json", "--quiet", "--max-batches", "8", *extra]


def test_smoke_search_and_json(tiny_data, tmp_path):
    cfg = SearchConfig.from_preset("ptb-lstm", "smoke", data=tiny_data, max_batches=8)
    res = run_search(cfg, tmp_path / "s.sqlite", SerialExecutor(threads=1), quiet=True)
    assert set(res) >= {"best", "dense", "rounds", "train_epochs", "wall_s"}
    assert set(res["best"]) >= {"config", "val_ppl", "test_ppl"} and set(res["dense"]) == {"val_ppl", "test_ppl"}
    r = res["rounds"][0]
    assert r["epoch"] == 2 and len(r["alive"]) == 6 and len(r["eliminated"]) == 3 and len(r["inserted"]) == 1
    # 3 eliminated at epoch 2, 2 at epoch 3 (the inserted one caught up first), 2 finalists
    # trained to 4, and the dense model up to the last elimination (3; it is trained to 4 for
    # the report, which the method does not need)
    assert res["train_epochs"] == 3 * 2 + 2 * 3 + 2 * 4 + 3 and res["dense_epochs"] == 4
    assert res["selection_epochs_table3"] == 6 * 2 + 4 * 1
    db = RunDB(tmp_path / "s.sqlite")
    stored = db.rounds(res["name"])
    assert len(stored) == len(res["rounds"])
    assert [x["alive"] for x in stored] == [x["alive"] for x in res["rounds"]]  # before elimination
    statuses = {c["status"] for c in db.candidates(res["name"])}
    assert {"eliminated", "best"} <= statuses


def test_diverging_candidate_is_marked_failed(tiny_data, tmp_path, monkeypatch):
    import lshx.lyapunov.models as L

    real = L.model_spectrum
    calls = {"n": 0}

    def sometimes_nan(model, tokens, cfg):
        calls["n"] += 1
        res = real(model, tokens, cfg)
        if calls["n"] == 3:  # the second candidate's first epoch
            res.spectrum = [math.nan] * len(res.spectrum)
        return res

    monkeypatch.setattr(L, "model_spectrum", sometimes_nan)
    cfg = SearchConfig.from_preset("ptb-lstm", "smoke", data=tiny_data, max_batches=4)
    res = run_search(cfg, tmp_path / "n.sqlite", SerialExecutor(threads=1), quiet=True)
    d = res["rounds"][0]["distances"]
    assert any(v == math.inf for v in d.values())
    failed = [int(k) for k, v in d.items() if v == math.inf]
    assert set(failed) <= set(res["rounds"][0]["eliminated"])


def test_sigkill_then_resume_matches_uninterrupted(tiny_data, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    ref = subprocess.run(_search_args(tiny_data, str(tmp_path / "ref.sqlite")), capture_output=True, text=True,
                         env=env, check=True)
    expected = json.loads(ref.stdout)
    db = str(tmp_path / "k.sqlite")
    proc = subprocess.Popen(_search_args(tiny_data, db), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 120
    n_rows = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
        try:
            with sqlite3.connect(db, timeout=1) as c:
                n_rows = c.execute("SELECT COUNT(*) FROM evals").fetchone()[0]
        except sqlite3.Error:
            continue
        if n_rows >= 8:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the search finished before it could be killed"
    with sqlite3.connect(db) as c:
        before = dict(((k, e), t) for k, e, t in c.execute("SELECT eval_key, epoch, created FROM evals"))
    again = subprocess.run(_search_args(tiny_data, db, "--resume"), capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr
    got = json.loads(again.stdout)
    assert got["best"]["config"] == expected["best"]["config"]
    assert got["best"]["val_ppl"] == pytest.approx(expected["best"]["val_ppl"])
    assert got["rounds"] == expected["rounds"]
    # no finished epoch was trained again: every epoch recorded before the kill keeps its
    # original timestamp in the candidate's checkpoint
    rdb = RunDB(db)
    for cand in rdb.candidates(got["name"]):
        ck = load_checkpoint(os.path.join(cand["ckpt_dir"], "last.pt"))
        for ev in ck["lsh_evals"]:
            if (cand["eval_key"], ev["epoch"]) in before:
                assert ev["created"] == pytest.approx(before[(cand["eval_key"], ev["epoch"])])


def test_resume_refuses_other_options_and_existing_name(tiny_data, tmp_path):
    cfg = SearchConfig.from_preset("ptb-lstm", "smoke", data=tiny_data, max_batches=2, n=2)
    run_search(cfg, tmp_path / "r.sqlite", SerialExecutor(threads=1), name="a", quiet=True)
    from lshx.errors import ConfigError

    with pytest.raises(ConfigError, match="already exists"):
        run_search(cfg, tmp_path / "r.sqlite", SerialExecutor(threads=1), name="a", quiet=True)
    other = SearchConfig.from_preset("ptb-lstm", "smoke", data=tiny_data, max_batches=2, n=3)
    with pytest.raises(ConfigError, match="other options"):
        run_search(other, tmp_path / "r.sqlite", SerialExecutor(threads=1), name="a", resume=True, quiet=True)


def test_db_moved_without_its_checkpoints_says_so(tiny_data, tmp_path):
    """A second search in the same DB reuses the dense run; if the runs folder was not kept
    next to the DB, the search stops with a clear message instead of a bare path."""
    import shutil

    from lshx.errors import CheckpointError

    cfg = SearchConfig.from_preset("ptb-lstm", "smoke", data=tiny_data, max_batches=2, n=2)
    run_search(cfg, tmp_path / "r.sqlite", SerialExecutor(threads=1), name="a", quiet=True)
    shutil.rmtree(tmp_path / "r-runs")
    with pytest.raises(CheckpointError, match="keep r-runs/ next to the DB"):
        run_search(cfg, tmp_path / "r.sqlite", SerialExecutor(threads=1), name="b", quiet=True)


@pytest.mark.parametrize("kind", ["process", "ray"])
def test_other_executors_agree_with_serial(tiny_data, tmp_path, kind):
    if kind == "ray" and os.environ.get("CI") != "true":  # CI must run it: `make setup` installs ray
        pytest.importorskip("ray", reason="ray is not installed (make setup installs it; or pip install 'lshx[ray]')")
    cfg = SearchConfig.from_preset("ptb-lstm", "smoke", data=tiny_data, max_batches=4)
    a = run_search(cfg, tmp_path / "a.sqlite", SerialExecutor(threads=1), quiet=True)
    ex = make_executor(kind, 2)
    try:
        b = run_search(cfg, tmp_path / "b.sqlite", ex, quiet=True)
    finally:
        ex.close()
    assert a["best"]["config"] == b["best"]["config"]
    assert a["rounds"] == b["rounds"]
    assert a["best"]["test_ppl"] == pytest.approx(b["best"]["test_ppl"], rel=1e-6)


def test_loss_and_full_strategies(tiny_data, tmp_path):
    loss = run_search(SearchConfig.from_preset("ptb-lstm", "smoke", data=tiny_data, max_batches=3, distance="loss"),
                      tmp_path / "l.sqlite", SerialExecutor(threads=1), quiet=True)
    assert all(v > 1 for v in loss["rounds"][0]["distances"].values())  # perplexities
    full = run_search(SearchConfig.from_preset("ptb-lstm", "smoke", data=tiny_data, max_batches=3, strategy="full",
                                               n=3), tmp_path / "f.sqlite", SerialExecutor(threads=1), quiet=True)
    assert full["rounds"] == [] and full["train_epochs"] == 3 * 4  # 3 configs, 4 epochs each: no dense needed
    assert loss["train_epochs"] == 3 * 2 + 2 * 3 + 2 * 4  # the loss-based search needs no dense model


@pytest.mark.parametrize("preset", ["smoke", "small", "paper"])
def test_presets_compare_after_the_first_topology_update(preset):
    # the DST settings act from the end of epoch 1: an elimination at epoch 1 compares
    # candidates that differ only by their init
    assert SearchConfig.from_preset("ptb-lstm", preset).e0 >= 2



def test_device_option_and_old_dbs_resume(tiny_data, tmp_path):
    """device is a search option (validated), and options stored before it existed still
    describe the same search on resume."""
    from lshx.errors import ConfigError

    with pytest.raises(ConfigError, match="device"):
        SearchConfig.from_preset("ptb-lstm", "smoke", data=tiny_data, device="tpu")
    cfg = SearchConfig.from_preset("ptb-lstm", "smoke", data=tiny_data)
    old = cfg.to_dict()
    del old["device"]
    assert cfg.same_search(old)
    cuda = SearchConfig(**{**old, "device": "cuda"})
    assert not cuda.same_search(old)


# ----------------------------------------------------------------------------- shared/reviews/search-engine.md
@pytest.mark.parametrize("algo", ["tpe", "atpe"])
def test_hyperopt_proposes_n_configs_from_the_model(algo, monkeypatch):
    """hyperopt's suggest returns one document per call: all n proposals must still come
    from the algorithm, none from the random top-up."""
    import random

    from lshx.search import hpo
    from lshx.search.space import random_config

    history = [(random_config(random.Random(i)), float(i)) for i in range(4)]

    def no_random(rng):
        raise AssertionError("a proposal fell back to a random draw")

    monkeypatch.setattr(hpo, "random_config", no_random)
    p = hpo.HyperoptProposer(algo)
    out = p.propose(history, 5, set(), 3)
    assert len(out) == 5 and len({config_hash(c) for c in out}) == 5 and p.from_model == 5
    assert p.propose(history, 5, set(), 3) == out  # seeded


def test_a_reused_tpe_proposer_answers_as_a_fresh_one():
    """The proposer keeps its hyperopt Domain between calls (a replay asks thousands of
    times): every answer must be the one a new proposer gives, whatever came before, and a
    pickled proposer (a Ray or process worker) works too."""
    import pickle
    import random

    from lshx.search import hpo
    from lshx.search.space import grid, random_config

    pool = grid("ptb-lstm")
    for kw in ({}, {"configs": pool}):
        reused = hpo.HyperoptProposer("tpe", **kw)
        for i in range(6):
            history = [(random_config(random.Random(10 * i + j)) if not kw else pool[(7 * i + j) % 24],
                        float((j * 37 + i) % 11)) for j in range(i)]
            want = hpo.HyperoptProposer("tpe", **kw).propose(history, 4, set(), i)
            assert reused.propose(history, 4, set(), i) == want
        assert pickle.loads(pickle.dumps(reused)).propose(history, 4, set(), 5) == want


def _ev(spec, val=100.0, diverged=False):
    return {"spectrum": spec, "val_ppl": val, "diverged": diverged}


def test_pca2_is_fitted_on_the_dense_model_and_the_alive_candidates_only():
    rng = np.random.default_rng(0)
    dense = {e: _ev(rng.normal(size=6).tolist()) for e in (1, 2, 3)}
    cands = {c: {e: _ev(rng.normal(size=6).tolist()) for e in (1, 2, 3)} for c in (1, 2, 3)}
    base = distances("pca2", dense, {1: cands[1], 2: cands[2]}, 2, [1, 2])
    # an eliminated candidate (3) and epochs after the round's (3) do not move the fit
    assert distances("pca2", dense, cands, 2, [1, 2]) == pytest.approx(base, abs=1e-12)
    pair = distances("pca2-pair", dense, cands, 2, [1, 2])
    assert set(pair) == {1, 2} and all(math.isfinite(v) for v in pair.values())
    # pca2-pair of one candidate is pca2 fitted on the dense model and that candidate alone
    assert pair[1] == pytest.approx(distances("pca2", dense, {1: cands[1]}, 2, [1])[1], abs=1e-12)


def _reopen_as_running(db_path, name):
    with sqlite3.connect(db_path) as c:
        c.execute("UPDATE searches SET status='running', result=NULL WHERE name=?", (name,))


def test_replay_uses_the_stored_distances(tiny_data, tmp_path):
    cfg = SearchConfig.from_preset("ptb-lstm", "smoke", data=tiny_data, max_batches=4)
    db = tmp_path / "s.sqlite"
    first = run_search(cfg, db, SerialExecutor(threads=1), quiet=True)
    fake = {int(k): 100.0 + int(k) for k in first["rounds"][0]["distances"]}
    with sqlite3.connect(db) as c:
        c.execute("UPDATE rounds SET distances=? WHERE search=? AND round=1", (json.dumps(fake), first["name"]))
    _reopen_as_running(db, first["name"])
    again = run_search(cfg, db, SerialExecutor(threads=1), resume=True, quiet=True)
    assert again["rounds"][0]["distances"] == {str(k): v for k, v in fake.items()}
    assert again["rounds"][0]["eliminated"] == first["rounds"][0]["eliminated"]


def test_train_epochs_counts_what_this_search_trained(tiny_data, tmp_path):
    cfg = SearchConfig.from_preset("ptb-lstm", "smoke", data=tiny_data, max_batches=3)
    fresh = run_search(cfg, tmp_path / "a.sqlite", SerialExecutor(threads=1), quiet=True)
    shared = tmp_path / "b.sqlite"  # the same configs trained to P by a full search first
    full = SearchConfig.from_preset("ptb-lstm", "smoke", data=tiny_data, max_batches=3, strategy="full")
    run_search(full, shared, SerialExecutor(threads=1), name="full", quiet=True)
    again = run_search(cfg, shared, SerialExecutor(threads=1), name="lsh", quiet=True)
    assert again["rounds"] == fresh["rounds"]
    assert again["train_epochs"] == fresh["train_epochs"]


def test_schedule_must_fit_in_the_final_epochs():
    from lshx.errors import ConfigError

    with pytest.raises(ConfigError, match="final-epochs"):
        SearchConfig.from_preset("ptb-lstm", "smoke", n=12)  # eliminates until epoch 6, P = 4
    SearchConfig.from_preset("ptb-lstm", "smoke", n=12, final_epochs=6)


def test_a_crash_inside_a_round_leaves_no_orphan(tiny_data, tmp_path, monkeypatch):
    cfg = SearchConfig.from_preset("ptb-lstm", "smoke", data=tiny_data, max_batches=3)
    db_path = tmp_path / "s.sqlite"

    def crash(*a, **k):
        raise RuntimeError("power loss")

    monkeypatch.setattr(RunDB, "put_round", crash)
    with pytest.raises(RuntimeError, match="power loss"):
        run_search(cfg, db_path, SerialExecutor(threads=1), quiet=True)
    monkeypatch.undo()
    db = RunDB(db_path)
    name = db.search_names()[0]
    assert not [c for c in db.candidates(name) if c["origin"] == "inserted"]  # rolled back with its round
    db.close()
    resumed = run_search(cfg, db_path, SerialExecutor(threads=1), resume=True, quiet=True)
    clean = run_search(cfg, tmp_path / "c.sqlite", SerialExecutor(threads=1), quiet=True)
    assert resumed["rounds"] == clean["rounds"] and resumed["best"] == clean["best"]


def test_a_crash_while_adding_the_initial_candidates_adds_none(tiny_data, tmp_path, monkeypatch):
    cfg = SearchConfig.from_preset("ptb-lstm", "smoke", data=tiny_data, max_batches=3)
    calls = {"n": 0}
    real = RunDB.add_candidate

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("killed")
        return real(self, *a, **k)

    monkeypatch.setattr(RunDB, "add_candidate", flaky)
    with pytest.raises(RuntimeError, match="killed"):
        run_search(cfg, tmp_path / "s.sqlite", SerialExecutor(threads=1), quiet=True)
    db = RunDB(tmp_path / "s.sqlite")
    assert db.candidates(db.search_names()[0]) == []
    db.close()


def test_a_diverged_candidate_without_checkpoint_has_infinite_test_perplexity(tiny_data, tmp_path):
    from lshx.search.engine import Search

    cfg = SearchConfig.from_preset("ptb-lstm", "smoke", data=tiny_data, max_batches=3)
    db = RunDB(tmp_path / "s.sqlite")
    db.create_search("x", cfg.task, cfg.to_dict())
    s = Search(cfg, db, SerialExecutor(threads=1), "x", quiet=True)
    s.add(1, grid("ptb-lstm")[0], "initial", 0)
    cand = db.candidates("x")[0]
    db.put_eval(cand["eval_key"], cfg.seed, {"epoch": 1, "val_ppl": math.nan, "spectrum": None, "diverged": True},
                str(tmp_path / "none.pt"))
    assert s.test_perplexities([cand]) == [math.inf]
    db.close()


def test_no_elimination_when_n_is_at_most_final_k(tiny_data, tmp_path):
    cfg = SearchConfig.from_preset("ptb-lstm", "smoke", data=tiny_data, max_batches=3, n=2)
    res = run_search(cfg, tmp_path / "s.sqlite", SerialExecutor(threads=1), quiet=True)
    assert res["rounds"] == []
    db = RunDB(tmp_path / "s.sqlite")
    statuses = sorted(c["status"] for c in db.candidates(res["name"]) if c["origin"] != "dense")
    assert statuses == ["best", "final"]
    db.close()


def test_round_seeds_are_independent_across_search_seeds():
    from lshx.search.schedule import round_seed

    seeds = [round_seed(s, r) for s in range(50) for r in range(10)]
    assert len(set(seeds)) == len(seeds)  # seed*7919 + r made seed 0's round 1 seed 1's round 0
    assert round_seed(0, 1) != round_seed(1, 0)


def test_full_strategy_says_its_optimizer_saw_no_feedback(tiny_data, tmp_path):
    cfg = SearchConfig.from_preset("ptb-lstm", "smoke", data=tiny_data, max_batches=2, strategy="full", n=2,
                                   final_epochs=2)
    res = run_search(cfg, tmp_path / "s.sqlite", SerialExecutor(threads=1), quiet=True)
    assert "no feedback" in res["note"]


def test_tpe_initial_set_is_a_draw_from_its_prior():
    """With no history TPE draws from its prior; suggestions must not model each other
    (pending trials with no loss made the first one TPE's 'good' point: 56% copies)."""
    from lshx.search.hpo import HyperoptProposer

    key = lambda c: (c["init"], c["death"], c["redistribution"])  # noqa: E731
    same = [key(c) == key(o[0]) for s in range(40) for o in [HyperoptProposer("tpe").propose([], 8, set(), s)]
            for c in o[1:]]
    assert sum(same) / len(same) < 0.12  # 1/24 for independent draws


def test_replays_of_a_grid_table_start_from_the_live_grid_order():
    from lshx.studies.replay import _proposer
    from lshx.studies.table import Table

    pool = grid("ptb-lstm")[::-1]  # a table stores its configs in its own order
    table = Table("g", "ptb-lstm", {"final_epochs": 4}, [None] + pool, [[{}] * 25], [[1.0] * 25])
    live = make_proposer("grid", "ptb-lstm")
    assert _proposer(table, "grid").propose([], 8, set(), 3) == live.propose([], 8, set(), 3)


def _square(job):
    import time

    time.sleep(job["wait"])
    return job["x"] ** 2


def test_process_map_unordered_yields_each_result_as_it_finishes():
    """A search stores each job's result as soon as that job is done, not behind a slower one."""
    ex = make_executor("process", 2)
    try:
        got = list(ex.map_unordered(_square, [{"x": 2, "wait": 1.5}, {"x": 3, "wait": 0.0}, {"x": 4, "wait": 0.0}]))
    finally:
        ex.close()
    assert sorted(got) == [(0, 4), (1, 9), (2, 16)]
    assert got[-1] == (0, 4)  # the slow first job came last
