"""Builds tests/fixtures/ls_trained.pt.gz: trained small-preset models for the spectrum's
accuracy contract (tests/test_lyapunov_accuracy.py), in as few bytes as the test needs.

Each model keeps its recurrent weights (masked; the nonzero values in float16 and their positions
as a bit mask: the fixture's models are these rounded models, on which the algorithms are
compared with the float64 reference) and the embedding rows
of the spectrum's windows only (the first 2 windows of 45 tokens of the PTB-16% validation split,
what a search measures); the decoder is dropped. Made with:

    python scripts/ls_fixture.py runs/gs24-runs/<dense>/best.pt runs/gs24-runs/<cand>/best.pt ... \\
        --rhn runs/rhn-small/best.pt
"""
import argparse
import gzip
import io
from pathlib import Path

import torch

from lshx import ops
from lshx.data import load_split
from lshx.data import Vocab
from lshx.lyapunov import sample_windows
from lshx.studies.spectrum_accuracy import pack
from lshx.train import load_model

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "ls_trained.pt.gz"


def compact(path: str) -> dict:
    model, ckpt = load_model(path)
    ids, _ = load_split(None, "valid", Vocab(list(ckpt["vocab"])))
    windows = sample_windows(ids, 2, 45)
    used = torch.unique(windows)
    remap = {int(t): i for i, t in enumerate(used.tolist())}
    emb = ops.masked_weight(model.encoder.weight.detach(), model.masks.get("encoder.weight"))[used]
    rnn = {n: pack(ops.masked_weight(p.detach(), model.masks.get(n))) for n, p in model.named_parameters()
           if n.startswith("rnn.")}
    args = {**model.model_args, "vocab_size": len(used)}
    return {"source": str(path), "args": args, "rnn": rnn, "emb": emb.half(),
            "tokens": torch.tensor([[remap[int(t)] for t in w] for w in windows])}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("lstm", nargs="+", help="LSTM checkpoints: the dense model first, then the candidates")
    p.add_argument("--rhn", required=True)
    a = p.parse_args()
    fixture = {"lstm": [compact(c) for c in a.lstm], "rhn": compact(a.rhn)}
    buf = io.BytesIO()
    torch.save(fixture, buf)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(OUT, "wb", compresslevel=9) as f:
        f.write(buf.getvalue())
    print(f"{OUT}: {OUT.stat().st_size / 1e6:.2f} MB, {len(a.lstm)} LSTM models and one RHN")


if __name__ == "__main__":
    main()
