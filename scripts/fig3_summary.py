"""Like the paper's Fig. 3 (left) from scripts/fig3.sh's results (runs/fig3/*.json) and the
seed-0 runs of scripts/table1.sh (the 0.67 point): test perplexity of the picked model
against the pruning ratio for LSH-TPE, loss-TPE and Selfish-RNN's config alone, with the
dense model as a line. Writes docs/figures/fig3/pruning_ratio.png and its data as JSON,
and prints the markdown table of docs/results.md."""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

METHODS = {"LSH-TPE (pca2)": "tpe-pca2", "loss-TPE": "tpe-loss", "Selfish-RNN config alone": "selfish"}
COLORS = {"LSH-TPE (pca2)": "tab:blue", "loss-TPE": "tab:brown", "Selfish-RNN config alone": "tab:gray"}


def load(path):
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return None
    d = json.load(open(path))
    if "best" in d:
        return {"val": d["best"]["val_ppl"], "test": d["best"]["test_ppl"], "epochs": d["train_epochs"],
                "wall": d["wall_s"], "dense": d["dense"], "config": d["best"].get("config")}
    return {"val": min(d["val_ppl"]), "test": d["test_ppl"], "epochs": len(d["val_ppl"]), "wall": d["wall_s"]}


def main(out_dir="docs/figures/fig3", runs=os.environ.get("RUNS", "runs")):
    points = {}  # ratio -> method -> result
    for ratio in ("0.5", "0.6", "0.7", "0.8"):
        for label, stem in METHODS.items():
            r = load(f"{runs}/fig3/{stem}-r{ratio}.json")
            if r:
                points.setdefault(float(ratio), {})[label] = r
    for label, stem in METHODS.items():  # the Table 1 runs at density 0.33, seed 0
        r = load(f"{runs}/table1/{stem}-s0.json")
        if r:
            points.setdefault(0.67, {})[label] = r
    if not points:
        sys.exit(f"no results under {runs}/fig3 or {runs}/table1: run scripts/fig3.sh first")
    dense = next((r["dense"] for p in points.values() for r in p.values() if "dense" in r), None)
    os.makedirs(out_dir, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    for label in METHODS:
        xs = sorted(x for x in points if label in points[x])
        ax.plot(xs, [points[x][label]["test"] for x in xs], "o-", color=COLORS[label], label=label)
    if dense:
        ax.axhline(dense["test_ppl"], color="k", ls="--", lw=1, label="dense (same epochs)")
    ax.set_xlabel("pruning ratio (1 - density)")
    ax.set_ylabel("test perplexity (PTB-16%)")
    ax.set_title("Picked model vs pruning ratio (small preset, 5 x 150 windows, seed 0)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "pruning_ratio.png"), dpi=120)
    with open(os.path.join(out_dir, "pruning_ratio.json"), "w") as f:
        json.dump({str(k): v for k, v in sorted(points.items())}, f, indent=1)
    print("| pruning ratio | LSH-TPE val / test | loss-TPE val / test | Selfish-RNN config val / test | LSH − loss (test) |")
    print("|---|---|---|---|---|")
    for x in sorted(points):
        p = points[x]
        cells = [f"{p[m]['val']:.1f} / {p[m]['test']:.1f}" if m in p else "-" for m in METHODS]
        diff = (f"{p['LSH-TPE (pca2)']['test'] - p['loss-TPE']['test']:+.1f}"
                if "LSH-TPE (pca2)" in p and "loss-TPE" in p else "-")
        print(f"| {x:g} | " + " | ".join(cells) + f" | {diff} |")
    if dense:
        print(f"\ndense (same 5 capped epochs): val {dense['val_ppl']:.1f} / test {dense['test_ppl']:.1f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/figures/fig3")
