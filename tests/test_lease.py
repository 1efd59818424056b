"""One owner per search: a second process is refused naming the holder, or waits (--wait) and
trains nothing; a holder killed with SIGKILL is taken over and the search resumes without
training a finished epoch again; a lease of another host is taken over only once stale."""
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from lshx.checkpoint import load_checkpoint
from lshx.search.executors import SerialExecutor
from lshx.search.lease import Lease, LeaseLost, SearchBusy
from lshx.search.config import SearchConfig
from lshx.search.engine import run_search
from lshx.search.rundb import RunDB

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _cmd(tiny_data, db, *extra):
    return [sys.executable, "-m", "lshx.cli.main", "search", "ptb-lstm", "--preset", "smoke", "--data", tiny_data,
            "--db", str(db), "--name", "s", "--json", "--quiet", "--max-batches", "8", *extra]


def _count(db, sql):
    try:
        with sqlite3.connect(db, timeout=5) as c:
            return c.execute(sql).fetchone()[0]
    except sqlite3.Error:
        return 0


def _wait_until(pred, proc, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if pred():
            return True
        time.sleep(0.05)
    return False


def _eval_pids(db, name):
    """{(eval key, epoch): pid of the process that trained that epoch}, from the checkpoints."""
    rdb = RunDB(db)
    try:
        out = {}
        for cand in rdb.candidates(name):
            path = os.path.join(cand["ckpt_dir"], "last.pt")
            if not os.path.exists(path):  # (not started when the search was killed)
                continue
            ck = load_checkpoint(path)
            for ev in ck["lsh_evals"]:
                out[(cand["eval_key"], ev["epoch"])] = (ev["pid"], ev["created"])
        return out
    finally:
        rdb.close()


def test_a_second_process_is_refused_or_waits_and_trains_nothing(tiny_data, tmp_path):
    db = tmp_path / "s.sqlite"
    first = subprocess.Popen(_cmd(tiny_data, db, "--resume"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=ENV)
    try:
        assert _wait_until(lambda: _count(db, "SELECT COUNT(*) FROM evals") >= 2, first), "the first never trained"
        first.send_signal(signal.SIGSTOP)  # (so that it cannot finish before the second has started)
        # `make demo` in a second terminal: refused, in one line naming the holder
        try:
            second = subprocess.run(_cmd(tiny_data, db, "--resume"), capture_output=True, text=True, env=ENV)
        finally:
            first.send_signal(signal.SIGCONT)
        assert second.returncode == 2
        err = second.stderr.strip()
        assert err.count("\n") == 0 and "Traceback" not in err
        assert f"is being run by host {socket.gethostname()}, pid {first.pid}" in err and "--wait" in err
        # with --wait it waits for the first and then reads the finished search back
        waited = subprocess.run(_cmd(tiny_data, db, "--resume", "--wait"), capture_output=True, text=True, env=ENV,
                                timeout=600)
        out, _ = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0 and waited.returncode == 0, waited.stderr
    assert json.loads(waited.stdout)["best"] == json.loads(out)["best"]
    # every epoch of every candidate was trained by the first process alone
    assert {pid for pid, _ in _eval_pids(db, "s").values()} == {first.pid}
    assert _count(db, "SELECT COUNT(*) FROM leases") == 0  # both released it


def test_a_killed_holder_is_taken_over_and_nothing_finished_is_trained_again(tiny_data, tmp_path):
    cfg = SearchConfig.from_preset("ptb-lstm", "smoke", data=tiny_data, max_batches=8)
    expected = run_search(cfg, tmp_path / "ref.sqlite", SerialExecutor(), name="s", quiet=True)
    db = tmp_path / "k.sqlite"
    proc = subprocess.Popen(_cmd(tiny_data, db), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    if _wait_until(lambda: _count(db, "SELECT COUNT(*) FROM evals") >= 8, proc):
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the search finished before it could be killed"
    with sqlite3.connect(db) as c:
        holder = c.execute("SELECT host, pid FROM leases WHERE search='s'").fetchone()
    assert holder == (socket.gethostname(), proc.pid)  # the dead process's lease is still there
    before = _eval_pids(db, "s")
    again = subprocess.run(_cmd(tiny_data, db, "--resume"), capture_output=True, text=True, env=ENV, timeout=600)
    assert again.returncode == 0, again.stderr
    got = json.loads(again.stdout)
    assert got["best"]["config"] == expected["best"]["config"]
    assert got["best"]["val_ppl"] == pytest.approx(expected["best"]["val_ppl"])
    assert got["rounds"] == expected["rounds"]
    after = _eval_pids(db, "s")
    for key, (pid, created) in before.items():  # every epoch finished before the kill is kept as it was
        assert after[key] == (pid, created) and pid == proc.pid
    resumed = {pid for key, (pid, _) in after.items() if key not in before}
    assert len(resumed) == 1 and proc.pid not in resumed  # the rest, by the process that took over


def test_a_lease_of_another_host_is_taken_over_only_once_stale(tiny_data, tmp_path):
    cfg = SearchConfig.from_preset("ptb-lstm", "smoke", data=tiny_data, max_batches=2, n=2, final_epochs=2)
    db = tmp_path / "s.sqlite"
    run_search(cfg, db, SerialExecutor(), name="s", quiet=True)
    with sqlite3.connect(db) as c:
        c.execute("UPDATE searches SET status='running', result=NULL")
        c.execute("INSERT INTO leases VALUES ('s', 'elsewhere', 4242, ?, 'theirs', ?)", (time.time(), time.time()))
    with pytest.raises(SearchBusy, match="being run by host elsewhere, pid 4242"):
        run_search(cfg, db, SerialExecutor(), name="s", resume=True, quiet=True, lease_stale_s=30)
    with sqlite3.connect(db) as c:  # its heartbeat stopped 40 s ago
        c.execute("UPDATE leases SET heartbeat=?", (time.time() - 40,))
    res = run_search(cfg, db, SerialExecutor(), name="s", resume=True, quiet=True, lease_stale_s=30)
    assert res["best"]["config"]
    assert _count(db, "SELECT COUNT(*) FROM leases") == 0


def test_wait_waits_for_the_holder_to_let_go(tiny_data, tmp_path):
    cfg = SearchConfig.from_preset("ptb-lstm", "smoke", data=tiny_data, max_batches=2, n=2, final_epochs=2)
    db = tmp_path / "s.sqlite"
    RunDB(db).close()
    with sqlite3.connect(db) as c:
        c.execute("INSERT INTO leases VALUES ('s', 'elsewhere', 4242, ?, 'theirs', ?)", (time.time(), time.time()))

    def let_go():
        time.sleep(1.5)
        with sqlite3.connect(db) as c:
            c.execute("DELETE FROM leases")

    t = threading.Thread(target=let_go)
    t0 = time.perf_counter()
    t.start()
    res = run_search(cfg, db, SerialExecutor(), name="s", quiet=True, wait=True, lease_stale_s=30)
    t.join()
    assert time.perf_counter() - t0 > 1.5 and res["best"]["config"]


def test_a_holder_whose_lease_was_taken_over_stops(tmp_path):
    db = RunDB(tmp_path / "s.sqlite")
    lease = Lease(db, "s", stale_s=0.4)
    lease.acquire()
    lease.check()
    with sqlite3.connect(tmp_path / "s.sqlite") as c:  # another host took it while this one was stopped
        c.execute("UPDATE leases SET host='elsewhere', pid=4242, token='theirs'")
    deadline = time.time() + 10
    while lease.lost is None and time.time() < deadline:
        time.sleep(0.05)
    with pytest.raises(LeaseLost, match="now held by host elsewhere, pid 4242"):
        lease.check()
    lease.release()
    assert db.get_lease("s")["token"] == "theirs"  # releasing never drops another's lease
    db.close()


def test_the_heartbeat_keeps_a_lease_fresh(tmp_path):
    db = RunDB(tmp_path / "s.sqlite")
    lease = Lease(db, "s", stale_s=0.4)
    lease.acquire()
    first = db.get_lease("s")["heartbeat"]
    time.sleep(0.5)
    assert db.get_lease("s")["heartbeat"] > first
    other = Lease(db, "s", stale_s=0.4)
    other.host = "elsewhere"  # on this host our own pid would count as a dead holder
    with pytest.raises(SearchBusy):
        other.acquire()
    lease.release()
    assert db.get_lease("s") is None
    db.close()
