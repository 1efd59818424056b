"""An interrupted replay resumes from the tasks it finished, with the numbers of an
uninterrupted one; a different table, option or seed count never reads them."""
import json
import subprocess
import sys

import pytest

from lshx.studies import replay as R
from lshx.studies.replay import Method, replay
from lshx.studies.replay_cache import FOLDER, ReplayCache
from lshx.studies.table import load_table

METHODS = [Method("lsh-pca2"), Method("loss", distance="loss"), Method("full", strategy="full")]
ARGS = dict(hpos=("grid",), n=6, e0s=(1, 2), eis=(1,), seeds=4)


class Stop(Exception):
    pass


def test_an_interrupted_replay_resumes_with_the_same_numbers(table_db, tmp_path, monkeypatch):
    table = load_table(table_db[0], "t")
    calls = []
    real = R.replay_one
    monkeypatch.setattr(R, "replay_one", lambda *a, **k: calls.append(a[1:6]) or real(*a, **k))
    whole = replay(table, METHODS, **ARGS)  # no cache
    replays = len(calls)
    cache = ReplayCache(tmp_path / FOLDER, table)

    def stop_after_five(k, total):
        if k == 5:
            raise Stop

    with pytest.raises(Stop):
        replay(table, METHODS, **ARGS, progress=stop_after_five, cache=cache)
    assert len(list(cache.folder.glob("*.json"))) == 5  # each finished task stored at once, whole
    assert not list(cache.folder.glob(".*.tmp"))

    calls.clear()
    cache = ReplayCache(tmp_path / FOLDER, table)
    seen = []
    resumed = replay(table, METHODS, **ARGS, progress=lambda k, total: seen.append((k, total)), cache=cache)
    assert cache.hits == 5 and seen[0] == (5, seen[-1][1]) and seen[-1][0] == seen[-1][1]
    assert len(calls) == replays - 5 * 4  # 5 tasks of 4 search seeds were kept
    assert json.dumps(resumed, sort_keys=True) == json.dumps(whole, sort_keys=True)

    calls.clear()  # all kept: nothing is replayed again
    again = replay(table, METHODS, **ARGS, cache=ReplayCache(tmp_path / FOLDER, table))
    assert calls == [] and json.dumps(again, sort_keys=True) == json.dumps(whole, sort_keys=True)


def test_the_key_holds_the_table_the_task_and_the_seed_count(table_db, tmp_path):
    both, one = load_table(table_db[0], "t"), load_table(table_db[0], "t", [0])
    a, b = ReplayCache(tmp_path, both), ReplayCache(tmp_path, one)
    task = (Method("lsh-pca2"), "grid", 6, 2, 1, None)
    assert a.fingerprint != b.fingerprint and a.key(task, 4) != b.key(task, 4)
    assert a.key(task, 4) != a.key(task, 5)
    assert a.key(task, 4) != a.key((Method("lsh-raw", distance="raw"), "grid", 6, 2, 1, None), 4)
    assert a.key(task, 4) != a.key((*task[:5], 0), 4)
    assert a.key(task, 4) == ReplayCache(tmp_path, load_table(table_db[0], "t")).key(task, 4)
    a.put(task, 4, [{"pick": 1}] * 4)
    assert a.get(task, 4) == [{"pick": 1}] * 4 and a.get(task, 5) is None and b.get(task, 4) is None
    (tmp_path / f"{a.key(task, 4)}.json").write_text('[{"pick": 1}, {"pi')  # a torn file is replayed again
    assert a.get(task, 4) is None


def test_the_cli_resumes_and_removes_what_it_kept(table_db, tmp_path):
    db = table_db[0]
    out = tmp_path / "fig"
    cmd = [sys.executable, "-m", "lshx.cli.main", "study", "replay", str(db), "--table", "t", "--n", "6",
           "--e0", "2", "--ei", "1", "--seeds", "3", "--hpo", "grid", "--methods", "lsh-pca2,loss", "--out", str(out)]
    table = load_table(db, "t")
    cache = ReplayCache(out / FOLDER, table)  # what an interrupted run left: the first task
    replay(table, [Method("lsh-pca2")], ("grid",), 6, (2,), (1,), 3, cache=cache)
    kept = sorted(p.name for p in cache.folder.glob("*.json"))
    assert len(kept) == 3  # lsh-pca2 on the draws and on each of the 2 training seeds
    r = subprocess.run(cmd + ["--json"], capture_output=True, text=True, check=True)
    assert "resuming: 3 of 6 settings were replayed before" in r.stderr
    assert not (out / FOLDER).exists() and (out / "replay.json").exists()
    fresh = subprocess.run(cmd[:-2] + ["--json", "--quiet"], capture_output=True, text=True, check=True)
    assert json.loads(r.stdout)["methods"] == json.loads(fresh.stdout)["methods"]


def test_only_summaries_are_left_out_of_the_code_fingerprint():
    """A change to the engine, the proposers or the table reader must miss the cache; the
    modules left out exist (a renamed one would silently hash again) and only summarize."""
    from pathlib import Path

    import lshx
    from lshx.studies.replay_cache import SUMMARY_ONLY

    root = Path(lshx.__file__).resolve().parent
    assert all((root / m).is_file() for m in SUMMARY_ONLY)
    assert not {"studies/replay.py", "studies/table.py", "search/engine.py", "search/hpo.py",
                "search/schedule.py"} & SUMMARY_ONLY
