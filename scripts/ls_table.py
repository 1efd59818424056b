"""Measures the Table 4 analogue of docs/lyapunov.md: max/mean/var of the spectrum from 2
and from 10 validation windows, for two checkpoints. Usage:
    python scripts/ls_table.py CKPT_A CKPT_B
"""
import json
import subprocess
import sys


def spectrum_stats(ckpt, samples):
    cmd = ["lshx", "ls-compute", ckpt, "--samples", str(samples), "--steps", "35", "--warmup", "10", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return " ".join(cmd), json.loads(out.strip().splitlines()[-1])


def main():
    ckpts = sys.argv[1:3]
    res = {c: {k: spectrum_stats(c, k) for k in (2, 10)} for c in ckpts}
    print("| | " + " | ".join(f"{name} K=2 | {name} K=10 | Δ" for name in ("pruned 1", "pruned 2")) + " |")
    print("|---" * 7 + "|")
    for stat in ("max", "mean", "var"):
        cells = []
        for c in ckpts:
            a, b = res[c][2][1][stat], res[c][10][1][stat]
            cells += [f"{a:.3f}", f"{b:.3f}", f"{abs(a - b):.3f}"]
        print(f"| {stat} | " + " | ".join(cells) + " |")
    print()
    for i, c in enumerate(ckpts, 1):
        for k in (2, 10):
            print(f"- pruned {i}, K={k}: `{res[c][k][0]}` ({res[c][k][1]['wall_s']:.1f} s, "
                  f"N = {res[c][k][1]['k']} exponents)")


if __name__ == "__main__":
    main()
