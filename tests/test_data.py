import pytest
import torch

from lshx.data import UNK, batchify, bptt_windows, load_corpus, num_windows
from lshx.errors import DataError


def test_vocab_and_oov(corpus):
    # 7,950 words in the train prefix (data README) plus <eos>
    assert len(corpus.vocab) == 7951
    assert corpus.vocab.words[corpus.vocab.index["<eos>"]] == "<eos>"
    assert corpus.oov["train"] == 0
    # the README: about 2.4% of validation tokens are out of vocabulary
    assert 0.015 < corpus.oov["valid"] / corpus.valid.numel() < 0.03
    assert corpus.train.numel() == 144288 + 6778  # words + one <eos> per line


def test_oov_maps_to_unk(tmp_path):
    for s, text in (("train", " a b <unk> \n b a \n"), ("valid", " a zzz \n"), ("test", " qq b \n")):
        (tmp_path / f"ptb.{s}.txt").write_text(text, encoding="utf-8")
    c = load_corpus(tmp_path)
    assert c.oov == {"train": 0, "valid": 1, "test": 1}
    assert c.valid.tolist()[1] == c.vocab.index[UNK]


@pytest.mark.parametrize("problem", ["missing_dir", "missing_file", "empty", "not_utf8"])
def test_bad_data_is_one_clear_error(tmp_path, problem):
    if problem != "missing_dir":
        for s in ("train", "valid", "test"):
            (tmp_path / f"ptb.{s}.txt").write_text(" a b \n", encoding="utf-8")
    target = tmp_path / "ptb.valid.txt"
    if problem == "missing_file":
        target.unlink()
    elif problem == "empty":
        target.write_text("\n \n", encoding="utf-8")
    elif problem == "not_utf8":
        target.write_bytes(b" a \xff\xfe b \n")
    path = tmp_path / "nope" if problem == "missing_dir" else tmp_path
    with pytest.raises(DataError) as err:
        load_corpus(path)
    assert "\n" not in str(err.value)


def test_batchify_and_windows():
    ids = torch.arange(103)
    data = batchify(ids, 4)
    assert data.shape == (25, 4)
    assert data[:, 1].tolist() == list(range(25, 50))  # each column is a contiguous stream
    wins = list(bptt_windows(data, 10))
    assert len(wins) == num_windows(data, 10) == 3
    x, y = wins[0]
    assert torch.equal(y[:-1], x[1:])
    assert sum(w[0].size(0) for w in wins) == 24
    assert len(list(bptt_windows(data, 10, max_batches=2))) == 2 == num_windows(data, 10, 2)
