"""lshx.integrations.optuna: LSH's elimination as an Optuna pruner, in real studies (in-memory
and SQLite), against `lshx search`'s own decisions where the two settings coincide."""
import math
import os

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

from lshx.errors import ConfigError  # noqa: E402
from lshx.integrations.optuna import (LSHPruner, decisions, reference_spectra, report_reference,  # noqa: E402
                                      report_spectrum, spectra)
from lshx.search.schedule import distances, eliminate  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
PRUNED, COMPLETE = optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _storage(kind, tmp_path):
    return None if kind == "inmemory" else f"sqlite:///{tmp_path / 'optuna.sqlite'}"


# ----------------------------------------------------------------------------- lshx search
@pytest.fixture(scope="module")
def lsh_search(tmp_path_factory):
    """A real `lshx search` (smoke preset, n = 6, pca2): two rounds, one insertion."""
    from lshx.search.executors import SerialExecutor
    from lshx.search.config import SearchConfig
    from lshx.search.engine import run_search
    from lshx.search.rundb import RunDB

    d = tmp_path_factory.mktemp("lsh")
    (d / "ptb").mkdir()
    for split, n in (("train", 400), ("valid", 120), ("test", 120)):
        with open(os.path.join(ROOT, "data", "ptb", f"ptb.{split}.txt"), encoding="utf-8") as f:
            (d / "ptb" / f"ptb.{split}.txt").write_text("".join(next(f) for _ in range(n)), encoding="utf-8")
    cfg = SearchConfig.from_preset("ptb-lstm", "smoke", data=str(d / "ptb"), max_batches=2, n=6, distance="pca2")
    res = run_search(cfg, d / "s.sqlite", SerialExecutor(threads=1), quiet=True)
    db = RunDB(d / "s.sqlite")
    try:
        cands = db.candidates(res["name"])
        evals = {c["cid"]: db.evals(c["eval_key"], cfg.seed) for c in cands}
        rounds = db.rounds(res["name"])
    finally:
        db.close()
    return cfg, cands, evals, rounds


