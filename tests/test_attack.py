"""The CLI and the run DB under attack (issue 26): each bad input or failed write gets one line
and a non-zero exit, no traceback, and loses nothing. Which case each test covers:

1. damaged or incomplete tables: replay refuses them in one line (test_a_damaged_table_...);
   a live search whose dense model diverged stops in one line (test_a_diverged_dense_...)
2. a missing epoch or run is refused, not replayed on (test_an_incomplete_table_...)
3. messages that mislead: an empty file, a search DB listed as a table (test_misleading_...)
4. output paths checked before any work: unwritable --out, --db under a file, in a read-only
   folder (test_paths_are_checked_before_any_work, as a user without root's override)
5. write failures during a run: a folder made read-only (test_a_folder_made_read_only_...), a
   full disk (test_a_full_disk_...), a DB locked past LSHX_DB_TIMEOUT (test_a_locked_db_...)
6. SIGTERM is handled as SIGINT is (test_sigterm_...); workers die with their driver
   (test_workers_exit_when_their_driver_is_killed)
7. numbers validated: seeds, --lr, --device, an unreadable split, LSHX_DB_TIMEOUT
   (test_numbers_are_validated_before_anything_is_written)
8. the replay's nonsense options (test_replay_refuses_nonsense_options)
9. train: --max-batches 0 refused, --death-rate 0 means a fixed topology (test_train_options)
10. readers never write: report, replay, a finished search resumed (test_readers_never_write)
11. Ctrl-C in the replay does not promise a --resume it lacks (test_interrupt_messages_...)
12. a --db with a trailing slash (test_paths_are_checked_before_any_work)
"""
import os
import signal
import subprocess
import sys
import time
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from lshx.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "docs" / "tables" / "gs24-small-P12.sqlite"
NAME = "gs24-small-P12"
REPLAY = ["--table", NAME, "--seeds", "2", "--methods", "lsh-pca2,loss", "--hpo", "grid", "--e0", "2", "--ei", "1",
          "--no-full-curve", "--quiet"]


def lshx(*args):
    """Runs the CLI in this process: (exit code, stdout, stderr); a traceback fails the test."""
    r = CliRunner().invoke(main, [str(a) for a in args])
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout, r.stderr


def one_line_error(code, out, err, *words):
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lshx: error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.fixture
def table(tmp_path):
    """A copy of the committed table, and the eval keys of its first seed's dense model and
    candidate 1."""
    path = tmp_path / "t.sqlite"
    shutil.copy(TABLE, path)
    con = sqlite3.connect(path)
    keys = dict(con.execute(f"SELECT cid, eval_key FROM candidates WHERE search='{NAME}-t0' AND cid IN (0, 1)"))
    con.close()
    return path, keys[0], keys[1]


def _sql(path, *statements):
    con = sqlite3.connect(path)
    with con:
        for s in statements:
            con.execute(s)
    con.close()


DAMAGE = {
    "dense epoch 2 deleted": ("delete from evals where eval_key='{dense}' and epoch=2", "lacks epoch 2"),
    "dense spectrum NULL": ("update evals set spectrum=NULL where eval_key='{dense}' and epoch=3",
                            "no finite spectrum at epoch 3"),
    "dense spectrum NaN": ("update evals set spectrum='[NaN, 1.0]' where eval_key='{dense}' and epoch=3",
                           "no finite spectrum at epoch 3"),
    "test ppl NULL": ("update tests set test_ppl=NULL where eval_key='{cand}'", "no test perplexity"),
    "bad JSON in args": ("update searches set args='{{bad' where name='" + NAME + "-t0'", "damaged"),
    "bad JSON in config": ("update candidates set config='[1,' where eval_key='{cand}'", "damaged"),
    "bad JSON in spectrum": ("update evals set spectrum='[1,' where eval_key='{cand}' and epoch=1", "damaged"),
    "bad JSON in extra": ("update evals set extra='{{' where eval_key='{cand}' and epoch=1", "damaged"),
    "spectrum of the wrong length": ("update evals set spectrum='[1.0, 2.0]' where eval_key='{cand}' and epoch=4",
                                     "another length"),
    "no dense row": (f"delete from candidates where search='{NAME}-t0' and cid=0", "no dense model"),
    "val ppl NULL": ("update evals set val_ppl=NULL where eval_key='{cand}' and epoch=5", "no validation perplexity"),
    "dense extra spectrum NaN": ("update evals set extra=json_set(extra, '$.hc[0]', 'NaN') where eval_key='{dense}' "
                                 "and epoch=4", "no finite hc spectrum"),
    "dense diverged": ("update evals set diverged=1 where eval_key='{dense}' and epoch=6", "diverged at epoch 6"),
}


