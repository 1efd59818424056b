"""The statistics of lshx.studies.replay_stats on hand-made tables whose answers are known."""
import math

import numpy as np
import pytest
from scipy import stats as sps

from lshx.search.space import grid
from lshx.studies import replay_stats as S
from lshx.studies.table import Table


def _table(tests, val_last=None, configs=None, P=1):
    """S seeds x C+1 runs (index 0: dense) with the given final test ppls; val ppl at epoch P."""
    n = len(tests[0])
    configs = configs or [None] + grid("ptb-lstm")[: n - 1]
    val_last = val_last or [[100.0] * n for _ in tests]
    evals = [[{P: {"epoch": P, "val_ppl": v}} for v in vs] for vs in val_last]
    return Table("t", "ptb-lstm", {"final_epochs": P}, configs, evals, [list(t) for t in tests])


def test_pooled_sd_and_its_interval_by_hand():
    tests = [[200, 210, 220, 300], [202, 206, 226, 310], [198, 214, 218, 290]]
    t = _table(tests, val_last=[[100, 100, 100, 500]] * 3)  # config 3 stays on the plateau
    n = S.noise(t)
    groups = [[210, 206, 214], [220, 226, 218]]
    ss = sum(((np.array(g) - np.mean(g)) ** 2).sum() for g in groups)
    sd = math.sqrt(ss / 4)
    off = n["test_ppl"]["off_plateau"]
    assert off["df"] == 4 and off["sd"] == pytest.approx(sd) and off["configs"] == [1, 2]
    assert off["lo"] == pytest.approx(sd * math.sqrt(4 / sps.chi2.ppf(0.975, 4)))
    assert off["hi"] == pytest.approx(sd * math.sqrt(4 / sps.chi2.ppf(0.025, 4)))
    assert n["test_ppl"]["all"]["df"] == 6  # every finite configuration
    assert n["per_config"][0]["sd"] == pytest.approx(np.std([210, 206, 214], ddof=1))
    assert n["dense_test_ppl"]["sd"] == pytest.approx(2.0)
    # config 2 carries the larger share of the pooled sum of squares; the SD without it is config 1's
    share = ((np.array(groups[1]) - np.mean(groups[1])) ** 2).sum() / ss
    assert off["largest"]["index"] == 2 and off["largest"]["share"] == pytest.approx(share)
    assert off["without_largest"]["sd"] == pytest.approx(np.std(groups[0], ddof=1))
    assert off["without_largest"]["df"] == 2


def test_one_seed_has_no_pooled_sd_but_the_twins_still_measure_noise():
    cfgs = [None] + grid("ptb-lstm")
    tests = [[200.0] + [210.0 + i for i in range(24)]]
    t = _table(tests, configs=cfgs)
    n = S.noise(t)
    assert n["test_ppl"]["all"]["sd"] is None and n["test_ppl"]["all"]["df"] == 0
    pairs = S.twin_pairs(t)
    assert len(pairs) == 4  # 2 inits x (SET, magnitude): none and nonzeros are one algorithm
    for i, j in pairs:
        a, b = cfgs[i], cfgs[j]
        assert a["death"] in ("SET", "magnitude") and {a["redistribution"], b["redistribution"]} == {"none",
                                                                                                      "nonzeros"}
    d = [tests[0][i] - tests[0][j] for i, j in pairs]
    assert n["twins"]["df"] == 4 and n["twins"]["sd"] == pytest.approx(math.sqrt(sum(x * x for x in d) / 8))


def test_t_interval_matches_scipy_and_needs_two_values():
    x = [1.0, 2.0, 4.0]
    lo, hi = S.t_interval(x)
    ref = sps.t.interval(0.95, 2, loc=np.mean(x), scale=sps.sem(x))
    assert (lo, hi) == pytest.approx(ref)
    assert S.t_interval([3.0]) is None
    assert S.excludes_zero((0.1, 2)) and S.excludes_zero((-2, -0.1)) and not S.excludes_zero((-1, 1))


