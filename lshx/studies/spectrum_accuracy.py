"""How far each QR algorithm and re-orthonormalization interval lands from the float64
per-step Householder reference, on given models: the accuracy contract of docs/lyapunov.md
(tests/test_lyapunov_accuracy.py, scripts/ls_accuracy.py).

Also the compact form of a trained model that the contract's fixture stores (recurrent weights
as float16 nonzeros and a bit mask, the embedding rows of the spectrum's windows only).
"""
from __future__ import annotations

import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from lshx.lyapunov.config import LSConfig
from lshx.lyapunov.models import measure
from lshx.models import build_model
from lshx.search.schedule import distances


def pack(w: torch.Tensor) -> dict:
    """A (masked) weight as its nonzero values in float16 and their positions as a bit mask."""
    nz = w != 0
    return {"shape": tuple(w.shape), "bits": torch.from_numpy(np.packbits(nz.reshape(-1).numpy())),
            "values": w[nz].half()}


def unpack(d: dict) -> torch.Tensor:
    n = int(np.prod(d["shape"]))
    nz = torch.from_numpy(np.unpackbits(d["bits"].numpy())[:n].astype(bool))
    w = torch.zeros(n, dtype=torch.float32)
    w[nz] = d["values"].float()
    return w.view(*d["shape"])


def rebuild(compact: dict) -> Tuple[torch.nn.Module, torch.Tensor]:
    """(the model, its spectrum's token windows) from a compact model (eval mode, float32)."""
    model = build_model(compact["args"])
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, d in compact["rnn"].items():
            params[name].copy_(unpack(d))
        params["encoder.weight"].copy_(compact["emb"].float())
    return model.eval(), compact["tokens"]


def spectrum(model, tokens: torch.Tensor, cfg: LSConfig) -> Tuple[torch.Tensor, int]:
    """Sorted exponents (float64, averaged over the windows as a search averages them) and the
    QRs taken."""
    with torch.no_grad():
        res = measure(model, tokens, cfg)
    return torch.sort(res.mean().double(), descending=True).values, res.qrs


def reference(model, tokens: torch.Tensor, state: str, warmup: int = 10) -> torch.Tensor:
    """The float64 per-step Householder spectrum (the model is converted and converted back)."""
    model.double()
    try:
        return spectrum(model, tokens, LSConfig(samples=tokens.size(0), steps=tokens.size(1) - warmup,
                                                warmup=warmup, state=state))[0]
    finally:
        model.float()


def pca2_order(spectra: Sequence[torch.Tensor]) -> List[int]:
    """The candidates (spectra[1:]) ranked by their pca2 distance to the dense model (spectra[0]),
    one PCA fitted on all of them: what an elimination at this epoch compares."""
    dense = {1: {"spectrum": spectra[0].tolist(), "diverged": False}}
    cands = {i: {1: {"spectrum": s.tolist(), "diverged": False}} for i, s in enumerate(spectra[1:], start=1)}
    d = distances("pca2", dense, cands, 1, list(cands))
    return sorted(d, key=lambda i: (d[i], i))


def contract(models: Sequence[Tuple[torch.nn.Module, torch.Tensor]], state: str,
             variants: Sequence[Tuple], warmup: int = 10,
             refs: Optional[List[torch.Tensor]] = None) -> Dict[str, object]:
    """Every variant (qr, reorth_every[, tangent_dtype]) on every model against the float64
    reference: max |delta|
    over the top half of each spectrum and over all of it, whether the candidates' pca2 order
    (models[0] is the dense model) is kept, the QRs per window and the seconds taken."""
    refs = refs or [reference(m, t, state, warmup) for m, t in models]
    out = {"state": state, "models": len(models), "N": int(refs[0].numel()), "variants": []}
    for variant in variants:
        qr, m = variant[:2]
        tangent = variant[2] if len(variant) > 2 else None
        t0 = time.perf_counter()
        got = []
        qrs = 0
        for model, tokens in models:
            cfg = LSConfig(samples=tokens.size(0), steps=tokens.size(1) - warmup, warmup=warmup, state=state, qr=qr,
                           reorth_every=m, tangent_dtype=tangent)
            lam, n = spectrum(model, tokens, cfg)
            got.append(lam)
            qrs += n
        half = max(1, refs[0].numel() // 2)
        errs = [(g - r).abs() for g, r in zip(got, refs)]
        row = {"qr": qr, "reorth_every": m, "tangent_dtype": tangent or "model's", "top_half_err": float(max(e[:half].max() for e in errs)),
               "max_err": float(max(e.max() for e in errs)), "qrs_per_model": qrs / len(models),
               "seconds": time.perf_counter() - t0}
        if len(models) > 2:
            row["pca2_order_kept"] = pca2_order(got) == pca2_order(refs)
        out["variants"].append(row)
    return out