def _second_seed(path):
    """Adds seed 0 of the table again as training seed 1, sharing its runs (eval keys): a table
    of two identical seeds (for a committed table of one seed)."""
    _sql(path,
         f"insert into searches select '{NAME}-t1', task, json_set(args, '$.train_seed', 1), created, "
         f"status, result from searches where name='{NAME}-t0'",
         f"insert into candidates select '{NAME}-t1', cid, config, config_hash, eval_key, origin, round, status, "
         f"ckpt_dir from candidates where search='{NAME}-t0'")


def test_seeds_with_other_configurations_are_refused_naming_them(table):
    path, _, _ = table
    con = sqlite3.connect(path)
    seeds = con.execute("SELECT COUNT(*) FROM searches").fetchone()[0]
    con.close()
    if seeds < 2:
        _second_seed(path)
    code, out, err = lshx("study", "replay", path, *REPLAY)
    assert code == 0, err  # the seeds, with the same configurations, replay
    _sql(path, f"update candidates set config=json_set(config, '$.death_rate', 0.5) "
               f"where search='{NAME}-t1' and cid=1")
    one_line_error(*lshx("study", "replay", path, *REPLAY), "holds other configurations", "lacks 1 of",
                   "adds 1: ", "dr=0.500")
    # the same configurations in another order are also refused (candidates are matched by index)
    _sql(path, f"update candidates set config=(select config from candidates where search='{NAME}-t0' and "
               f"cid=1) where search='{NAME}-t1' and cid=1",
         f"update candidates set cid=cid+1000 where search='{NAME}-t1' and cid in (1, 2)",
         f"update candidates set cid=2 where search='{NAME}-t1' and cid=1001",
         f"update candidates set cid=1 where search='{NAME}-t1' and cid=1002")
    one_line_error(*lshx("study", "replay", path, *REPLAY), "another candidate order")


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_table_is_refused_in_one_line(table, case):
    path, dense, cand = table
    sql, words = DAMAGE[case]
    _sql(path, sql.format(dense=dense, cand=cand))
    one_line_error(*lshx("study", "replay", path, *REPLAY), words)


def test_a_garbled_page_is_refused_in_one_line(table):
    path, _, _ = table
    data = bytearray(path.read_bytes())
    for off in range(8192, len(data), 4096 * 37):  # every 37th page, past the schema
        data[off:off + 512] = b"\xff" * 512
    path.write_bytes(bytes(data))
    one_line_error(*lshx("study", "replay", path, *REPLAY))


@pytest.mark.parametrize("what", ["one epoch", "every evaluation"])
def test_an_incomplete_table_is_refused_naming_what_is_missing(table, what):
    path, _, cand = table
    where = "and epoch=2" if what == "one epoch" else ""
    _sql(path, f"delete from evals where eval_key='{cand}' {where}")
    missing = "epoch 2 " if what == "one epoch" else "epochs 1, 2, 3"
    one_line_error(*lshx("study", "replay", path, *REPLAY), "candidate 1", missing)


def test_a_diverged_dense_model_stops_a_live_search_in_one_line():
    from lshx.errors import ConfigError
    from lshx.search.schedule import distances

    cands = {1: {1: {"epoch": 1, "spectrum": [0.1, 0.2], "diverged": False, "val_ppl": 500.0}}}
    for dense in ({}, {1: {"epoch": 1, "spectrum": None, "diverged": True, "val_ppl": None}},
                  {1: {"epoch": 1, "spectrum": [float("nan"), 0.0], "diverged": True, "val_ppl": float("nan")}}):
        for kind in ("pca2", "raw", "pca2-pair"):
            with pytest.raises(ConfigError, match="the dense model has no finite spectrum at epoch 1"):
                distances(kind, dense, cands, 1, [1])
    assert distances("loss", {}, cands, 1, [1]) == {1: 500.0}  # the loss needs no reference


