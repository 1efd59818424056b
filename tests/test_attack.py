"""The CLI and the run DB under attack (issue 26): each bad input or failed write gets one line
and a non-zero exit, no traceback, and loses nothing. Which case each test covers:

1. damaged or incomplete tables: replay refuses them in one line (test_a_damaged_table_...);
   a live search whose dense model diverged stops in one line (test_a_diverged_dense_...)
2. a missing epoch or run is refused, not replayed on (test_an_incomplete_table_...)
3. messages that mislead: an empty file, a search DB listed as a table (test_misleading_...)
"""
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
}


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
