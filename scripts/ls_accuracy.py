"""The accuracy table of docs/lyapunov.md: every QR algorithm and re-orthonormalization interval
against the float64 per-step Householder reference on the trained models of
tests/fixtures/ls_trained.pt.gz (the dense small-preset LSTM and 6 candidates of seed 1 of the
GS-24 table at 12 epochs; a small RHN at 3 epochs), the spectrum as a search measures it (2
windows of 10 + 35 validation tokens).

    python scripts/ls_accuracy.py [--json]
"""
import gzip
import io
import json
import sys
from pathlib import Path

import torch

from lshx.studies.spectrum_accuracy import contract, rebuild

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "ls_trained.pt.gz"
VARIANTS = [("householder", 1), ("cholqr2", 1), ("batched", 1), ("householder", "auto"), ("cholqr2", "auto"),
            ("householder", 2), ("householder", 3), ("householder", 4), ("householder", 1, "float64"),
            ("householder", "auto", "float64"), ("householder", 2, "float64"), ("householder", 4, "float64")]


def main(as_json: bool) -> None:
    with gzip.open(FIXTURE) as f:
        fx = torch.load(io.BytesIO(f.read()), weights_only=False)
    lstm = [rebuild(c) for c in fx["lstm"]]
    rhn = [rebuild(fx["rhn"])]
    runs = [("LSTM h", lstm, "h"), ("LSTM hc", lstm[:3], "hc"), ("RHN h", rhn, "h")]
    res = []
    for label, models, state in runs:
        r = contract(models, state, VARIANTS)
        r["label"] = label
        res.append(r)
    if as_json:
        print(json.dumps(res))
        return
    print("| spectrum | qr | interval m | tangent | max abs delta, top half | max abs delta, all | pca2 order kept | "
          "QRs per window pair | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in res:
        for v in r["variants"]:
            kept = {True: "yes", False: "**no**"}.get(v.get("pca2_order_kept"), "-")
            print(f"| {r['label']} (N = {r['N']}, {r['models']} models) | {v['qr']} | {v['reorth_every']} | "
                  f"{v['tangent_dtype']} | "
                  f"{v['top_half_err']:.1e} | {v['max_err']:.2g} | {kept} | {v['qrs_per_model']:.3g} | "
                  f"{v['seconds']:.1f} |")


if __name__ == "__main__":
    main("--json" in sys.argv)
