"""Summarizes scripts/table1.sh's results (runs/table1/*.json) as the markdown table of
docs/results.md: mean and 95% t-interval over the seeds that finished."""
import glob
import json
import math
import os
import statistics

T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78}  # two-sided t quantiles for n - 1 degrees of freedom


def ci(xs):
    if len(xs) < 2:
        return f"{xs[0]:.1f}" if xs else "-"
    m, s = statistics.mean(xs), statistics.stdev(xs)
    return f"{m:.1f} ± {T95[len(xs) - 1] * s / math.sqrt(len(xs)):.1f}"


def main(root="runs/table1"):
    rows = {"LSH-TPE (pca2)": "tpe-pca2", "loss-TPE": "tpe-loss", "LSH-grid (pca2)": "grid-pca2",
            "Selfish-RNN config alone": "selfish", "DST default alone": "default"}
    dense = {}
    print("| method | seeds | val ppl | test ppl | training epochs | wall (s) |")
    print("|---|---|---|---|---|---|")
    for label, stem in rows.items():
        val, test, epochs, wall, seeds = [], [], [], [], []
        for f in sorted(glob.glob(os.path.join(root, f"{stem}-s*.json"))):
            if os.path.getsize(f) == 0:
                continue
            d = json.load(open(f))
            seeds.append(f.rsplit("-s", 1)[1].split(".")[0])
            if stem in ("default", "selfish"):
                val.append(min(d["val_ppl"]))
                test.append(d["test_ppl"])
                epochs.append(len(d["val_ppl"]))
            else:
                val.append(d["best"]["val_ppl"])
                test.append(d["best"]["test_ppl"])
                epochs.append(d["train_epochs"])
                dense[seeds[-1]] = d["dense"]
            wall.append(d["wall_s"])
        print(f"| {label} | {','.join(seeds) or '-'} | {ci(val)} | {ci(test)} | {ci(epochs)} | {ci(wall)} |")
    if dense:
        print(f"| dense (same epochs) | {','.join(sorted(dense))} | {ci([d['val_ppl'] for d in dense.values()])} | "
              f"{ci([d['test_ppl'] for d in dense.values()])} | 5 | - |")


if __name__ == "__main__":
    main(os.path.join(os.environ.get("RUNS", "runs"), "table1"))
