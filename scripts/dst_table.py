"""Measures docs/dst.md: dense against density 0.33 with each death mode, small preset.

Runs `lshx train ... --json` for each row (2 at a time, one thread each, under nice) and
prints the markdown table with the commands. Usage: python scripts/dst_table.py [--epochs 3]
"""
import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

DEATHS = ("magnitude", "SET", "threshold", "global_magnitude", "SET-original")
ROWS = [("dense", ["--density", "1.0"])] + [(f"0.33, {d}", ["--density", "0.33", "--death", d]) for d in DEATHS]


def run(row, epochs, out_root):
    name, extra = row
    out = os.path.join(out_root, name.replace(", ", "-").replace(".", ""))
    cmd = ["nice", "lshx", "train", "ptb-lstm", "--preset", "small", "--epochs", str(epochs), "--out", out, "--json",
           "--quiet", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return name, " ".join(cmd), json.loads(p.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", default="runs/dst-table")
    a = ap.parse_args()
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda r: run(r, a.epochs, a.out), ROWS))
    head = "| model | " + " | ".join(f"val ppl e{i + 1}" for i in range(a.epochs)) + \
        " | test ppl | density | wall (s) |"
    print(head)
    print("|" + "---|" * (a.epochs + 4))
    for name, _, r in results:
        vals = " | ".join(f"{v:.1f}" for v in r["val_ppl"])
        print(f"| {name} | {vals} | {r['test_ppl']:.1f} | {r['density']:.4f} | {r['wall_s']:.0f} |")
    print()
    for name, cmd, _ in results:
        print(f"- {name}: `OMP_NUM_THREADS=1 {cmd}`")
    json.dump([r for _, _, r in results], sys.stderr)


if __name__ == "__main__":
    main()
