"""The run DB: files that are not run DBs are refused in one line and left as they were, older
run DBs are migrated, new ones are created by two processes at once, a busy DB is waited on."""
import hashlib
import os
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from click.testing import CliRunner

from lshx.cli.main import main
from lshx.errors import LshxError
from lshx.search.rundb import SCHEMA_VERSION, RunDB

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# the schema as the first lshx wrote it (no train_loss/extra, no leases, user_version 0)
OLD_SCHEMA = """
CREATE TABLE searches (name TEXT PRIMARY KEY, task TEXT, args TEXT, created REAL, status TEXT, result TEXT);
CREATE TABLE candidates (search TEXT, cid INTEGER, config TEXT, config_hash TEXT, eval_key TEXT, origin TEXT,
  round INTEGER, status TEXT, ckpt_dir TEXT, PRIMARY KEY (search, cid));
CREATE TABLE evals (eval_key TEXT, seed INTEGER, epoch INTEGER, val_ppl REAL, spectrum TEXT, diverged INTEGER,
  seconds REAL, ckpt TEXT, created REAL, PRIMARY KEY (eval_key, seed, epoch));
CREATE TABLE tests (eval_key TEXT, seed INTEGER, test_ppl REAL, PRIMARY KEY (eval_key, seed));
CREATE TABLE rounds (search TEXT, round INTEGER, epoch INTEGER, alive TEXT, eliminated TEXT, inserted TEXT,
  distances TEXT, PRIMARY KEY (search, round));
"""


def _digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _not_run_dbs(tmp_path):
    text = tmp_path / "passwd"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as c:
        c.execute("CREATE TABLE people (name TEXT)")
        c.execute("INSERT INTO people VALUES ('ada')")
    newer = tmp_path / "newer.sqlite"
    with sqlite3.connect(newer) as c:
        c.executescript(OLD_SCHEMA)
        c.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    broken = tmp_path / "broken.sqlite"  # a run DB of another lshx: a table lacks columns this one reads
    with sqlite3.connect(broken) as c:
        c.execute("CREATE TABLE searches (name TEXT PRIMARY KEY, status TEXT)")
    return {"not sqlite": (text, "not a run DB (not an SQLite file)"),
            "other tables": (other, "not a run DB (its tables: people)"),
            "newer lshx": (newer, "written by a newer lshx"),
            "missing columns": (broken, "cannot be read by this lshx")}


def test_files_that_are_not_run_dbs_are_refused_and_left_as_they_were(tmp_path):
    for what, (path, msg) in _not_run_dbs(tmp_path).items():
        before = _digest(path)
        with pytest.raises(LshxError, match=msg.replace("(", r"\(").replace(")", r"\)")):
            RunDB(path)
        assert _digest(path) == before, what
        assert not os.path.exists(f"{path}-wal") and not os.path.exists(f"{path}-journal"), what


@pytest.mark.parametrize("command", [
    ["report", "{db}", "--out", "{tmp}/r"],
    ["search", "ptb-lstm", "--preset", "smoke", "--data", "{data}", "--db", "{db}", "--quiet"],
    ["study", "correlation", "--preset", "smoke", "--n", "2", "--final-epochs", "2", "--data", "{data}",
     "--db", "{db}", "--quiet"],
    ["study", "table", "--space", "random", "--n", "2", "--preset", "smoke", "--final-epochs", "2",
     "--data", "{data}", "--db", "{db}", "--quiet"],
])
def test_every_command_says_one_line_and_exits_2(tmp_path, tiny_data, command):
    for what, (path, msg) in _not_run_dbs(tmp_path).items():
        before = _digest(path)
        args = [a.format(db=path, tmp=tmp_path, data=tiny_data) for a in command]
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 2, (what, r.output)
        err = r.stderr.strip()
        assert err.count("\n") == 0 and msg in err and err.startswith("lshx: error:"), (what, err)
        assert _digest(path) == before, what
    assert not (tmp_path / "r").exists() and not list(tmp_path.glob("*-runs"))