def test_misleading_messages_are_gone(tmp_path, tiny_data):
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    code, out, err = lshx("study", "replay", empty, "--table", "x")
    one_line_error(code, out, err, "is empty")
    assert empty.read_bytes() == b""  # and nothing was written into it
    notables = tmp_path / "notables.sqlite"
    sqlite3.connect(notables).close()
    one_line_error(*lshx("study", "replay", notables, "--table", "x"))
    # a search DB: its search is not offered as a table
    db = tmp_path / "s.sqlite"
    code, out, err = lshx("search", "ptb-lstm", "--preset", "smoke", "--data", tiny_data, "--max-batches", "2",
                          "--n", "3", "--db", db, "--name", "my-tpe-search", "--quiet")
    assert code == 0, err
    code, out, err = lshx("study", "replay", db, "--table", "my-tpe-search")
    one_line_error(code, out, err, "holds no table")


# ----------------------------------------------------------------------------- real processes
CLI = [sys.executable, "-m", "lshx.cli.main"]
# root ignores file modes: permissions are tested in a child without the capabilities that let it
DROPPED = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"]


def run(args, dropped=False, env=None, timeout=300, **kw):
    cmd = (DROPPED if dropped else []) + CLI + [str(a) for a in args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
                          **kw)


def one_line(p, code=2, *words):
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def needs_setpriv():
    if os.geteuid() != 0:
        return  # an ordinary user meets file modes anyway
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to drop root's capabilities")


