"""The studies' figures (PNG, matplotlib's Agg backend): a replay's regret, rho and validation
curves, and a search report's spectra, LS-space trajectories, perplexity curves and
distance-against-perplexity scatter."""
from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from lshx.studies.replay import NOT_SIGNALS


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def report_figures(d: dict, out: Path) -> Tuple[List[str], Optional[float]]:
    """The figures of one search (d: lshx.studies.report's loaded search, with each
    candidate's label and best val ppl) in `out`; returns their file names and Spearman
    rho(first-elimination distance, best val ppl), or None."""
    from scipy.stats import spearmanr
    from sklearn.decomposition import PCA

    plt = _pyplot()
    labels, best_vals = d["labels"], d["best_val"]
    cands, evals, rounds = d["cands"], d["evals"], d["rounds"]
    dense = [c for c in cands if cands[c]["origin"] == "dense"][0]
    others = sorted(c for c in cands if c != dense)
    result = d["search"]["result"] or {}
    best = result.get("best", {}).get("cid")
    eliminated_at = {g: r["epoch"] for r in rounds for g in r["eliminated"]}
    figures: List[str] = []

    # 1. LS curves of the dense model and two candidates at several epochs (paper Fig. 1A)
    has_ls = any(e["spectrum"] for e in evals[dense].values())
    if has_ls:
        worst = max((c for c in others if c in eliminated_at), key=lambda c: (best_vals[c], c), default=None)
        picks = [c for c in (dense, best, worst) if c is not None]
        fig, axes = plt.subplots(1, len(picks), figsize=(4.2 * len(picks), 3.4), sharey=True)
        for ax, c in zip(np.atleast_1d(axes), picks):
            for e, ev in sorted(evals[c].items()):
                if ev["spectrum"]:
                    ax.plot(ev["spectrum"], label=f"epoch {e}", lw=1.2)
            ax.set_title(labels[c], fontsize=8)
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
            line, = ax.plot(P[:, 0], P[:, 1], marker="o", ms=3, label=labels[c] if c in (dense, best) else None,
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
            ax.plot(*zip(*pts), marker="o", ms=3, label=labels[c] if c in (dense, best) else None, **style)
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
        ys = [best_vals[c] for c in compared if math.isfinite(r0["distances"][c])]
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
    return figures, rho


def replay_figures(res: dict, out_dir: str | Path) -> List[Path]:
    """regret.png (mean regret against mean epochs spent, per method, one point per setting,
    and full training of the first k configurations as the anytime baseline),
    rho.png (rho of each signal against the epoch) and curves.png (the table's validation
    curves, the plateau line)."""
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    hpos = [h for h in ("grid", "tpe") if any(m["hpo"] == h for m in res["methods"])]
    names = sorted({m["method"] for m in res["methods"]})
    colors = plt.get_cmap("tab20")
    style = {name: (colors(k % 20), "osD^v<>ph*"[k % 10]) for k, name in enumerate(names)}
    fig, axes = plt.subplots(1, len(hpos), figsize=(5.5 * len(hpos) + 2.5, 4.5), sharey=True, squeeze=False)
    for ax, hpo in zip(axes[0], hpos):
        for name in names:
            ms = sorted((m for m in res["methods"] if m["hpo"] == hpo and m["method"] == name),
                        key=lambda m: m["train_epochs_mean"])
            if ms:
                c, mk = style[name]
                ax.plot([m["train_epochs_mean"] for m in ms], [m["regret_mean"] for m in ms], "-", marker=mk,
                        color=c, label=name, ms=5)
        if res.get("full_curve"):
            fc = res["full_curve"]
            ax.plot([c["train_epochs"] for c in fc], [c["regret_mean"] for c in fc], "k--", lw=1,
                    label="full training of k configs (grid order)" if hpo == hpos[-1] else None)
        ax.set_title(f"{res['table']}: n = {res['n']}, HPO {hpo}")
        ax.set_xlabel("training epochs spent (mean over seeds)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("regret: test ppl of the pick - best (PTB-16%)")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    paths.append(out / "regret.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    rows = res["rho"]["epochs"]
    signals = sorted({k for r in rows for k in r if k not in NOT_SIGNALS})
    for k, sig in enumerate(signals):
        pts = [(r["epoch"], r[sig]["rho"], r[sig]["lo"], r[sig]["hi"]) for r in rows
               if sig in r and r[sig]["rho"] is not None]
        if pts:
            e, rho, lo, hi = zip(*pts)
            ax.plot(e, rho, "-", marker="osD^v<>ph*"[k % 10], color=colors(k % 20), label=sig, ms=4)
            if sig in ("lsh-pca2", "val_ppl"):  # the two the paper compares, with their 95% intervals
                ax.fill_between(e, lo, hi, color=colors(k % 20), alpha=0.15)
    ax.set_title(f"{res['table']}: rho averaged over {res['table_seeds']} training seed(s) "
                 f"(shaded: 95% intervals of lsh-pca2 and val ppl)", fontsize=9)
    ax.set_xlabel("epoch")
    ax.set_ylabel("Spearman rho with the final test ppl")
    ax.axhline(0, color="k", lw=0.5)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(out / "rho.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    if res.get("curves"):
        paths.append(_curves_figure(res, out / "curves.png", plt))
    return paths


def _curves_figure(res: dict, path: Path, plt) -> Path:
    from lshx.studies.table import PLATEAU_PPL

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for row in res["curves"]:
        dense = row["config"] == "dense"
        for curve in row["val_ppl"]:
            pts = [(e, v) for e, v in enumerate(curve, start=1) if v is not None and math.isfinite(v)]
            if pts:
                ax.plot(*zip(*pts), "-", color="k" if dense else "tab:blue", lw=2 if dense else 0.8,
                        alpha=1 if dense else 0.5, label="dense" if dense else None)
    ax.plot([], [], "-", color="tab:blue", lw=0.8, label=f"{res['configs']} sparse configurations")
    ax.axhline(PLATEAU_PPL, color="tab:red", ls="--", lw=1, label=f"val ppl {PLATEAU_PPL:.0f} (off the plateau)")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation ppl (PTB-16%)")
    ax.set_title(f"{res['table']}: every configuration's validation curve")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