def test_regret_is_judged_by_the_mean_over_seeds():
    # config 1 is best in expectation (205) though config 2 wins seed 0
    t = _table([[0, 200, 199, 260], [0, 210, 221, 250]])
    exp = S.expected_test(t)
    assert t.best() == 1 and exp.tolist() == [0, 205, 210, 255]
    mixed = [{"pick": 2, "test_ppl": 199, "train_epochs": 1, "best": 2, "best_test_ppl": 199}] * 4
    per = [[{"pick": 2}] * 3, [{"pick": 1}] * 3]
    m = S.method_summary(t, mixed, per)
    assert m["regret_mean"] == 5 and m["regret_drawn_mean"] == 0 and m["p_best"] == 0 and m["p_best_drawn"] == 1
    assert m["regret_per_seed"] == [5, 0] and m["regret_t_ci"] == pytest.approx(S.t_interval([5, 0]))


def test_a_difference_is_called_only_when_every_interval_excludes_zero():
    t = _table([[0, 200, 210, 230], [0, 200, 212, 228], [0, 201, 209, 231]])
    a = ([{"pick": 1}] * 50, [[{"pick": 1}] * 5] * 3)  # always the best
    b = ([{"pick": 3}] * 50, [[{"pick": 3}] * 5] * 3)  # always the worst
    d = S.difference(t, a, b)
    assert d["mean"] < 0 and d["verdict"] == "a picks better" and d["includes_training_noise"]
    # the replays agree, but the training seeds do not: not distinguishable
    b2 = ([{"pick": 2}] * 50, [[{"pick": 2}] * 5, [{"pick": 1}] * 5, [{"pick": 3}] * 5])
    d2 = S.difference(t, a, b2)
    assert d2["ci_excludes_zero"] and not d2["t_ci_excludes_zero"] and d2["verdict"] == "not distinguishable"
    # one seed: the replays' interval excludes training noise, so nothing is called
    d1 = S.difference(t, (a[0], []), (b[0], []))
    assert not d1["includes_training_noise"] and d1["ci_excludes_zero"] and "t_ci" not in d1
    assert d1["verdict"] == "undecided: one training seed"


def test_seed_averaged_rho_and_its_paired_difference():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(3, 20))
    perfect, noise = y.copy(), rng.normal(size=(3, 20))
    r = S.seed_averaged_rho(perfect, y)
    assert r["rho"] == pytest.approx(1.0) and r["per_seed"] == pytest.approx([1.0] * 3)
    d = S.paired_rho_difference(perfect, noise, y, r["idx"])
    assert d["diff"] == pytest.approx(1 - np.mean([sps.spearmanr(noise[t], y[t]).statistic for t in range(3)]))
    assert d["excludes_zero"] and d["lo"] > 0


def test_a_diverged_seed_counts_as_the_worst_finite_test_ppl():
    t = _table([[0, 200, 205, 230], [0, math.inf, 206, 229]])
    assert t.worst_finite_test() == 230 and t.mean_test(1) == pytest.approx((200 + 230) / 2)
    assert t.best() == 2  # 205.5 beats a config that diverged once
    assert S.expected_test(t).tolist() == pytest.approx([0, 215, 205.5, 229.5])


def test_held_out_regret_judges_each_seed_by_the_others():
    t = _table([[0, 200, 199, 260], [0, 210, 221, 250], [0, 205, 203, 255]])
    assert S.held_out_test(t, 0).tolist() == pytest.approx([0, 207.5, 212, 252.5])
    mixed = [{"pick": 2, "test_ppl": 199, "train_epochs": 1, "best": 2, "best_test_ppl": 199}] * 4
    per = [[{"pick": 2}] * 3, [{"pick": 1}] * 3, [{"pick": 2}] * 3]
    m = S.method_summary(t, mixed, per)
    # seed 0 picks 2: others say 212 vs best 207.5; seed 1 picks 1: 202.5 vs 201; seed 2 picks 2: 210 vs 205
    assert m["regret_held_out_per_seed"] == pytest.approx([4.5, 1.5, 5.0])
    assert m["regret_held_out_t_ci"] == pytest.approx(S.t_interval([4.5, 1.5, 5.0]))
    assert m["includes_training_noise"]


