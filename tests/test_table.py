"""Tables: a pool trained once per training seed, with everything a replay needs."""
import math

import pytest

from lshx.errors import ConfigError
from lshx.search.executors import SerialExecutor
from lshx.table import load_table, table_configs, train_table


def test_table_records_every_epoch_and_the_test_ppl(tiny_data, tmp_path):
    cfg = table_configs("ptb-lstm", "random", 3, "smoke", data=tiny_data, max_batches=2, final_epochs=2,
                        ls_extra=["hc", "h-orth"])
    summary = train_table(cfg, tmp_path / "t.sqlite", SerialExecutor(threads=1), "t", seeds=2, quiet=True)
    assert summary["configs"] == 3 and summary["seeds"] == 2
    table = load_table(tmp_path / "t.sqlite", "t")
    assert table.configs[0] is None and len(table.configs) == 4  # the dense model first
    for seed in range(2):
        for i in range(4):
            evs = table.evals[seed][i]
            assert sorted(evs) == [1, 2]
            for ev in evs.values():
                assert math.isfinite(ev["val_ppl"]) and math.isfinite(ev["train_loss"])
                assert len(ev["spectrum"]) == 64  # N = 2 layers x 32
                assert len(ev["extra"]["hc"]) == 128 and len(ev["extra"]["h-orth"]) == 64
            assert math.isfinite(table.test[seed][i])
    # the two training seeds are two trainings of the same configurations
    assert table.evals[0][1][2]["val_ppl"] != table.evals[1][1][2]["val_ppl"]
    # resuming a finished table trains nothing and gives the same table
    again = train_table(cfg, tmp_path / "t.sqlite", SerialExecutor(threads=1), "t", seeds=2, resume=True, quiet=True)
    assert again == summary


def test_table_options_and_missing_tables(tmp_path):
    with pytest.raises(ConfigError, match="gs24 is the whole grid"):
        table_configs("ptb-lstm", "gs24", 10, "smoke")
    with pytest.raises(ConfigError, match="needs --n"):
        table_configs("ptb-lstm", "random", None, "smoke")
    assert table_configs("ptb-lstm", "gs24", None, "smoke", final_epochs=4).n == 24
    with pytest.raises(ConfigError, match="no run DB"):
        load_table(tmp_path / "none.sqlite", "x")


def test_off_plateau_counts_sparse_runs_below_the_threshold():
    from lshx.table import Table

    def evs(*vals):
        return {e: {"epoch": e, "val_ppl": v} for e, v in enumerate(vals, start=1) if v is not None}

    seed0 = [evs(400, 300), evs(650, 440), evs(620, math.inf), evs(700, None)]  # dense, three configs
    seed1 = [evs(420, 320), evs(640, 460), evs(449, 300), evs(800, 600)]
    t = Table("t", "ptb-lstm", {"final_epochs": 2}, [None, {}, {}, {}], [seed0, seed1], [[0] * 4] * 2)
    rows = t.off_plateau(450)
    assert [(r["epoch"], r["off"], r["runs"]) for r in rows] == [(1, 1, 6), (2, 2, 6)]
    assert rows[0]["dense_val_ppl"] == 410 and rows[1]["dense_val_ppl"] == 310
    assert rows[0]["median_val_ppl"] == 645  # (640 + 650) / 2
    assert rows[1]["median_val_ppl"] == 530  # 300, 440, 460, 600, inf (diverged), inf (missing)


def test_table_options_are_checked_before_training():
    """Whole epochs unless asked (not the search preset's cap); the RHN has no hc spectrum."""
    assert table_configs("ptb-lstm", "gs24", None, "small", final_epochs=12).max_batches is None
    assert table_configs("ptb-lstm", "gs24", None, "small", final_epochs=12, max_batches=5).max_batches == 5
    with pytest.raises(ConfigError, match="single state vector"):
        table_configs("ptb-rhn", "gs24", None, "smoke", final_epochs=4, ls_extra=["hc", "h-orth"])
    assert table_configs("ptb-rhn", "gs24", None, "smoke", final_epochs=4, ls_extra=["h-orth"]).ls_extra == ["h-orth"]
