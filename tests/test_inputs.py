"""Every option and input is checked before anything is written: a command refused for bad
input leaves the run DB (and its checkpoints folder) as it found it, so the corrected
command then runs under the same name."""
import os
import sqlite3

import pytest
from click.testing import CliRunner

from lshx.cli.main import main

SMALL = ["--preset", "smoke", "--n", "2", "--final-epochs", "2", "--max-batches", "2", "--quiet"]


def _data_without_files(tmp_path):
    d = tmp_path / "empty"
    d.mkdir(exist_ok=True)
    return str(d)


def _data_with_an_empty_split(tmp_path, tiny_data):
    d = tmp_path / "emptysplit"
    d.mkdir(exist_ok=True)
    for s in ("train", "valid", "test"):
        (d / f"ptb.{s}.txt").write_text("" if s == "test" else open(os.path.join(tiny_data, f"ptb.{s}.txt")).read())
    return str(d)


def _data_not_utf8(tmp_path, tiny_data):
    d = tmp_path / "latin1"
    d.mkdir(exist_ok=True)
    for s in ("train", "valid", "test"):
        text = open(os.path.join(tiny_data, f"ptb.{s}.txt")).read()
        (d / f"ptb.{s}.txt").write_bytes(text.encode() + (b"caf\xe9\n" if s == "valid" else b""))
    return str(d)


BAD = {  # what is wrong: (extra options, a piece of the one-line message)
    "density > 1": (["--density", "1.5"], "density must be in (0, 1]"),
    "density 0": (["--density", "0"], "density must be in (0, 1]"),
    "no data files": (["--data", "{nofiles}"], "data file not found"),
    "an empty split": (["--data", "{emptysplit}"], "data file is empty"),
    "not UTF-8": (["--data", "{latin1}"], "not UTF-8"),
    "no data folder": (["--data", "{tmp}/nowhere"], "data directory not found"),
    "workers 0": (["--executor", "process", "--workers", "0"], "--workers must be"),
    "threads 0": (["--threads", "0"], "--threads must be"),
    "ray address without ray": (["--ray-address", "127.0.0.1:6379"], "--ray-address is for --executor ray"),
    "max batches 0": (["--max-batches", "0"], "--max-batches must be"),
    "negative seed": (["--seed", "-1"], "--seed must be"),
    "schedule past P": (["--n", "12"], "raise --final-epochs"),
    "e0 0": (["--e0", "0"], "must be >= 1"),
    "device": (["--device", "tpu"], "expected cpu or cuda"),
}


def _invoke(args, tmp_path, tiny_data):
    fill = {"nofiles": _data_without_files(tmp_path), "emptysplit": _data_with_an_empty_split(tmp_path, tiny_data),
            "latin1": _data_not_utf8(tmp_path, tiny_data), "tmp": str(tmp_path)}
    return CliRunner().invoke(main, [a.format(**fill) for a in args])


def _dump(db):
    """The DB's content (every row of every table) and the files of its checkpoints folder."""
    with sqlite3.connect(db) as c:
        rows = list(c.iterdump())
    runs = str(db)[: -len(".sqlite")] + "-runs"
    files = sorted((os.path.relpath(os.path.join(r, f), runs), os.stat(os.path.join(r, f)).st_mtime_ns)
                   for r, _, fs in os.walk(runs) for f in fs)
    return rows, files


@pytest.mark.parametrize("what", sorted(BAD))
def test_bad_input_writes_nothing(what, tmp_path, tiny_data):
    extra, msg = BAD[what]
    db = tmp_path / "x.sqlite"
    r = _invoke(["search", "ptb-lstm", "--data", tiny_data, "--db", str(db), *SMALL, *extra], tmp_path, tiny_data)
    assert r.exit_code == 2, r.output
    err = r.stderr.strip()
    assert err.count("\n") == 0 and err.startswith("lshx: error:") and msg in err, err
    assert not db.exists() and not (tmp_path / "x-runs").exists()


def test_bad_input_leaves_an_existing_db_as_it_was_and_the_corrected_command_runs(tmp_path, tiny_data):
    db = tmp_path / "x.sqlite"
    base = ["search", "ptb-lstm", "--data", tiny_data, "--db", str(db), *SMALL]
    first = _invoke(base + ["--name", "other"], tmp_path, tiny_data)
    assert first.exit_code == 0, first.output
    before = _dump(db)
    for what, (extra, msg) in BAD.items():
        r = _invoke(base + extra, tmp_path, tiny_data)
        assert r.exit_code == 2 and msg in r.stderr, (what, r.output)
        assert _dump(db) == before, what
    for cmd in (["study", "correlation", "--data", "{nofiles}", "--db", str(db), *SMALL[:6], "--quiet"],
                ["study", "table", "--space", "random", "--n", "2", "--preset", "smoke", "--final-epochs", "2",
                 "--data", "{nofiles}", "--db", str(db), "--quiet"],
                ["study", "table", "--space", "random", "--n", "2", "--preset", "smoke", "--final-epochs", "2",
                 "--data", tiny_data, "--db", str(db), "--seeds", "0", "--quiet"]):
        r = _invoke(cmd, tmp_path, tiny_data)
        assert r.exit_code == 2 and r.stderr.strip().count("\n") == 0, r.output
        assert _dump(db) == before, cmd
    # refused for being there already, or with other options: nothing written either (no lease left)
    for extra, msg in (([], "already exists"), (["--resume", "--seed", "3"], "other options")):
        r = _invoke(base + ["--name", "other", *extra], tmp_path, tiny_data)
        assert r.exit_code == 2 and msg in r.stderr, r.output
        assert _dump(db) == before
    # the corrected command, under the default name that the refused ones would have taken
    ok = _invoke(base + ["--density", "0.33"], tmp_path, tiny_data)
    assert ok.exit_code == 0, ok.output
