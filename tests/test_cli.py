"""The lshx command line: JSON outputs, one-line errors with exit code 2."""
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from lshx.cli.main import main


def _run(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_train_json(tiny_data, tmp_path):
    r = _run(["train", "ptb-lstm", "--preset", "smoke", "--data", tiny_data, "--out", str(tmp_path / "t"),
              "--json", "--quiet", "--death", "SET", "--init", "ER"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("val_ppl", "test_ppl", "density", "checkpoint", "wall_s"):
        assert key in out
    assert len(out["val_ppl"]) == 2


def test_train_clip_masked_grad_flag(tiny_data, tmp_path):
    from lshx.checkpoint import load_checkpoint

    for flag, expected in (([], False), (["--clip-masked-grad"], True)):
        out = tmp_path / f"c{int(expected)}"
        r = _run(["train", "ptb-lstm", "--preset", "smoke", "--data", tiny_data, "--out", str(out), "--quiet",
                  "--epochs", "1", "--max-batches", "2", *flag])
        assert r.exit_code == 0, r.output
        assert load_checkpoint(out / "last.pt")["config"]["clip_masked_grad"] is expected


def test_ls_compute_json(tiny_data, tmp_path):
    _run(["train", "ptb-rhn", "--preset", "smoke", "--data", tiny_data, "--out", str(tmp_path / "r"), "--quiet",
          "--epochs", "1"])
    ck = str(tmp_path / "r" / "best.pt")
    r = _run(["ls-compute", ck, ck, "--data", tiny_data, "--samples", "2", "--steps", "5", "--warmup", "2",
              "--json", "--k", "4"])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.stdout.strip().splitlines()]
    assert len(lines) == 2
    keys = {"checkpoint", "spectrum", "max", "mean", "var", "samples", "steps", "warmup", "state", "propagate",
            "k", "log_base", "tokens", "wall_s"}
    assert keys <= set(lines[0])
    assert lines[0]["k"] == 4 and len(lines[0]["tokens"]) == 2 and len(lines[0]["tokens"][0]) == 7
    assert lines[0]["spectrum"] == lines[1]["spectrum"]


def _entry(*args):
    return subprocess.run([sys.executable, "-m", "lshx.cli.main", *args], capture_output=True, text=True)


def test_bad_data_one_line_exit_2():
    p = _entry("train", "ptb-lstm", "--data", "/nonexistent")
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "/nonexistent" in p.stderr
    assert "Traceback" not in p.stderr


def test_unsafe_checkpoint_refused(tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a checkpoint at all")
    p = _entry("ls-compute", str(bad))
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0


@pytest.mark.parametrize("args", [["train", "ptb-lstm", "--death", "random"], ["train", "ptb-gru"],
                                  ["train", "ptb-lstm", "--density", "1.7", "--preset", "smoke"]])
def test_bad_options_exit_2(args):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2


def test_help_lists_commands():
    r = _run(["--help"])
    for cmd in ("train", "ls-compute", "bench"):
        assert cmd in r.output


def test_python_m_lshx_runs_without_the_installed_cli_package():
    """`python -m lshx` (the GPU scripts' entry point on an in-place build) maps the checkout's
    cli/ folder to lshx.cli when it is not installed."""
    code = (
        "import importlib.abc, runpy, sys\n"
        "class NotInstalled(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'lshx.cli' and 'lshx.cli' not in sys.modules:\n"
        "            raise ImportError('lshx.cli is not installed')\n"
        "sys.meta_path.insert(0, NotInstalled())\n"
        "sys.argv = ['lshx', 'study', '--help']\n"
        "try:\n"
        "    runpy.run_module('lshx', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    print('cli from', sys.modules['lshx.cli'].__file__)\n"
        "    raise\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "Studies of the method itself" in p.stdout and "cli/__init__.py" in p.stdout
