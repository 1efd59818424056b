"""The same search gives the same pick on every executor and under any OMP_NUM_THREADS: every
job runs with the search's own thread count (--threads, default 1, in the search's options)."""
import json
import os
import subprocess
import sys

import pytest

from lshx.search.executors import SerialExecutor
from lshx.search.config import SearchConfig
from lshx.search.engine import Search, run_search
from lshx.search.rundb import RunDB


def _search(tiny_data, db, env_threads, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": str(env_threads), "MKL_NUM_THREADS": str(env_threads)}
    p = subprocess.run([sys.executable, "-m", "lshx.cli.main", "search", "ptb-lstm", "--preset", "smoke", "--data",
                        tiny_data, "--db", str(db), "--json", "--quiet", "--max-batches", "3", "--n", "4", *extra],
                       capture_output=True, text=True, env=env, timeout=900)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_serial_under_two_omp_threads_and_process_executor_agree(tiny_data, tmp_path):
    """Before, a serial search ran its jobs with the shell's thread count (2 here) and the
    process executor with 1: other distances, and so possibly another pick."""
    serial = _search(tiny_data, tmp_path / "a.sqlite", 2)
    process = _search(tiny_data, tmp_path / "b.sqlite", 2, "--executor", "process", "--workers", "2")
    assert serial["rounds"] == process["rounds"]  # the same distances, to the last bit
    assert serial["best"] == process["best"]
    assert serial["dense"] == process["dense"]
    db = RunDB(tmp_path / "a.sqlite")
    assert db.get_search(serial["name"])["args"]["threads"] == 1  # recorded in the search's options
    db.close()


def test_threads_is_part_of_the_search(tiny_data, tmp_path):
    cfg = SearchConfig.from_preset("ptb-lstm", "smoke", data=tiny_data)
    assert cfg.threads == 1
    old = cfg.to_dict()
    del old["threads"]  # options stored before --threads existed: the default, the same search
    assert cfg.same_search(old)
    two = SearchConfig.from_preset("ptb-lstm", "smoke", data=tiny_data, threads=2)
    assert not two.same_search(old)
    # evaluations made with another thread count are other evaluations (a shared DB keeps both);
    # at the default the eval keys of DBs written before stay valid
    db = RunDB(tmp_path / "k.sqlite")
    s1, s2 = Search(cfg, db, SerialExecutor(threads=3), "x"), Search(two, db, SerialExecutor(threads=3), "y")
    k1, k2 = s1.keyed(None)[1], s2.keyed(None)[1]
    assert k1 != k2
    # a job carries the search's thread count, not the executor's, and absolute paths
    job = s2.job({"origin": "dense", "eval_key": k2, "ckpt_dir": "d"}, 1)
    assert job["threads"] == 2
    assert os.path.isabs(job["dir"]) and os.path.isabs(job["train"]["data"])
    db.close()


def test_jobs_run_with_the_searchs_threads_and_leave_the_callers_setting(tiny_data, tmp_path, monkeypatch):
    import torch

    from lshx.search import jobs

    seen = []
    real = jobs._advance

    def spy(job):
        seen.append(torch.get_num_threads())
        return real(job)

    monkeypatch.setattr(jobs, "_advance", spy)
    torch.set_num_threads(1)
    cfg = SearchConfig.from_preset("ptb-lstm", "smoke", data=tiny_data, max_batches=2, n=2, final_epochs=2,
                                   threads=2)
    run_search(cfg, tmp_path / "s.sqlite", SerialExecutor(threads=1), quiet=True)
    assert seen and set(seen) == {2}
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("threads", [0, -1])
def test_threads_must_be_positive(threads):
    from lshx.errors import ConfigError

    with pytest.raises(ConfigError, match="--threads"):
        SearchConfig.from_preset("ptb-lstm", "smoke", threads=threads)
