"""lshx bench: cases timed round-robin, each checked against its reference before it is timed
(the timings themselves are not tested: tests check correctness, never time)."""
import pytest

from lshx.studies import bench, bench_spectrum


def test_cases_are_timed_round_robin():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    res = bench.interleaved(fns, repeats=3, target_s=None)
    assert calls == list("abc") + list("abc") * 3  # one warm-up call each, then A B C A B C A B C
    assert set(res) == set("abc") and all(r["rounds"] == 3 and r["calls_per_round"] == 1 for r in res.values())
    r = res["a"]
    assert r["min_ms"] <= r["q1_ms"] <= r["median_ms"] <= r["q3_ms"] <= r["max_ms"]


def test_ratio_spread_is_the_range_the_quartiles_allow():
    ref = {"median_ms": 10.0, "q1_ms": 9.0, "q3_ms": 12.0}
    new = {"median_ms": 5.0, "q1_ms": 4.0, "q3_ms": 6.0}
    assert bench.ratio_spread(ref, new) == (2.0, 1.5, 3.0)


def test_ls_step_checks_every_variant_and_the_authors_algorithm():
    res = bench_spectrum.ls_step_case(16, 2, samples=2, steps=4, repeats=1,
                             variants=(("householder", 1), ("householder", "auto"), ("cholqr2", 2), ("batched", 1)))
    assert res["authors_err"] < 1e-5  # the authors' algorithm is lshx's J^T propagation
    for c in res["cases"]:
        assert c["top_half_err"] < 1e-3 and c["median_ms"] > 0 and c["vs_authors"] > 0, c
    assert [c["qrs"] for c in res["cases"]][:1] == [4] and res["cases"][2]["qrs"] == 2  # m = 2: 2 QRs in 4 steps


@pytest.mark.parametrize("train", [False, True])
def test_matmul_case_is_correct_before_it_is_timed(train):
    c = bench.matmul_case(64, 32, 5, 0.3, train=train, repeats=1)
    assert c["max_rel_err"] < 1e-4 and c["ratio_lo"] <= c["ratio"] <= c["ratio_hi"]


def test_train_epoch_case_times_every_way_round_robin():
    c = bench.train_epoch_case("ptb-lstm", "smoke", 0.33, batches=2, repeats=1)
    assert all(c[f"{n}_ms"] > 0 for n in ("dense", "selfish", "lshx", "loop"))
    assert c["ratio"] == pytest.approx(c["selfish_ms"] / c["lshx_ms"])
