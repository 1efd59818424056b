"""lshx report: figures, summary and index.html from a real (smoke) search DB."""
import subprocess
import sys

import pytest

from lshx.studies.report import make_report
from lshx.search.executors import SerialExecutor
from lshx.search.config import SearchConfig
from lshx.search.engine import run_search


@pytest.fixture
def search_db(tiny_data, tmp_path):
    cfg = SearchConfig.from_preset("ptb-lstm", "smoke", data=tiny_data, max_batches=4)
    run_search(cfg, tmp_path / "s.sqlite", SerialExecutor(threads=1), name="s1", quiet=True)
    return tmp_path / "s.sqlite"


def test_report_writes_figures(search_db, tmp_path):
    res = make_report(search_db, tmp_path / "rep")
    assert res["name"] == "s1"
    assert set(res["figures"]) == {"ls_curves.png", "ls_space.png", "ppl_curves.png", "distance_vs_ppl.png"}
    for f in res["figures"]:
        data = (tmp_path / "rep" / f).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    page = (tmp_path / "rep" / "index.html").read_text()
    assert all(f in page for f in res["figures"])
    summary = (tmp_path / "rep" / "summary.md").read_text()
    assert "Picked:" in summary and "| candidate |" in summary


def test_report_errors_are_one_line(search_db, tmp_path):
    from lshx.errors import LshxError

    with pytest.raises(LshxError, match="no search named"):
        make_report(search_db, tmp_path / "x", name="nope")
    p = subprocess.run([sys.executable, "-m", "lshx.cli.main", "report", str(tmp_path / "missing.sqlite")],
                       capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0
