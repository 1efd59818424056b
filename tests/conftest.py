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


@pytest.fixture(scope="session")
def table_db(tmp_path_factory):
    """A trained table to replay on: 8 random configs + dense, two training seeds, 4 epochs of
    the smoke preset on 400 PTB lines (3 batches an epoch). (db path, data folder)."""
    from lshx.search.executors import SerialExecutor
    from lshx.studies.table import table_configs, train_table

    d = tmp_path_factory.mktemp("ptb")
    for split, n in (("train", 400), ("valid", 120), ("test", 120)):
        with open(os.path.join(DATA, f"ptb.{split}.txt"), encoding="utf-8") as f:
            (d / f"ptb.{split}.txt").write_text("".join(next(f) for _ in range(n)), encoding="utf-8")
    db = tmp_path_factory.mktemp("table") / "t.sqlite"
    cfg = table_configs("ptb-lstm", "random", 8, "smoke", data=str(d), max_batches=3, final_epochs=4)
    train_table(cfg, db, SerialExecutor(threads=1), "t", seeds=2, quiet=True)
    return db, str(d)
