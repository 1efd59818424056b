"""Summarizes a replay (`lshx study replay ... --out DIR` writes DIR/replay.json) as the markdown
tables of docs/results.md (f): the plateau, every method's regret, LSH against the loss-based
search setting by setting, the epochs full training needs to pick as well as each method,
and which early signal ranks the configurations best at each epoch.

    python scripts/replay_summary.py docs/figures/replay/replay.json
"""
import json
import sys


def num(v):
    return "-" if v is None else f"{v:.1f}"  # (replay.json writes inf and NaN as null)


def fmt_setting(m):
    return f"e0={m['e0']} ei={m['ei']}" if m["e0"] else "-"


def plateau(res):
    print("| epoch | sparse runs off the plateau (val ppl < 450) | median sparse val ppl | dense val ppl |")
    print("|---|---|---|---|")
    for r in res["off_plateau"]:
        print(f"| {r['epoch']} | {r['off']}/{r['runs']} | {num(r['median_val_ppl'])} | {num(r['dense_val_ppl'])} |")


def methods(res, hpo):
    """One row per method: its best setting and the mean over its settings."""
    by = {}
    for m in res["methods"]:
        if m["hpo"] == hpo:
            by.setdefault(m["method"], []).append(m)
    print(f"| method ({hpo}) | settings | regret, mean over its settings | its lowest-regret setting (optimistic: "
          f"the best of up to 8) | that regret | its p_best | its epochs |")
    print("|---|---|---|---|---|---|---|")
    for name, ms in sorted(by.items(), key=lambda kv: min(m["regret_mean"] for m in kv[1])):
        best = min(ms, key=lambda m: m["regret_mean"])
        mean = sum(m["regret_mean"] for m in ms) / len(ms)
        print(f"| {name} | {len(ms)} | {mean:.2f} | {fmt_setting(best)} | {best['regret_mean']:.2f} | "
              f"{best['p_best']:.3f} | {best['train_epochs_mean']:.1f} |")


def lsh_vs(res, hpo, a="lsh-pca2", b="loss"):
    """a against b on the same seeds at every setting: who picks the better configuration."""
    rows = [w for w in res["wins"] if w["a"] == a and w["b"] == b and w["hpo"] == hpo]
    if not rows:
        return
    reg = {(m["method"], m["e0"], m["ei"]): m for m in res["methods"] if m["hpo"] == hpo}
    print(f"| setting ({hpo}) | regret {a} | regret {b} | P({a} better) [95%] | P({b} better) | tie | "
          f"mean test ppl {a} - {b} | epochs {a} / {b} |")
    print("|---|---|---|---|---|---|---|---|")
    for w in sorted(rows, key=lambda w: (w["e0"], w["ei"])):
        ma, mb = reg[(a, w["e0"], w["ei"])], reg[(b, w["e0"], w["ei"])]
        print(f"| e0={w['e0']} ei={w['ei']} | {ma['regret_mean']:.2f} | {mb['regret_mean']:.2f} | "
              f"{w['p_a_better']:.3f} [{w['lo']:.3f}, {w['hi']:.3f}] | {w['p_b_better']:.3f} | {w['p_tie']:.3f} | "
              f"{w['mean_diff']:+.2f} | {ma['train_epochs_mean']:.0f} / {mb['train_epochs_mean']:.0f} |")


def full_curve(res):
    """The anytime baseline: full training of the first k configurations (seeded grid order)."""
    print("| k configurations trained fully | training epochs | regret | p_best |")
    print("|---|---|---|---|")
    for c in res["full_curve"]:
        print(f"| {c['k']} | {c['train_epochs']} | {c['regret_mean']:.2f} | {c['p_best']:.3f} |")


def epochs_for_full_quality(res, hpo, names=("lsh-pca2", "loss")):
    """Per setting: the epochs a method spends, and the epochs full training of k configurations
    needs before its mean regret is as low (None: never, even with every configuration)."""
    rows = [m for m in res["methods"] if m["hpo"] == hpo and m["method"] in names and m["e0"]]
    if not rows or "full_curve" not in res:
        return
    print(f"| method ({hpo}) | setting | regret | epochs | full training's epochs for that regret | "
          f"full / method |")
    print("|---|---|---|---|---|---|")
    for m in sorted(rows, key=lambda m: (m["method"], m["e0"], m["ei"])):
        f = m.get("full_epochs_same_regret")
        ratio = f"{f / m['train_epochs_mean']:.2f}" if f else "-"
        print(f"| {m['method']} | {fmt_setting(m)} | {m['regret_mean']:.2f} | {m['train_epochs_mean']:.0f} | "
              f"{f if f else 'not reached'} | {ratio} |")


def signals(res):
    """Spearman rho of each signal at each epoch with the final test ppl (higher: the signal
    ranks the configurations more like their final test ppl); the best one with its interval."""
    sigs = sorted({k for r in res["rho"] for k in r if k != "epoch"})
    print("| epoch | " + " | ".join(sigs) + " | highest rho (point estimate) [95%] |")
    print("|---|" + "---|" * (len(sigs) + 1))
    for r in res["rho"]:
        vals = {s: r[s]["rho"] for s in sigs if s in r and r[s]["rho"] is not None}
        cells = [f"{vals[s]:.2f}" if s in vals else "-" for s in sigs]
        best = "-"
        if vals:
            b = max(vals, key=lambda s: vals[s])
            lo, hi = r[b]["lo"], r[b]["hi"]
            best = f"{b} {vals[b]:.2f}" + (f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else "")
        print(f"| {r['epoch']} | " + " | ".join(cells) + f" | {best} |")


def main(path):
    res = json.load(open(path))
    hpos = [h for h in ("grid", "tpe") if any(m["hpo"] == h for m in res["methods"])]
    print(f"Table {res['table']}: {res['configs']} configurations + dense, {res['table_seeds']} training seed(s); "
          f"best test ppl {res['best']['test_ppl']:.2f} (PTB-16%), {res['best']['config']}; n = {res['n']}, "
          f"{res['methods'][0]['seeds']} replays per setting.\n")
    plateau(res)
    for hpo in hpos:
        print()
        methods(res, hpo)
        print()
        lsh_vs(res, hpo)
        print()
        epochs_for_full_quality(res, hpo)
    if res.get("full_curve"):
        print()
        full_curve(res)
    print()
    signals(res)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/figures/replay/replay.json")
