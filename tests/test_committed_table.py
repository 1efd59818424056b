"""The committed GS-24 table (docs/tables/) is complete and self-contained, and the replay
numbers of docs/results.md (f) (docs/figures/replay/replay.json) come back from it with
this code: the same searches on the same table give the same means, to the last digit."""
import json
import math
import sqlite3
from pathlib import Path

import pytest

from lshx.errors import ConfigError

from lshx.studies.replay import default_methods, replay
from lshx.studies.table import is_grid_table, load_table

ROOT = Path(__file__).resolve().parent.parent
DB = ROOT / "docs" / "tables" / "gs24-small-P12.sqlite"
NAME = "gs24-small-P12"
REPLAY = ROOT / "docs" / "figures" / "replay" / "replay.json"


@pytest.fixture(scope="module")
def table():
    return load_table(DB, NAME)


def test_the_table_is_the_whole_grid_trained_to_p_with_every_signal(table):
    """Every training seed the table holds (three when issue 21's seeds are in)."""
    assert is_grid_table(table) and len(table.configs) == 25 and table.configs[0] is None
    assert table.final_epochs == 12 and table.seeds == list(range(len(table.evals)))
    for t in range(len(table.evals)):
        for i in range(len(table.configs)):
            ev = table.evals[t][i]
            assert sorted(ev) == list(range(1, 13)), (t, i)
            for e, r in ev.items():
                assert math.isfinite(r["val_ppl"]) and math.isfinite(r["train_loss"]), (t, i, e)
                # h (2 layers of 200), (h, c) and h with the aligned warm-up; the dense model's too
                assert len(r["spectrum"]) == 400 and all(map(math.isfinite, r["spectrum"])), (t, i, e)
                assert len(r["extra"]["hc"]) == 800 and len(r["extra"]["h-orth"]) == 400, (t, i, e)
            assert math.isfinite(table.test[t][i]) and table.test[t][i] > 1
    if len(table.evals) > 1:  # the seeds are trainings of their own, not copies
        assert table.evals[0][1][12]["val_ppl"] != table.evals[1][1][12]["val_ppl"]


PARTIAL = ROOT / "docs" / "tables" / "gs24-small-P12.partial.sqlite"


@pytest.mark.skipif(not PARTIAL.exists(), reason="no partial snapshot committed (the table's seeds are all in)")
def test_the_partial_snapshot_resumes_elsewhere():
    """What scripts/gs24.sh commits while the seeds train: one file (no -wal, rollback
    journal), no lease, the finished seed 0 as in the table, the seeds in training named."""
    c = sqlite3.connect(f"file:{PARTIAL}?mode=ro", uri=True)
    try:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] != "wal"
        assert c.execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 0
        status = dict(c.execute("SELECT name, status FROM searches"))
    finally:
        c.close()
    assert status[f"{NAME}-t0"] == "done" and set(status) <= {f"{NAME}-t{t}" for t in range(3)}
    unfinished = sorted(n for n, v in status.items() if v != "done")
    if unfinished:  # a replay refuses it, naming the seed in training and the finished ones
        with pytest.raises(ConfigError, match=f"{unfinished[0]} is not finished.*--table-seeds 0"):
            load_table(PARTIAL, NAME)
    done = load_table(PARTIAL, NAME, [0])  # which replay alone, with seed 0's numbers
    whole = load_table(DB, NAME, [0])
    assert done.evals == whole.evals and done.test == whole.test and done.configs == whole.configs
    finished = sorted(int(n.rsplit("-t", 1)[1]) for n, v in status.items() if v == "done")
    done = load_table(PARTIAL, NAME, finished)  # every finished seed whole: 25 runs x 12 epochs, tested
    assert done.seeds == finished
    for t in range(len(finished)):
        assert len(done.evals[t]) == 25 and all(sorted(e) == list(range(1, 13)) for e in done.evals[t])
        assert all(math.isfinite(x) for x in done.test[t])


def test_the_committed_db_holds_no_checkpoints_and_no_lease():
    c = sqlite3.connect(f"file:{DB}?mode=ro", uri=True)
    try:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] != "wal"  # one self-contained file
        assert c.execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 0
        # only spectra and perplexities: a checkpoint of the small preset alone is megabytes
        assert max(len(r[0] or "") for r in c.execute("SELECT spectrum FROM evals")) < 20_000
        seeds = c.execute("SELECT COUNT(*) FROM searches").fetchone()[0]
    finally:
        c.close()
    assert DB.stat().st_size < 12_000_000 * seeds  # (about 10 MB a training seed)


def test_the_committed_replay_numbers_come_back_from_the_table():
    """LSH (pca2) and the loss-based search at e0 = 2, ei = 1 with the grid, over the same
    1000 seeds and training seeds as the committed replay: identical means and pick statistics.
    (A replay.json without training_seeds was made on the one-seed table: seed 0.)"""
    want = json.loads(REPLAY.read_text())
    table = load_table(DB, NAME, want.get("training_seeds", [0]))
    assert want["table"] == NAME and want["best"]["test_ppl"] == table.mean_test(table.best())
    methods = [m for m in default_methods(table) if m.name in ("lsh-pca2", "loss")]
    got = replay(table, methods, hpos=("grid",), e0s=(2,), eis=(1,), seeds=want["methods"][0]["seeds"],
                 full_curve=False)
    assert len(got["methods"]) == 2
    for m in got["methods"]:
        ref = next(r for r in want["methods"] if (r["method"], r["hpo"], r["e0"], r["ei"]) ==
                   (m["method"], "grid", 2, 1))
        for k in ("final_test_ppl_mean", "regret_mean", "p_best", "train_epochs_mean", "distinct_picks"):
            assert m[k] == pytest.approx(ref[k], rel=1e-12, abs=1e-12), (m["method"], k)
