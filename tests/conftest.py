import os

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "data", "ptb")


@pytest.fixture(scope="session")
def corpus():
    from lshx.data import load_corpus

    return load_corpus(DATA)


@pytest.fixture
def tiny_data(tmp_path):
    """A small PTB-style folder (real PTB lines) for fast end-to-end tests."""
    d = tmp_path / "ptb"
    d.mkdir()
    for split, n in (("train", 400), ("valid", 120), ("test", 120)):
        with open(os.path.join(DATA, f"ptb.{split}.txt"), encoding="utf-8") as f:
            lines = [next(f) for _ in range(n)]
        (d / f"ptb.{split}.txt").write_text("".join(lines), encoding="utf-8")
    return str(d)
