"""PTB-style corpora: vocabulary, tokenization with <unk>, bptt batching."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Tuple

import torch

from lshx.errors import DataError

SPLITS = ("train", "valid", "test")
EOS, UNK = "<eos>", "<unk>"
DEFAULT_DATA = Path(__file__).resolve().parent.parent / "data" / "ptb"


@dataclass
class Vocab:
    words: List[str]
    index: Dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)


@dataclass
class Corpus:
    vocab: Vocab
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    oov: Dict[str, int]  # out-of-vocabulary tokens mapped to <unk>, per split


def default_data_dir() -> Path:
    env = os.environ.get("LSHX_DATA")
    return Path(env) if env else DEFAULT_DATA


def _read_lines(path: Path) -> List[str]:
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"data file is not UTF-8: {path} (byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"cannot read the data file {path}: {exc.strerror or type(exc).__name__}") from None
    lines = [ln for ln in text.split("\n") if ln.strip()]
    if not lines:
        raise DataError(f"data file is empty: {path}")
    return lines


def _tokens(lines: List[str]) -> List[str]:
    out: List[str] = []
    for ln in lines:
        out.extend(ln.split())
        out.append(EOS)
    return out


def build_vocab(train_tokens: List[str]) -> Vocab:
    words = list(dict.fromkeys(train_tokens))  # first-seen order: deterministic
    if UNK not in words:
        words.append(UNK)
    return Vocab(words)


def encode(tokens: List[str], vocab: Vocab) -> Tuple[torch.Tensor, int]:
    unk = vocab.index[UNK]
    ids, oov = [], 0
    for t in tokens:
        i = vocab.index.get(t)
        if i is None:
            oov += 1
            i = unk
        ids.append(i)
    return torch.tensor(ids, dtype=torch.long), oov


def load_corpus(data_dir: str | os.PathLike | None = None, vocab: Vocab | None = None) -> Corpus:
    """Reads ptb.{train,valid,test}.txt; the vocabulary is train's words plus <eos> (and <unk>)."""
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    if not root.is_dir():
        raise DataError(f"data directory not found: {root}")
    toks = {s: _tokens(_read_lines(root / f"ptb.{s}.txt")) for s in SPLITS}
    vocab = vocab or build_vocab(toks["train"])
    enc, oov = {}, {}
    for s in SPLITS:
        enc[s], oov[s] = encode(toks[s], vocab)
    return Corpus(vocab, enc["train"], enc["valid"], enc["test"], oov)


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(n,) -> (n // batch_size, batch_size): column b is a contiguous stream."""
    n = ids.numel() // batch_size
    if n < 2:
        raise DataError(f"split too small for batch size {batch_size}: {ids.numel()} tokens")
    return ids[: n * batch_size].view(batch_size, n).t().contiguous()


def bptt_windows(data: torch.Tensor, bptt: int, max_batches: int | None = None):
    """Yields (x, y) windows of at most bptt steps; y is x shifted by one token."""
    count = 0
    for i in range(0, data.size(0) - 1, bptt):
        if max_batches is not None and count >= max_batches:
            return
        seq = min(bptt, data.size(0) - 1 - i)
        yield data[i: i + seq], data[i + 1: i + 1 + seq]
        count += 1


def num_windows(data: torch.Tensor, bptt: int, max_batches: int | None = None) -> int:
    n = (data.size(0) - 2) // bptt + 1
    return n if max_batches is None else min(n, max_batches)


def load_split(data_dir: str | os.PathLike | None, split: str, vocab: Vocab) -> Tuple[torch.Tensor, int]:
    """One split encoded with a given vocabulary (a checkpoint's): (ids, out-of-vocabulary count)."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    if not root.is_dir():
        raise DataError(f"data directory not found: {root}")
    return encode(_tokens(_read_lines(root / f"ptb.{split}.txt")), vocab)