@pytest.mark.parametrize("storage,ref_in_study", [("inmemory", False), ("sqlite", True)])
def test_same_decisions_as_lshx_search(lsh_search, storage, ref_in_study, tmp_path):
    """Replays the search's spectra through an Optuna study driven as LSH runs: every alive
    trial reports the round's epoch before any asks should_prune; inserted trials (asked
    after the round) catch up without asking. The pruned trials are the search's eliminated
    candidates, with the same distances."""
    cfg, cands, evals, rounds = lsh_search
    assert len(rounds) >= 2 and any(r["inserted"] for r in rounds)  # a round after an insertion
    dense = evals[0]
    pruner = LSHPruner(cfg.e0, cfg.ei, "pca2", n_rungs=len(rounds),
                       reference=None if ref_in_study else {e: ev["spectrum"] for e, ev in dense.items()})
    study = optuna.create_study(storage=_storage(storage, tmp_path), pruner=pruner,
                                sampler=optuna.samplers.RandomSampler(seed=0))
    trial, reported = {}, {}

    def bring(cid, epoch):
        for e in range(reported.get(cid, 0) + 1, epoch + 1):
            sp = evals[cid][e]["spectrum"]
            report_spectrum(trial[cid], sp if sp is not None else [math.nan] * 3, e)
        reported[cid] = epoch

    for c in cands:
        if c["origin"] == "initial":
            trial[c["cid"]] = study.ask()
    # candidate ids and trial numbers follow the same order (ties go to the lower of either)
    assert [trial[c].number for c in sorted(trial)] == sorted(trial[c].number for c in trial)
    for rnd in rounds:
        E = rnd["epoch"]
        if ref_in_study:
            for e in range(1, E + 1):
                report_reference(study, dense[e]["spectrum"], e)
        for cid in rnd["alive"]:
            bring(cid, E)
        pruned = [cid for cid in rnd["alive"] if trial[cid].should_prune()]
        assert sorted(pruned) == sorted(rnd["eliminated"])
        frozen = {t.number: t for t in study.get_trials(deepcopy=False)}
        for cid in rnd["alive"]:
            dec = decisions(frozen[trial[cid].number])[(E - cfg.e0) // cfg.ei]
            assert dec["epoch"] == E and dec["competitors"] == len(rnd["alive"])
            stored = {int(k): v for k, v in rnd["distances"].items()}[cid]
            assert dec["distance"] == pytest.approx(stored, rel=1e-9, abs=1e-12)
            assert dec["kept"] == (cid not in pruned)
        for cid in pruned:
            study.tell(trial[cid], state=PRUNED)
        for cid in rnd["inserted"]:
            trial[cid] = study.ask()
            bring(cid, E)  # LSH's catch-up: trained to the round's epoch, not compared
            assert not decisions(study.get_trials(deepcopy=False)[trial[cid].number])
    for cid, t in trial.items():
        if cid not in {c for r in rounds for c in r["eliminated"]}:
            study.tell(t, min(ev["val_ppl"] for ev in evals[cid].values()))
    assert sum(t.state == PRUNED for t in study.trials) == sum(len(r["eliminated"]) for r in rounds)


@pytest.mark.parametrize("distance", ["raw", "pca2"])
def test_one_round_equals_eliminate(distance):
    """Synthetic spectra, one synchronised round of 7 trials (one diverged): the pruned set
    is lshx.search.schedule.eliminate of its distances, ceil(7/2) = 4 kept."""
    rng = np.random.default_rng(0)
    N, n = 6, 7
    ref = {e: rng.normal(size=N).tolist() for e in (1, 2)}
    study = optuna.create_study(pruner=LSHPruner(2, 1, distance, reference=ref, n_rungs=1))
    trials = [study.ask() for _ in range(n)]
    traj = {t.number: {e: (np.array(ref[e]) + rng.normal(scale=0.5 + t.number % 3, size=N)).tolist()
                       for e in (1, 2)} for t in trials}
    traj[4][2] = [math.nan] * N
    for t in trials:
        for e in (1, 2):
            value = report_spectrum(t, traj[t.number][e], e)
            if e == 2 and t.number == 4:
                assert value == math.inf
            elif e == 2:
                assert value == pytest.approx(np.linalg.norm(np.array(traj[t.number][e]) - ref[e]))
    pruned = sorted(t.number for t in trials if t.should_prune())
    cands = {c: {e: {"spectrum": s if np.isfinite(s).all() else None, "diverged": not np.isfinite(s).all()}
                 for e, s in tr.items()} for c, tr in traj.items()}
    dense = {e: {"spectrum": s, "diverged": False} for e, s in ref.items()}
    _, gone = eliminate(distances(distance, dense, cands, 2, list(range(n))), math.ceil(n / 2))
    assert pruned == gone and 4 in pruned and len(pruned) == 3


# ----------------------------------------------------------------------------- asynchronous
def _run_trial(study, offsets, ask_at=None):
    """One trial run to the end (or pruned): spectrum = reference + offset at every epoch."""
    t = study.ask()
    for e in sorted(offsets):
        t.report(10.0 + e, e)  # the objective's own learning curve: the pruner leaves it alone
        report_spectrum(t, [1.0 + offsets[e], -1.0, -2.0], e)
        if (ask_at is None or e in ask_at) and t.should_prune():
            study.tell(t, state=PRUNED)
            return t.number, e
    study.tell(t, 0.0)
    return t.number, None


def test_asynchronous_semantics_like_asha():
    """Trials one after another: each is judged at a rung against everything recorded there
    so far, ceil(m/2) kept; decisions are never revisited; a rung passed without asking is
    not judged."""
    ref = {e: [1.0, -1.0, -2.0] for e in range(1, 6)}
    study = optuna.create_study(pruner=LSHPruner(e0=2, ei=2, distance="raw", reference=ref, max_epochs=5))
    epochs = range(1, 6)  # rungs at 2 and 4
    assert _run_trial(study, {e: 0.5 for e in epochs}) == (0, None)  # alone at both rungs: kept
    assert _run_trial(study, {e: 0.9 for e in epochs}) == (1, 2)  # m = 2, keep 1: the farther goes
    assert _run_trial(study, {e: 0.1 for e in epochs}) == (2, None)  # m = 3, keep 2 at 2; m = 2 at 4
    # kept at 2 (rank 2 of 4), pruned at 4 (rank 3 of 3: trial 1 stopped at 2)
    assert _run_trial(study, {1: 0.3, 2: 0.3, 3: 0.3, 4: 0.6, 5: 0.6}) == (3, 4)
    # an offset that is the worst only at epoch 2, a rung it passes without asking
    assert _run_trial(study, {1: 0.0, 2: 5.0, 3: 0.0, 4: 0.0, 5: 0.0}, ask_at={4, 5}) == (4, None)
    by = {t.number: decisions(t) for t in study.trials}
    assert by[0][0]["competitors"] == 1 and by[0][1]["competitors"] == 1  # never re-judged later
    assert by[1][0] == {"epoch": 2, "distance": pytest.approx(0.9), "competitors": 2, "rank": 2, "kept": False}
    assert [by[3][r]["rank"] for r in (0, 1)] == [2, 3] and not by[3][1]["kept"]
    assert 0 not in by[4] and by[4][1]["kept"] and by[4][1]["competitors"] == 4
    assert [t.intermediate_values[2] for t in study.trials[:2]] == [12.0, 12.0]


def test_decision_waits_for_the_reference(tmp_path):
    """The dense model reports into the study (report_reference) and lags behind: the rung
    decision waits and is taken at the next call, on the spectra recorded at the rung."""
    study = optuna.create_study(storage=_storage("sqlite", tmp_path), pruner=LSHPruner(2, 1, "raw", max_epochs=4))
    report_reference(study, [0.0, -1.0], 1)
    a, b = study.ask(), study.ask()
    for t, off in ((a, 0.1), (b, 0.2)):
        assert report_spectrum(t, [off, -1.0], 1) == pytest.approx(off)
        assert not t.should_prune()
    for t, off in ((a, 0.3), (b, 0.1)):  # epoch 2 arrives before the reference's
        assert math.isnan(report_spectrum(t, [off, -1.0], 2))
        assert not t.should_prune()
    assert decisions(study.get_trials()[0]) == {0: "pending"}
    report_reference(study, np.array([0.0, -1.0]), 2)
    assert reference_spectra(study) == {1: [0.0, -1.0], 2: [0.0, -1.0]}
    report_spectrum(a, [0.3, -1.0], 3)  # epoch 3 (no reference yet): rung 1 (epoch 2) is judged
    assert a.should_prune()
    report_spectrum(b, [0.1, -1.0], 3)
    assert not b.should_prune()
    dec = decisions(study.get_trials()[0])
    assert dec[0] == {"epoch": 2, "distance": pytest.approx(0.3), "competitors": 2, "rank": 2, "kept": False}
    assert dec[1] == "pending"
    assert decisions(study.get_trials()[1])[0]["kept"] and decisions(study.get_trials()[1])[1] == "pending"


@pytest.mark.parametrize("storage", ["inmemory", "sqlite"])
def test_tpe_study_prunes_and_inserts(storage, tmp_path):
    """study.optimize with TPE: pruned trials free their slot for a new one (LSH's
    insertion); TPE learns from the objective's own intermediate values."""
    ref = {e: [0.5, -0.5, -1.5, -3.0] for e in range(1, 5)}
    url = _storage(storage, tmp_path)
    study = optuna.create_study(storage=url, study_name="lsh",
                                sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=4),
                                pruner=LSHPruner(e0=1, ei=1, distance="pca2", reference=ref, n_rungs=3))

    def objective(trial):
        x = trial.suggest_float("x", -1.0, 1.0)
        for epoch in range(1, 5):  # the farther x is from 0.2, the farther the spectrum
            shift = (x - 0.2) * np.array([1.0, 0.5, -0.3, 0.2]) * epoch / 4
            trial.report(abs(x - 0.2) + 1.0 / epoch, epoch)
            report_spectrum(trial, np.array(ref[epoch]) + shift + 0.01 * epoch, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return abs(x - 0.2)

    study.optimize(objective, n_trials=24)
    states = [t.state for t in study.trials]
    assert len(states) == 24 and states.count(PRUNED) >= 8 and states.count(COMPLETE) >= 3
    for t in study.trials:
        dec = decisions(t)
        assert set(spectra(t)) == set(range(1, 1 + len(spectra(t))))
        if t.state == PRUNED:
            assert not list(dec.values())[-1]["kept"] and all(d["kept"] for d in list(dec.values())[:-1])
        else:
            assert len(dec) == 3 and all(d["kept"] for d in dec.values())
    xs = [t.params["x"] for t in study.trials]
    assert np.mean(np.abs(np.array(xs[12:]) - 0.2)) < np.mean(np.abs(np.array(xs[:8]) - 0.2))
    if url:  # the decisions live in the storage: another process sees them
        again = optuna.load_study(study_name="lsh", storage=url)
        assert [decisions(t) for t in again.trials] == [decisions(t) for t in study.trials]


def _sync_round(study, trials, spectra_by_trial, epoch):
    """Every trial reports its spectrum at `epoch`, then every one asks: {number: pruned}."""
    for t in trials:
        report_spectrum(t, spectra_by_trial[t.number], epoch)
    return {t.number: t.should_prune() for t in trials}


@pytest.mark.parametrize("distance", ["raw", "pca2"])
def test_ties_go_to_the_lower_trial_number(distance):
    """Equal distances (identical spectra; or two diverged trials, both +inf): the lower
    trial number is kept, as lshx.search.schedule.eliminate."""
    ref = {1: [0.5, -1.0], 2: [0.4, -1.2]}
    study = optuna.create_study(pruner=LSHPruner(2, 1, distance, reference=ref, n_rungs=1))
    trials = [study.ask() for _ in range(4)]
    same = {e: [0.9, -0.7 - 0.1 * e] for e in (1, 2)}
    traj = {0: {1: [0.0, 0.0], 2: [3.0, 3.0]}, 1: same, 2: same, 3: {1: [0.0, 0.0], 2: [2.0, 2.0]}}
    _sync_round(study, trials, {n: traj[n][1] for n in traj}, 1)
    pruned = _sync_round(study, trials, {n: traj[n][2] for n in traj}, 2)
    dist = {t.number: decisions(study.trials[t.number])[0]["distance"] for t in trials}
    assert dist[1] == dist[2] and dist[1] < min(dist[0], dist[3])
    assert pruned == {0: True, 1: False, 2: False, 3: True}
    assert [decisions(study.trials[n])[0]["rank"] for n in (1, 2)] == [1, 2]
    # two diverged trials, nothing else at the rung: the lower number is kept
    study = optuna.create_study(pruner=LSHPruner(1, 1, distance, reference=ref, n_rungs=1))
    a, b = study.ask(), study.ask()
    assert _sync_round(study, [a, b], {a.number: [math.nan, 0.0], b.number: [math.inf, 0.0]}, 1) == \
        {a.number: False, b.number: True}


def test_a_diverged_trial_is_pruned_unless_most_diverged():
    """A trial whose distance is +inf is pruned, alone at its rung too (asynchronous: the
    first trial to arrive); only when more than half of m >= 2 competitors are +inf does
    LSH's ranking decide (in a synchronised round: LSH's own rule, which keeps the lower
    numbers among the diverged)."""
    ref = {1: [0.0, -1.0], 2: [0.0, -1.0]}
    study = optuna.create_study(pruner=LSHPruner(1, 1, "raw", reference=ref, n_rungs=1))
    t = study.ask()
    report_spectrum(t, [math.nan, 0.0], 1)
    assert t.should_prune()
    assert decisions(study.trials[0])[0] == {"epoch": 1, "distance": None, "competitors": 1, "rank": 1,
                                             "kept": False}
    # m = 3, two diverged (more than half): LSH keeps ceil(3/2) = 2, the finite one and trial 0
    study = optuna.create_study(pruner=LSHPruner(1, 1, "raw", reference=ref, n_rungs=1))
    trials = [study.ask() for _ in range(3)]
    got = _sync_round(study, trials, {0: [math.nan, 0.0], 1: [0.1, -1.0], 2: [math.inf, 0.0]}, 1)
    dist = {0: math.inf, 1: 0.1, 2: math.inf}
    assert sorted(n for n, p in got.items() if p) == eliminate(dist, 2)[1] == [2]
    # m = 4, two diverged (half): both pruned, as LSH
    study = optuna.create_study(pruner=LSHPruner(1, 1, "raw", reference=ref, n_rungs=1))
    trials = [study.ask() for _ in range(4)]
    got = _sync_round(study, trials, {0: [math.nan, 0.0], 1: [0.1, -1.0], 2: [math.inf, 0.0], 3: [0.2, -1.0]}, 1)
    assert sorted(n for n, p in got.items() if p) == [0, 2]


def test_static_reference_must_hold_every_rung_epoch():
    """A static reference without a rung's epoch (pca2: without any epoch from the first to
    E) is a ConfigError when the pruner is built, not a trial that fails at that rung."""
    ref = {e: [1.0, -1.0] for e in (2, 3, 4)}  # no epoch 1
    with pytest.raises(ConfigError, match="no spectrum at epoch 1"):
        LSHPruner(e0=1, ei=1, distance="raw", reference=ref, max_epochs=4)
    # raw needs the rung epochs only; pca2 needs 1..E
    study = optuna.create_study(pruner=LSHPruner(e0=2, ei=1, distance="raw", reference=ref, max_epochs=4))
    t = study.ask()
    for e in (1, 2):
        report_spectrum(t, [1.1, -1.0], e)
    assert not t.should_prune() and decisions(study.trials[0])[0]["kept"]
    with pytest.raises(ConfigError, match="pca2.*epochs 1..2"):
        LSHPruner(e0=2, ei=1, distance="pca2", reference=ref, max_epochs=4)
    with pytest.raises(ConfigError, match="no spectrum at epoch 5"):
        LSHPruner(e0=2, ei=1, distance="raw", reference=ref, n_rungs=4)
    # a gap in the middle: epochs {1, 3} for a rung at 3
    with pytest.raises(ConfigError, match="no spectrum at epoch 2"):
        LSHPruner(e0=1, ei=2, distance="pca2", reference={1: [0.0], 3: [0.1]}, max_epochs=4)
    LSHPruner(e0=2, ei=1, distance="raw", reference=ref, n_rungs=3)


def test_pruned_trials_leave_the_later_rungs():
    """A trial pruned at rung r whose objective goes on reporting is no competitor at later
    rungs (LSH never compares an eliminated candidate again); it stays pruned."""
    ref = {e: [0.0, -1.0] for e in (1, 2)}
    study = optuna.create_study(pruner=LSHPruner(1, 1, "raw", reference=ref, n_rungs=2))
    a, b = study.ask(), study.ask()
    assert _sync_round(study, [a, b], {a.number: [0.9, -1.0], b.number: [0.1, -1.0]}, 1) == \
        {a.number: True, b.number: False}
    report_spectrum(a, [0.0, -1.0], 2)  # a ignores the pruning and goes on: nearest at epoch 2
    assert a.should_prune()
    report_spectrum(b, [0.2, -1.0], 2)
    assert not b.should_prune()
    assert decisions(study.trials[b.number])[1]["competitors"] == 1
    assert 1 not in decisions(study.trials[a.number])


def test_decisions_of_a_live_trial():
    """decisions() takes the optuna.Trial an objective holds (Optuna 5's Trial has no
    system_attrs: read through the study's storage) as well as a FrozenTrial."""
    study = optuna.create_study(pruner=LSHPruner(reference={1: [0.0]}, n_rungs=1))
    t = study.ask()
    report_spectrum(t, [0.1], 1)
    assert not t.should_prune()
    assert decisions(t) == decisions(study.trials[0]) and decisions(t)[0]["kept"]


def test_report_spectrum_leaves_the_intermediate_values_alone():
    """The objective reports its validation loss at the same step as the spectrum; a pruned
    trial's value is that loss, not a distance; the spectrum keeps its own record."""
    ref = {e: [0.0, -1.0] for e in (1, 2, 3)}
    study = optuna.create_study(direction="maximize",
                                pruner=LSHPruner(1, 1, "raw", reference=ref, max_epochs=3))
    a, b, c = study.ask(), study.ask(), study.ask()
    for t, loss, sp in ((a, 2.9, [0.3, -1.0]), (b, 3.1, [0.1, -1.0]), (c, 3.0, [math.nan, -1.0])):
        t.report(loss, 1)
        assert report_spectrum(t, sp, 1) == (pytest.approx(np.linalg.norm(np.subtract(sp, ref[1])))
                                             if np.isfinite(sp).all() else math.inf)
    assert [t.should_prune() for t in (a, b, c)] == [False, False, True]
    assert decisions(a)[0]["distance"] == pytest.approx(0.3)
    assert [t.intermediate_values for t in study.trials] == [{1: 2.9}, {1: 3.1}, {1: 3.0}]
    assert spectra(study.trials[1]) == {1: [0.1, -1.0]}


def test_a_second_report_at_a_judged_epoch_is_refused():
    ref = {1: [0.0, -1.0], 2: [0.0, -1.0]}
    study = optuna.create_study(pruner=LSHPruner(1, 1, "raw", reference=ref, max_epochs=2))
    t = study.ask()
    report_spectrum(t, [0.1, -1.0], 1)
    report_spectrum(t, [0.2, -1.0], 1)  # not judged yet: replaced
    assert not t.should_prune() and decisions(t)[0]["distance"] == pytest.approx(0.2)
    report_spectrum(t, [0.2, -1.0], 1)  # the same again: fine
    with pytest.raises(ConfigError, match="judged at epoch 1"):
        report_spectrum(t, [0.5, -1.0], 1)


def test_epochs_may_count_from_zero():
    """for epoch in range(epochs): LSHPruner(first_epoch=0) numbers the first spectrum 0."""
    ref = {e: [0.0, -1.0] for e in range(3)}
    study = optuna.create_study(pruner=LSHPruner(e0=0, ei=1, distance="pca2", reference=ref, max_epochs=3,
                                                 first_epoch=0))
    assert study.pruner.rungs == [0, 1]
    a, b = study.ask(), study.ask()
    got = _sync_round(study, [a, b], {a.number: [0.1, -1.0], b.number: [0.9, -1.0]}, 0)
    assert got == {a.number: False, b.number: True} and decisions(b)[0]["epoch"] == 0
    with pytest.raises(ConfigError, match="first epoch 1"):
        report_spectrum(optuna.create_study(pruner=LSHPruner(reference={1: [0.0]}, n_rungs=1)).ask(), [0.0], 0)


def test_a_trial_that_finished_training_is_never_pruned():
    """max_epochs: the last epoch is not a rung, so the trial that trained to the end keeps its
    result (with every epoch a rung, the worst of two finished trials was pruned)."""
    ref = {e: [0.0, -1.0] for e in (1, 2, 3)}
    study = optuna.create_study(pruner=LSHPruner(1, 1, "raw", reference=ref, max_epochs=3))
    assert study.pruner.rungs == [1, 2]

    def objective(trial):
        off = [0.1, 0.2][trial.number]
        for epoch in (1, 2, 3):
            report_spectrum(trial, [off * epoch, -1.0], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return off

    study.optimize(objective, n_trials=2)
    assert [t.state for t in study.trials] == [COMPLETE, PRUNED]  # pruned at 1, the worse of two
    assert 3 not in study.pruner.rungs and list(decisions(study.trials[1])) == [0]
    with pytest.raises(ConfigError, match="max_epochs"):
        LSHPruner(e0=1, ei=1, reference=ref)


def test_no_reference_warns_once_or_raises(tmp_path):
    def run(pruner):
        study = optuna.create_study(pruner=pruner)
        t = study.ask()
        report_spectrum(t, [0.3, -1.0], 1)
        return t.should_prune()

    with pytest.warns(UserWarning, match="no reference spectra"):
        assert run(LSHPruner(1, 1, "raw", max_epochs=3)) is False
    with pytest.raises(ConfigError, match="no reference spectra"):
        run(LSHPruner(1, 1, "raw", max_epochs=3, on_missing_reference="raise"))


def test_a_resumed_study_prunes_with_the_stored_reference(tmp_path):
    """The static reference goes into the study: resumed without it, the study prunes the same;
    resumed with another one, it is refused."""
    url = _storage("sqlite", tmp_path)
    ref = {1: [0.0, -1.0], 2: [0.0, -1.0]}
    study = optuna.create_study(storage=url, study_name="s", pruner=LSHPruner(1, 1, "raw", reference=ref,
                                                                                 max_epochs=3))
    a = study.ask()
    report_spectrum(a, [0.1, -1.0], 1)
    assert not a.should_prune()
    again = optuna.load_study(study_name="s", storage=url, pruner=LSHPruner(1, 1, "raw", max_epochs=3))
    assert reference_spectra(again) == ref
    b = again.ask()
    report_spectrum(b, [0.9, -1.0], 1)
    assert b.should_prune() and decisions(b)[0]["competitors"] == 2
    other = optuna.load_study(study_name="s", storage=url,
                              pruner=LSHPruner(1, 1, "raw", reference={1: [5.0, 5.0], 2: [5.0, 5.0]}, max_epochs=3))
    c = other.ask()
    report_spectrum(c, [0.2, -1.0], 1)
    with pytest.raises(ConfigError, match="holds another reference"):
        c.should_prune()


def test_errors():
    with pytest.raises(ConfigError, match="SuccessiveHalvingPruner"):
        LSHPruner(distance="loss", n_rungs=1)
    with pytest.raises(ConfigError, match="unknown distance"):
        LSHPruner(distance="cosine", n_rungs=1)
    with pytest.raises(ConfigError, match="e0 must be >= first_epoch"):
        LSHPruner(e0=0, n_rungs=1)
    with pytest.raises(ConfigError, match="not finite"):
        LSHPruner(reference={1: [math.nan]}, n_rungs=1)
    with pytest.raises(ConfigError, match="no rung before the last epoch"):
        LSHPruner(e0=3, max_epochs=3)
    study = optuna.create_study(pruner=LSHPruner(reference={1: [0.0, 1.0]}, n_rungs=1))
    t = study.ask()
    with pytest.raises(ConfigError, match="integer >= 0"):
        report_spectrum(t, [0.0, 1.0], -1)
    with pytest.raises(ConfigError, match="reference has 2"):
        report_spectrum(t, [0.0, 1.0, 2.0], 1)
    assert LSHPruner(e0=3, ei=2, n_rungs=2).rung_of(5) == 1 and LSHPruner(e0=3, ei=2, n_rungs=2).rung_of(7) is None
    assert LSHPruner(e0=3, ei=2, max_epochs=7).rungs == [3, 5]  # 7, the last epoch, is not a rung


def test_example_optuna_gru_runs(tmp_path):
    """examples/optuna_gru.py end to end (smaller than --smoke), resumable from its storage."""
    import json
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'gru.sqlite'}"
    cmd = [sys.executable, os.path.join(ROOT, "examples", "optuna_gru.py"), "--smoke", "--trials", "3", "--epochs", "2",
           "--storage", url]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["threads"] == 1 and math.isfinite(res["dense_val_ppl"])
    for name in ("lsh", "median"):
        r = res[name]
        assert r["trials"] == 3 and r["pruned"] + r["complete"] == 3 and 3 <= r["epochs"] <= 6
        assert r["best_value"] is None or math.isfinite(r["best_value"])
    assert res["lsh"]["pruned"] >= 1  # the second trial meets the first at epoch 1
    again = optuna.load_study(study_name="lshx-gru-lsh", storage=url)
    assert len(again.trials) == 3 and any(decisions(t) for t in again.trials)
    # resumed: nothing more to run, the same answer
    out2 = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    res2 = json.loads(out2.stdout.strip().splitlines()[-1])
    assert {k: res2[k] for k in ("lsh", "median")} == {k: res[k] for k in ("lsh", "median")}
