"""Tables: a pool trained once per training seed, with everything a replay needs."""
import math

import pytest

from lshx.errors import ConfigError, LshxError
from lshx.search.executors import SerialExecutor
from lshx.studies.table import load_table, table_configs, train_table


def test_table_records_every_epoch_and_the_test_ppl(tiny_data, tmp_path):
    cfg = table_configs("ptb-lstm", "random", 3, "smoke", data=tiny_data, max_batches=2, final_epochs=2,
                        state="both")
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
    from lshx.studies.table import Table

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
    assert table_configs("ptb-rhn", "gs24", None, "smoke", final_epochs=4, state="both").ls_extra == ["h-orth"]
    assert table_configs("ptb-lstm", "gs24", None, "smoke", final_epochs=4, state="both").ls_extra == ["hc", "h-orth"]
    assert table_configs("ptb-lstm", "gs24", None, "smoke", final_epochs=4).ls_extra is None
    with pytest.raises(ConfigError, match="unknown state"):
        table_configs("ptb-lstm", "gs24", None, "smoke", final_epochs=4, state="hc")
    with pytest.raises(ConfigError, match="chosen by state"):
        table_configs("ptb-lstm", "gs24", None, "smoke", final_epochs=4, ls_extra=["hc"])


class _Recording(SerialExecutor):
    """A serial executor that remembers which candidates it trained."""

    def __init__(self):
        super().__init__(threads=1)
        self.trained = []

    def map(self, fn, jobs):
        for j in jobs:
            self.trained.append(j["key"])
            yield fn(j)


def test_a_table_resumes_from_a_snapshot_without_checkpoints(tiny_data, tmp_path):
    """What scripts/gs24.sh relies on across sessions: a snapshot (no checkpoints, no lease)
    taken while a seed trains resumes on another machine; every finished evaluation and test is
    kept, and the runs that were in flight retrain to the same numbers."""
    import shutil
    import sqlite3

    from lshx.studies.table import snapshot

    cfg = table_configs("ptb-lstm", "random", 3, "smoke", data=tiny_data, max_batches=2, final_epochs=2)
    first = tmp_path / "one" / "t.sqlite"
    whole = train_table(cfg, first, SerialExecutor(threads=1), "t", seeds=2, quiet=True)
    # seed 1 as a snapshot taken while two of its runs were in flight: their results not stored yet
    table = load_table(first, "t")
    with sqlite3.connect(first) as con:
        keys = [r[0] for r in con.execute("SELECT eval_key FROM candidates WHERE search='t-t1' ORDER BY cid")]
        for k in keys[1:3]:
            con.execute("DELETE FROM evals WHERE eval_key=?", (k,))
            con.execute("DELETE FROM tests WHERE eval_key=?", (k,))
        con.execute("UPDATE searches SET status='running', result=NULL WHERE name='t-t1'")
        con.execute("INSERT INTO leases VALUES ('t-t1', 'elsewhere', 1, 0, 'x', 0)")
    info = snapshot(first, tmp_path / "two" / "t.sqlite")
    assert info["searches"] == {"t-t0": "done", "t-t1": "running"}
    with sqlite3.connect(tmp_path / "two" / "t.sqlite") as con:
        assert con.execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 0
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert not (tmp_path / "two" / "t-runs").exists()
    shutil.rmtree(tmp_path / "one")  # the first machine is gone
    ex = _Recording()
    again = train_table(cfg, tmp_path / "two" / "t.sqlite", ex, "t", seeds=2, resume=True, quiet=True)
    assert sorted(ex.trained) == sorted(keys[1:3])  # only what was in flight
    assert again == whole  # the same perplexities, to the last bit
    back = load_table(tmp_path / "two" / "t.sqlite", "t")
    for i in (1, 2):  # the retrained runs: spectra and losses too
        for e in (1, 2):
            for f in ("val_ppl", "spectrum", "train_loss"):
                assert back.evals[1][i][e][f] == table.evals[1][i][e][f]


def test_snapshot_refuses_what_it_cannot_copy(tmp_path):
    from lshx.studies.table import snapshot

    with pytest.raises(ConfigError, match="no run DB"):
        snapshot(tmp_path / "none.sqlite", tmp_path / "s.sqlite")
    (tmp_path / "x.sqlite").write_text("not a database")
    with pytest.raises(LshxError, match="not an SQLite"):
        snapshot(tmp_path / "x.sqlite", tmp_path / "s.sqlite")
    assert not (tmp_path / "s.sqlite").exists()


def test_check_retrain_script_finds_a_run_identical_and_a_tampered_one_not(tiny_data, tmp_path):
    """scripts/check_retrain.py (the resume check at a table's real scale): a stored run retrained
    from scratch is identical to the last bit, test ppl included; a changed stored number is
    named, exit 1; a wrong candidate is one line, exit 2. The DB is only read."""
    import hashlib
    import pathlib
    import sqlite3
    import subprocess
    import sys

    cfg = table_configs("ptb-lstm", "random", 2, "smoke", data=tiny_data, max_batches=2, final_epochs=2,
                        state="both")
    db = tmp_path / "t.sqlite"
    train_table(cfg, db, SerialExecutor(threads=1), "t", seeds=2, quiet=True)
    script = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "check_retrain.py"

    def check(*args):
        return subprocess.run([sys.executable, str(script), str(db), "--search", "t-t1", *args],
                              capture_output=True, text=True)

    before = hashlib.sha256(db.read_bytes()).hexdigest()
    r = check("--cid", "2", "--epochs", "all")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "training seed 1" in r.stdout and "every number identical" in r.stdout and "test ppl" in r.stdout
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    with sqlite3.connect(db) as con:
        key = con.execute("SELECT eval_key FROM candidates WHERE search='t-t1' AND cid=2").fetchone()[0]
        con.execute("UPDATE evals SET val_ppl = val_ppl + 1e-9 WHERE eval_key=? AND seed=0 AND epoch=1", (key,))
    r = check("--cid", "2", "--epochs", "1")
    assert r.returncode == 1 and "epoch 1 val_ppl" in r.stdout
    r = check("--cid", "9")
    assert r.returncode == 2 and r.stderr.strip() == "check_retrain: search 't-t1' has no candidate 9"
    for bad in (["--cid", "x"], ["--cid", "2", "--epochs", "x"], ["--cid", "2", "--epochs", "0"],
                ["--cid", "2", "--epochs", "3"]):
        r = check(*bad)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, (bad, r.stderr)
    # a stored NaN (SQLite keeps it as NULL) is compared as a NaN, not a crash
    with sqlite3.connect(db) as con:
        con.execute("UPDATE evals SET val_ppl = NULL, train_loss = NULL, diverged = 1 WHERE eval_key=? AND seed=0 "
                    "AND epoch=1", (key,))
    r = check("--cid", "2", "--epochs", "1")
    assert r.returncode == 1 and "epoch 1 val_ppl: nan ->" in r.stdout and "Traceback" not in r.stderr