@pytest.fixture
def rodir(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    yield d
    d.chmod(0o755)


def test_paths_are_checked_before_any_work(tmp_path, tiny_data, rodir):
    needs_setpriv()
    smoke = ["ptb-lstm", "--preset", "smoke", "--data", tiny_data, "--max-batches", "2", "--quiet"]
    p = run(["search", *smoke, "--db", rodir / "new" / "s.sqlite"], dropped=True)
    one_line(p, 2, "cannot write the run DB", "Permission denied")
    assert not (rodir / "new").exists()
    one_line(run(["search", *smoke, "--db", "/etc/hostname/s.sqlite"]), 2, "is not a folder")
    p = run(["search", *smoke, "--db", str(tmp_path / "g3" / "newdir") + "/"])
    one_line(p, 2, "ends with a slash")
    assert not (tmp_path / "g3").exists()
    t0 = time.monotonic()
    p = run(["study", "replay", TABLE, "--table", NAME, "--out", rodir / "fig", "--seeds", "1000"], dropped=True)
    one_line(p, 2, "cannot write the --out folder")
    assert time.monotonic() - t0 < 60  # refused before the replay, not after it
    p = run(["train", *smoke, "--out", rodir / "run"], dropped=True)
    one_line(p, 2, "cannot write the run folder")
    db = tmp_path / "s.sqlite"
    assert run(["search", *smoke, "--n", "3", "--db", db, "--name", "s"]).returncode == 0
    p = run(["report", db, "--out", rodir / "report"], dropped=True)
    one_line(p, 2, "cannot write the report folder")


def _evals(db):
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT COUNT(*) FROM evals").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _wait_for_evals(db, proc, n=1, timeout=120):
    t0 = time.monotonic()
    while _evals(db) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout
        time.sleep(0.2)


def _leases(db):
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute("SELECT COUNT(*) FROM leases").fetchone()[0]
    finally:
        con.close()


def test_a_folder_made_read_only_mid_search_is_one_line_and_resumes(tmp_path, tiny_data):
    needs_setpriv()
    folder = tmp_path / "runs"
    folder.mkdir()
    db = folder / "s.sqlite"
    args = ["search", "ptb-lstm", "--preset", "smoke", "--data", tiny_data, "--max-batches", "3", "--n", "4",
            "--db", db, "--name", "s", "--quiet"]
    proc = subprocess.Popen(DROPPED + CLI + [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        _wait_for_evals(db, proc)
        subprocess.run(["chmod", "-R", "a-w", str(folder)], check=True)
        out, err = proc.communicate(timeout=300)
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(folder)], check=True)
    p = subprocess.CompletedProcess(args, proc.returncode, out, err)
    one_line(p, 2, "cannot write", "rerun with --resume")
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    again = run(args + ["--resume"], dropped=True)
    assert again.returncode == 0, again.stderr


def test_a_full_disk_is_one_line(tmp_path, tiny_data):
    db = tmp_path / "s.sqlite"
    args = " ".join(map(str, CLI + ["search", "ptb-lstm", "--preset", "smoke", "--data", tiny_data, "--max-batches",
                                    "2", "--n", "3", "--db", db, "--name", "s", "--quiet"]))
    p = subprocess.run(["bash", "-c", f"ulimit -f 150; exec {args}"], capture_output=True, text=True, timeout=300)
    one_line(p, 2, "cannot write", "rerun with --resume")
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert _leases(db) == 0


def test_a_locked_db_is_one_line_and_the_lease_is_released(tmp_path, tiny_data):
    db = tmp_path / "s.sqlite"
    args = ["search", "ptb-lstm", "--preset", "smoke", "--data", tiny_data, "--max-batches", "2", "--n", "4",
            "--db", db, "--name", "s", "--quiet"]
    proc = subprocess.Popen(CLI + [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "LSHX_DB_TIMEOUT": "2"})
    _wait_for_evals(db, proc)
    holder = sqlite3.connect(db, isolation_level=None, timeout=30)
    holder.execute("BEGIN IMMEDIATE")  # a writer that holds the DB past the search's timeout
    try:
        t0 = time.monotonic()
        while proc.poll() is None and time.monotonic() - t0 < 3.0:
            time.sleep(0.1)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    out, err = proc.communicate(timeout=300)
    if proc.returncode == 0:
        pytest.skip("the search wrote nothing while the DB was held (a machine fast enough to finish first)")
    one_line(subprocess.CompletedProcess(args, proc.returncode, out, err), 2, "database is locked",
             "rerun with --resume")
    assert _leases(db) == 0


def test_sigterm_is_handled_as_sigint(tmp_path, tiny_data):
    db = tmp_path / "s.sqlite"
    proc = subprocess.Popen(CLI + ["search", "ptb-lstm", "--preset", "smoke", "--data", tiny_data, "--executor",
                                   "process", "--workers", "2", "--db", str(db), "--name", "s"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_evals(db, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert err.strip().splitlines()[-1] == "lshx: terminated; finished epochs are saved, rerun with --resume"
    assert _leases(db) == 0


def _children(pid):
    out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout.split("\n")
    return [int(a) for a, b in (ln.split() for ln in out if ln.strip()) if int(b) == pid]


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return open(f"/proc/{pid}/stat").read().split()[2] != "Z"


def test_workers_exit_when_their_driver_is_killed(tmp_path, tiny_data):
    db = tmp_path / "s.sqlite"
    proc = subprocess.Popen(CLI + ["search", "ptb-lstm", "--preset", "smoke", "--data", tiny_data, "--executor",
                                   "process", "--workers", "2", "--db", str(db), "--name", "s"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_evals(db, proc)
    kids = _children(proc.pid)
    assert len(kids) >= 2  # the workers (and the resource tracker)
    proc.kill()
    proc.wait()
    t0 = time.monotonic()
    while any(_alive(k) for k in kids) and time.monotonic() - t0 < 10:
        time.sleep(0.2)
    assert not any(_alive(k) for k in kids), "a worker outlived its driver"


def test_numbers_are_validated_before_anything_is_written(tmp_path, tiny_data):
    smoke = ["ptb-lstm", "--preset", "smoke", "--data", tiny_data, "--max-batches", "2"]
    db = tmp_path / "s.sqlite"
    for args, words in ((["search", *smoke, "--seed", "99999999999999999999999", "--db", db], "seed"),
                        (["study", "table", *smoke, "--space", "random", "--n", "3", "--seed",
                          "99999999999999999999999", "--db", db], "seed"),
                        (["train", *smoke, "--seed", "99999999999999999999999", "--out", tmp_path / "r"], "seed"),
                        (["train", *smoke, "--lr", "-1", "--out", tmp_path / "r"], "lr"),
                        (["train", *smoke, "--lr", "nan", "--out", tmp_path / "r"], "lr"),
                        (["train", *smoke, "--device", "tpu", "--out", tmp_path / "r"], "device"),
                        (["train", *smoke[:-2], "--max-batches", "0", "--out", tmp_path / "r"], "max batches"),
                        (["train", *smoke[:-2], "--max-batches", "-1", "--out", tmp_path / "r"], "max batches")):
        one_line_error(*lshx(*args), words)
    assert not db.exists() and not (tmp_path / "r").exists()
    ckpt = tmp_path / "x.pt"
    ckpt.write_bytes(b"")
    one_line_error(*lshx("ls-compute", ckpt, "--seed", "99999999999999999999999"), "seed")
    code, out, err = lshx("search", *smoke, "--db", db)
    assert code == 0
    p = run(["report", db, "--out", tmp_path / "rep"], env={"LSHX_DB_TIMEOUT": "abc"})
    one_line(p, 2, "LSHX_DB_TIMEOUT")


def test_an_unreadable_split_is_one_line(tmp_path, tiny_data):
    needs_setpriv()
    data = tmp_path / "unreadable"
    shutil.copytree(tiny_data, data)
    (data / "ptb.valid.txt").chmod(0o000)
    p = run(["train", "ptb-lstm", "--preset", "smoke", "--data", data, "--out", tmp_path / "r"], dropped=True)
    one_line(p, 2, "cannot read the data file", "ptb.valid.txt")


def test_replay_refuses_nonsense_options():
    for args, words in ((["--workers", "0"], "--workers"), (["--workers", "-5"], "--workers"),
                        (["--e0", ""], "--e0"), (["--ei", "0"], "--ei"), (["--methods", ","], "names no method"),
                        (["--setting", "3"], "E0/EI")):
        one_line_error(*lshx("study", "replay", TABLE, "--table", NAME, *args), words)


def test_train_options(tmp_path, tiny_data):
    code, out, err = lshx("train", "ptb-lstm", "--preset", "smoke", "--data", tiny_data, "--max-batches", "2",
                          "--epochs", "2", "--death-rate", "0", "--out", tmp_path / "r", "--json", "--quiet")
    assert code == 0, err  # a fixed topology: nothing dies, nothing grows


def test_readers_never_write(tmp_path, tiny_data):
    copy = tmp_path / "t.sqlite"
    shutil.copy(TABLE, copy)
    before = copy.read_bytes()
    code, out, err = lshx("report", copy, "--name", f"{NAME}-t0", "--out", tmp_path / "rep")
    assert code == 0, err
    assert copy.read_bytes() == before and not Path(str(copy) + "-wal").exists()
    # a finished search resumed from a read-only DB: read back, nothing written
    db = tmp_path / "s.sqlite"
    smoke = ["search", "ptb-lstm", "--preset", "smoke", "--data", tiny_data, "--max-batches", "2", "--n", "3",
             "--db", db, "--name", "s", "--quiet"]
    assert lshx(*smoke)[0] == 0
    db.chmod(0o444)
    needs_setpriv()
    p = run(smoke[:] + ["--resume"], dropped=True)
    assert p.returncode == 0 and "best:" in p.stdout, p.stderr


def _sigint_default():
    """In the child before exec: a test run started in the background (`cmd &` without job
    control) ignores SIGINT, and Python keeps an ignored SIGINT ignored; a user's terminal does not."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_interrupt_messages_promise_only_what_the_command_does(tmp_path):
    p = subprocess.Popen(CLI + ["study", "replay", str(TABLE), "--table", NAME, "--seeds", "1000", "--quiet"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_default)
    try:
        time.sleep(4)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:  # (never left running: the whole table's replay is an hour of CPU)
            p.kill()
            p.communicate()
    assert p.returncode == 130 and err.strip().splitlines()[-1] == "lshx: interrupted", err


def test_report_on_an_empty_file_writes_nothing(tmp_path):
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    one_line_error(*lshx("report", empty, "--out", tmp_path / "rep"), "empty")
    assert empty.read_bytes() == b"" and not (tmp_path / "empty.sqlite-wal").exists()
