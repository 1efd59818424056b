"""lshx report: figures (PNG) and an index.html for one search of a run DB."""
from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from lshx.errors import LshxError
from lshx.search.rundb import RunDB
from lshx.search.space import describe


def _load(db: RunDB, name: Optional[str]) -> dict:
    names = db.search_names()
    if not names:
        raise LshxError(f"no search in {db.path}")
    if name is None:
        name = names[-1]
    if name not in names:
        raise LshxError(f"no search named {name!r} in {db.path} (there are: {', '.join(names)})")
    s = db.get_search(name)
    cands = db.candidates(name)
    seed = s["args"]["seed"]
    ev = {c["cid"]: db.evals(c["eval_key"], seed) for c in cands}
    return {"name": name, "search": s, "cands": {c["cid"]: c for c in cands}, "evals": ev,
            "rounds": db.rounds(name)}


def _label(c: dict) -> str:
    return "dense" if c["origin"] == "dense" else f"#{c['cid']} {describe(c['config'])}"


def make_report(db_path: str | Path, out_dir: str | Path, name: Optional[str] = None) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import spearmanr
    from sklearn.decomposition import PCA

    db = RunDB(db_path)
    try:
        d = _load(db, name)
    finally:
        db.close()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cands, evals, rounds = d["cands"], d["evals"], d["rounds"]
    dense = [c for c in cands if cands[c]["origin"] == "dense"][0]
    others = sorted(c for c in cands if c != dense)
    result = d["search"]["result"] or {}
    best = result.get("best", {}).get("cid")
    eliminated_at = {g: r["epoch"] for r in rounds for g in r["eliminated"]}
    figures: List[str] = []

    def best_val(c):
        v = [e["val_ppl"] for e in evals[c].values() if e["val_ppl"] is not None and math.isfinite(e["val_ppl"])]
        return min(v) if v else math.inf

    # 1. LS curves of the dense model and two candidates at several epochs (paper Fig. 1A)
    has_ls = any(e["spectrum"] for e in evals[dense].values())
    if has_ls:
        worst = max((c for c in others if c in eliminated_at), key=lambda c: (best_val(c), c), default=None)
        picks = [c for c in (dense, best, worst) if c is not None]
        fig, axes = plt.subplots(1, len(picks), figsize=(4.2 * len(picks), 3.4), sharey=True)
        for ax, c in zip(np.atleast_1d(axes), picks):
            for e, ev in sorted(evals[c].items()):
                if ev["spectrum"]:
                    ax.plot(ev["spectrum"], label=f"epoch {e}", lw=1.2)
            ax.set_title(_label(cands[c]), fontsize=8)
            ax.set_xlabel("exponent index i")
            ax.legend(fontsize=7)
        np.atleast_1d(axes)[0].set_ylabel(r"$\lambda_i$")
        fig.suptitle("Lyapunov spectra (PTB-16%)", fontsize=10)
        fig.tight_layout()
        fig.savefig(out / "ls_curves.png", dpi=110)
        plt.close(fig)
        figures.append("ls_curves.png")

        # 2. trajectories in the 2-D LS space, eliminations marked
        rows, owner = [], []
        for c in [dense] + others:
            for e, ev in sorted(evals[c].items()):
                if ev["spectrum"] and not ev["diverged"]:
                    rows.append(ev["spectrum"])
                    owner.append((c, e))
        X = np.array(rows)
        Z = PCA(n_components=2, svd_solver="full").fit_transform(X) if len(X) >= 2 else np.zeros((len(X), 2))
        fig, ax = plt.subplots(figsize=(6, 5))
        for c in [dense] + others:
            pts = [(e, Z[i]) for i, (o, e) in enumerate(owner) if o == c]
            if not pts:
                continue
            P = np.array([p for _, p in pts])
            style = dict(color="black", lw=2.5, zorder=3) if c == dense else dict(lw=1, alpha=0.8)
            line, = ax.plot(P[:, 0], P[:, 1], marker="o", ms=3, label=_label(cands[c]) if c in (dense, best) else None,
                            **style)
            if c in eliminated_at:
                ax.scatter(P[-1, 0], P[-1, 1], marker="x", s=60, color=line.get_color(), zorder=4)
            if c == best:
                ax.scatter(P[-1, 0], P[-1, 1], marker="*", s=180, color="green", zorder=5, label="picked")
        ax.set_xlabel("LS space PC 1")
        ax.set_ylabel("LS space PC 2")
        ax.set_title("Trajectories in LS space (x: eliminated)", fontsize=10)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "ls_space.png", dpi=110)
        plt.close(fig)
        figures.append("ls_space.png")

    # 3. perplexity curves
    fig, ax = plt.subplots(figsize=(6, 4))
    for c in [dense] + others:
        pts = sorted((e, ev["val_ppl"]) for e, ev in evals[c].items()
                     if ev["val_ppl"] is not None and math.isfinite(ev["val_ppl"]))
        if pts:
            style = dict(color="black", lw=2.5) if c == dense else dict(lw=1, alpha=0.8)
            ax.plot(*zip(*pts), marker="o", ms=3, label=_label(cands[c]) if c in (dense, best) else None, **style)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation perplexity (PTB-16%)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "ppl_curves.png", dpi=110)
    plt.close(fig)
    figures.append("ppl_curves.png")

    # 4. distance at the first elimination against the best perplexity each candidate reached
    rho = None
    if rounds:
        r0 = rounds[0]
        compared = sorted(r0["distances"])  # every candidate alive at the first elimination
        xs = [r0["distances"][c] for c in compared if math.isfinite(r0["distances"][c])]
        ys = [best_val(c) for c in compared if math.isfinite(r0["distances"][c])]
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.scatter(xs, ys)
        if len(xs) >= 3:
            rho = float(spearmanr(xs, ys).statistic)
        ax.set_xlabel(f"distance at epoch {r0['epoch']} ({d['search']['args']['distance']})")
        ax.set_ylabel("best validation perplexity reached")
        ax.set_title(f"Spearman ρ = {rho:.2f}" if rho is not None else "Spearman ρ: too few points", fontsize=10)
        fig.tight_layout()
        fig.savefig(out / "distance_vs_ppl.png", dpi=110)
        plt.close(fig)
        figures.append("distance_vs_ppl.png")

    # summary table
    lines = [f"# Search `{d['name']}`", "", f"Options: `{json.dumps(d['search']['args'], sort_keys=True)}`", "",
             "| candidate | config | origin | status | last epoch | best val ppl (PTB-16%) |",
             "|---|---|---|---|---|---|"]
    for c in sorted(cands, key=lambda c: (best_val(c), c)):
        cc = cands[c]
        lines.append(f"| {c} | {_label(cc)} | {cc['origin']} | {cc['status']} | {max(evals[c], default=0)} | "
                     f"{best_val(c):.2f} |")
    if result:
        lines += ["", f"Picked: {result['best']['describe']}, val ppl {result['best']['val_ppl']:.2f}, "
                      f"test ppl {result['best']['test_ppl']:.2f}; dense: val {result['dense']['val_ppl']:.2f}, "
                      f"test {result['dense']['test_ppl']:.2f}; {result['train_epochs']} training epochs."]
    if rho is not None:
        lines += ["", f"Spearman ρ(first-elimination distance, best val ppl) = {rho:.3f}"]
    (out / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    body = "".join(f'<figure><img src="{f}" alt="{f}"><figcaption>{f}</figcaption></figure>\n' for f in figures)
    table = "<pre>" + html.escape("\n".join(lines)) + "</pre>"
    (out / "index.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>lshx report: {html.escape(d['name'])}</title>"
        f"<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}img{{max-width:100%}}</style></head>"
        f"<body><h1>lshx report: {html.escape(d['name'])}</h1>{body}{table}</body></html>\n", encoding="utf-8")
    return {"name": d["name"], "figures": figures, "out": str(out), "spearman": rho}