def test_a_run_db_of_the_first_schema_is_migrated(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as c:
        c.executescript(OLD_SCHEMA)
        c.execute("INSERT INTO searches VALUES ('s', 'ptb-lstm', '{\"seed\": 0}', 1.0, 'done', NULL)")
        c.execute("INSERT INTO evals VALUES ('k', 0, 1, 100.0, '[0.1]', 0, 1.0, 'x.pt', 1.0)")
    db = RunDB(path)
    assert db.get_search("s")["status"] == "done"
    assert db.evals("k", 0)[1]["val_ppl"] == 100.0 and db.evals("k", 0)[1]["train_loss"] is None
    assert db.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.get_lease("s") is None  # the leases table was added
    db.close()
    RunDB(path).close()  # and opening it again changes nothing


OPEN_AT = """
import sys, time
t = float(sys.argv[2])
while time.time() < t:
    pass
from lshx.search.rundb import RunDB
db = RunDB(sys.argv[1])
db.get_search("x")
db.close()
"""


def test_processes_opening_a_new_db_at_the_same_moment_all_succeed(tmp_path):
    """Three real processes open each new DB at the same instant, 12 times: the WAL switch
    (which ignores the busy timeout) and the creation of the tables and columns must not
    fail in any of them (before: 'database is locked' at PRAGMA journal_mode=WAL, then
    'duplicate column name' when two added the same column)."""
    script = tmp_path / "open_at.py"
    script.write_text(OPEN_AT)
    env = {**os.environ, "PYTHONPATH": ROOT}
    failures = []
    for i in range(12):
        db = tmp_path / f"new{i}.sqlite"
        start = time.time() + 1.0
        procs = [subprocess.Popen([sys.executable, str(script), str(db), repr(start)], stderr=subprocess.PIPE,
                                  text=True, env=env) for _ in range(3)]
        for p in procs:
            _, err = p.communicate(timeout=120)
            if p.returncode != 0:
                failures.append(err.strip().splitlines()[-1])
        assert RunDB(db).conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert not failures, failures


def test_a_busy_db_is_waited_on(tmp_path):
    path = tmp_path / "b.sqlite"
    RunDB(path).close()
    locked, release = threading.Event(), threading.Event()

    def hold():
        c = sqlite3.connect(path, isolation_level=None)
        c.execute("BEGIN IMMEDIATE")
        c.execute("INSERT INTO tests VALUES ('held', 0, 1.0)")
        locked.set()
        release.wait(10)
        time.sleep(1.0)
        c.execute("COMMIT")
        c.close()

    t = threading.Thread(target=hold)
    t.start()
    assert locked.wait(10)
    db = RunDB(path)  # opens while another connection holds the write lock
    release.set()
    t0 = time.perf_counter()
    db.put_test("mine", 0, 2.0)  # waits for the lock instead of 'database is locked'
    waited = time.perf_counter() - t0
    t.join()
    assert waited > 0.5
    assert db.tests(0) == {"held": 1.0, "mine": 2.0}
    db.close()


def test_a_readonly_open_writes_nothing_and_refuses_an_older_schema(tmp_path):
    """What a committed table is read with: the file stays byte for byte as it is (no switch to
    WAL, no -wal/-shm beside it); a DB that would need migrating is refused, not migrated."""
    path = tmp_path / "t.sqlite"
    db = RunDB(path)
    db.create_search("s", "ptb-lstm", {"seed": 0})
    db.close()
    c = sqlite3.connect(path)
    c.execute("PRAGMA journal_mode=DELETE")
    c.close()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    ro = RunDB(path, readonly=True)
    assert ro.get_search("s")["task"] == "ptb-lstm"
    ro.close()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.sqlite"]
    old = tmp_path / "old.sqlite"
    sqlite3.connect(old).executescript(OLD_SCHEMA)
    with pytest.raises(LshxError, match="older lshx"):
        RunDB(old, readonly=True)
    with pytest.raises(LshxError, match="no run DB"):
        RunDB(tmp_path / "missing.sqlite", readonly=True)