def test_a_difference_the_held_out_seeds_do_not_confirm_is_not_called():
    """Every pick is the same, so the replays' and the across-seeds intervals are the point
    -0.33 (they judge by one mean over the seeds); judged by the other seeds, seeds 0 and 1 say
    b's pick is better and seed 2 says a's: not called."""
    t = _table([[0, 200, 210], [0, 200, 210], [0, 215, 196]])
    a = ([{"pick": 1}] * 40, [[{"pick": 1}] * 4] * 3)
    b = ([{"pick": 2}] * 40, [[{"pick": 2}] * 4] * 3)
    d = S.difference(t, a, b)
    assert d["mean"] == pytest.approx(205 - 616 / 3) and d["ci_excludes_zero"] and d["t_ci_excludes_zero"]
    assert d["per_seed_held_out"] == pytest.approx([4.5, 4.5, -10])
    assert not S.excludes_zero(d["t_ci_held_out"]) and d["verdict"] == "not distinguishable"


def test_intervals_that_exclude_zero_on_opposite_sides_call_nothing():
    # replays say a is better on average; every seed alone says b is: no verdict
    t = _table([[0, 200, 210], [0, 200, 210], [0, 200, 210]])
    a = ([{"pick": 1}] * 60, [[{"pick": 2}] * 5] * 3)
    b = ([{"pick": 2}] * 60, [[{"pick": 1}] * 5] * 3)
    d = S.difference(t, a, b)
    assert d["ci_excludes_zero"] and d["t_ci_excludes_zero"]
    assert d["ci"][1] < 0 < d["t_ci"][0] and d["verdict"] == "not distinguishable"


def test_off_plateau_val_noise_pools_the_runs_below_the_plateau_at_that_epoch():
    # config 2 leaves the plateau only at epoch 2: pooled at epoch 2, not at epoch 1
    evals = [[{1: {"val_ppl": 100.0}, 2: {"val_ppl": 90.0}},
              {1: {"val_ppl": 300.0 + s}, 2: {"val_ppl": 250.0 + 2 * s}},
              {1: {"val_ppl": 900.0 + s}, 2: {"val_ppl": 400.0 + 4 * s}}] for s in (0, 1)]
    t = Table("t", "ptb-lstm", {"final_epochs": 2}, [None] + grid("ptb-lstm")[:2], evals,
              [[100, 260, 410], [100, 262, 414]])
    n = S.noise(t)
    e1, e2 = n["val_ppl"]
    assert S.PLATEAU_PPL < 900 and 400 < S.PLATEAU_PPL
    assert e1["off_plateau"]["df"] == 1 and e2["off_plateau"]["df"] == 2
    assert e2["off_plateau"]["sd"] == pytest.approx(math.sqrt((2 ** 2 / 2 + 4 ** 2 / 2) / 2))


def test_paired_rho_difference_gives_a_verdict_only_with_seeds():
    rng = np.random.default_rng(1)
    y = rng.normal(size=(3, 30))
    r = S.seed_averaged_rho(y, y)
    d = S.paired_rho_difference(y, rng.normal(size=(3, 30)), y, r["idx"])
    assert d["t_ci"] is not None and d["verdict"] == "first ranks better"
    one = S.paired_rho_difference(y[:1], y[:1] * 0 + rng.normal(size=(1, 30)), y[:1],
                                  S.seed_averaged_rho(y[:1], y[:1])["idx"])
    assert one["t_ci"] is None and one["verdict"] == "undecided: one training seed"
