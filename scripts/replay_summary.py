"""Summarizes a replay (`lshx study replay ... --out DIR` writes DIR/replay.json) as the markdown
tables of docs/results.md (f): the table's training noise, the plateau, every method's regret
with its intervals, LSH against the loss-based search setting by setting (with the verdict the
intervals allow), the epochs full training needs to pick as well as each method, and which
early signal ranks the configurations best at each epoch.

    python scripts/replay_summary.py docs/figures/replay/replay.json
"""
import json
import sys

from lshx.studies.replay import NOT_SIGNALS  # (the keys of a rho row that are not a signal)


def num(v, fmt=".1f"):
    return "-" if v is None else f"{v:{fmt}}"  # (replay.json writes inf and NaN as null)


def ci(c, fmt="+.2f"):
    return "-" if not c or c[0] is None else f"[{c[0]:{fmt}}, {c[1]:{fmt}}]"


def fmt_setting(m):
    return f"e0={m['e0']} ei={m['ei']}" if m["e0"] else "-"


def noise(res):
    n = res["noise"]
    print("| training noise: SD of the final test ppl between runs of one configuration | SD [95%] | df |")
    print("|---|---|---|")
    t = n["test_ppl"]
    for key, what in (("off_plateau", "the {} configurations off the plateau in every seed"),
                      ("all", "all {} configurations")):
        if t[key]["sd"] is not None:
            print(f"| pooled over {what.format(t[key]['groups'])} | {t[key]['sd']:.2f} "
                  f"{ci((t[key]['lo'], t[key]['hi']), '.2f')} | {t[key]['df']} |")
    big = t["off_plateau"].get("largest")
    if big and t["off_plateau"]["without_largest"]["sd"] is not None:
        w, c = t["off_plateau"]["without_largest"], big["config"]
        print(f"| pooled over the same {t['off_plateau']['groups']} without {c['init']} / {c['death']} / "
              f"{c['redistribution']}, which carries {big['share']:.0%} of their sum of squares | {w['sd']:.2f} {ci((w['lo'], w['hi']), '.2f')} | {w['df']} |")
    tw = n["twins"]
    if tw["sd"] is not None:
        print(f"| the {len(tw['pairs'])} twin pairs (one algorithm trained twice), every seed | {tw['sd']:.2f} "
              f"{ci((tw['lo'], tw['hi']), '.2f')} | {tw['df']} |")
    if n["dense_test_ppl"]["sd"] is not None:
        print(f"| the dense model ({', '.join(f'{v:.2f}' for v in n['dense_test_ppl']['values'])}) | "
              f"{n['dense_test_ppl']['sd']:.2f} | {n['seeds'] - 1} |")
    rows = [e for e in n["val_ppl"] if e["off_plateau"]["sd"] is not None]
    if rows:
        print()
        print("| epoch | SD of the val ppl, off-plateau configurations (df) | every configuration (df) |")
        print("|---|---|---|")
        for e in rows:
            print(f"| {e['epoch']} | {e['off_plateau']['sd']:.2f} ({e['off_plateau']['df']}) | "
                  f"{num(e['all']['sd'], '.2f')} ({e['all']['df']}) |")


def plateau(res):
    print("| epoch | sparse runs off the plateau (val ppl < 450) | median sparse val ppl | dense val ppl |")
    print("|---|---|---|---|")
    for r in res["off_plateau"]:
        print(f"| {r['epoch']} | {r['off']}/{r['runs']} | {num(r['median_val_ppl'])} | {num(r['dense_val_ppl'])} |")


def methods(res, hpo, settings=None):
    """Every method at the given settings (default: all) with both intervals."""
    print(f"| method ({hpo}) | setting | regret | [95%, replays] | [95%, across seeds] | [95%, held-out seeds] | "
          f"regret vs the drawn best | p_best | epochs |")
    print("|---|---|---|---|---|---|---|---|---|")
    for m in res["methods"]:
        if m["hpo"] != hpo or (settings and m["e0"] and (m["e0"], m["ei"]) not in settings):
            continue
        print(f"| {m['method']} | {fmt_setting(m)} | {m['regret_mean']:.2f} | {ci(m['regret_ci'])} | "
              f"{ci(m.get('regret_t_ci'))} | {ci(m.get('regret_held_out_t_ci'))} | {m['regret_drawn_mean']:.2f} | {m['p_best']:.3f} | "
              f"{m['train_epochs_mean']:.1f} |")


def pivot(res, hpo):
    """Mean regret of every method (rows) at every setting (columns), and LSH (pca2) - loss
    with its verdict: the whole replay at a glance."""
    rows = [m for m in res["methods"] if m["hpo"] == hpo]
    sets = sorted({(m["e0"], m["ei"]) for m in rows if m["e0"]})
    names = list(dict.fromkeys(m["method"] for m in rows))
    print(f"| regret ({hpo}) | " + " | ".join(f"{e0}/{ei}" for e0, ei in sets) + " |")
    print("|---|" + "---|" * len(sets))
    for name in names:
        got = {(m["e0"], m["ei"]): m["regret_mean"] for m in rows if m["method"] == name}
        if (None, None) in got:  # full, random: no schedule
            print(f"| {name} | " + " | ".join(f"{got[(None, None)]:.2f}" for _ in sets) + " |")
        else:
            print(f"| {name} | " + " | ".join(num(got.get(k), ".2f") for k in sets) + " |")
    diffs = {(d["e0"], d["ei"]): d for d in res["differences"] if d["a"] == "lsh-pca2" and d["b"] == "loss"
             and d["hpo"] == hpo}
    if diffs:
        def cell(d):
            if d is None:
                return "-"
            tag = {"not distinguishable": "n.d.", "a picks better": "LSH", "b picks better": "loss"}.get(d["verdict"],
                                                                                                        d["verdict"])
            return f"{d['mean']:+.2f} {ci(d.get('t_ci'))} {tag}"
        print(f"| lsh-pca2 - loss [95%, across seeds] | " + " | ".join(cell(diffs.get(k)) for k in sets) + " |")
        print()
        print("(n.d.: not distinguishable, by the replays', the across-seeds and the held-out intervals)")


def lsh_vs(res, hpo, a="lsh-pca2", b="loss"):
    """a against b on the same replays at every setting: the regret difference and the verdict."""
    rows = [d for d in res["differences"] if d["a"] == a and d["b"] == b and d["hpo"] == hpo]
    if not rows:
        return
    print(f"| setting ({hpo}) | regret {a} - {b} | [95%, replays] | per training seed | [95%, across seeds] | "
          f"[95%, held-out seeds] | P({a} better) | P({b} better) | verdict |")
    print("|---|---|---|---|---|---|---|---|---|")
    for d in sorted(rows, key=lambda d: (d["e0"], d["ei"])):
        per = ", ".join(f"{v:+.2f}" for v in d.get("per_seed", [])) or "-"
        verdict = {"a picks better": f"{a} picks better", "b picks better": f"{b} picks better"}.get(
            d["verdict"], d["verdict"])
        print(f"| e0={d['e0']} ei={d['ei']} | {d['mean']:+.2f} | {ci(d['ci'])} | {per} | {ci(d.get('t_ci'))} | "
              f"{ci(d.get('t_ci_held_out'))} | {d['p_a_better']:.3f} | {d['p_b_better']:.3f} | {verdict} |")


def full_curve(res):
    """The anytime baseline: full training of the first k configurations (seeded grid order)."""
    print("| k configurations trained fully | training epochs | regret | per training seed | p_best |")
    print("|---|---|---|---|---|")
    for c in res["full_curve"]:
        per = ", ".join(f"{v:.2f}" for v in c.get("regret_per_seed", [])) or "-"
        print(f"| {c['k']} | {c['train_epochs']} | {c['regret_mean']:.2f} | {per} | {c['p_best']:.3f} |")


def epochs_for_full_quality(res, hpo, names=("lsh-pca2", "loss")):
    """Per setting: the epochs a method spends, and the epochs full training of k configurations
    needs before its mean regret is as low (None: never), from the mixed replays and from each
    training seed's (their spread is what the figure is worth)."""
    rows = [m for m in res["methods"] if m["hpo"] == hpo and m["method"] in names and m["e0"]]
    if not rows or not res.get("full_curve"):
        return
    print(f"| method ({hpo}) | setting | regret | epochs | full training's epochs for that regret | per training "
          f"seed |")
    print("|---|---|---|---|---|---|")
    for m in sorted(rows, key=lambda m: (m["method"], m["e0"], m["ei"])):
        f = m.get("full_epochs_same_regret")
        per = ", ".join("not reached" if v is None else str(v) for v in m.get("full_epochs_same_regret_per_seed", []))
        print(f"| {m['method']} | {fmt_setting(m)} | {m['regret_mean']:.2f} | {m['train_epochs_mean']:.0f} | "
              f"{f if f else 'not reached'} | {per or '-'} |")


def rho_difference(rows, name, key, rhos_of):
    """Per epoch: rho of the LS signal `name` and of the val ppl (rhos_of(row)), and their
    paired difference row[key][name] with its intervals and verdict."""
    print(f"| epoch | rho {name} [95%] | rho val ppl [95%] | difference [95%, configurations] | per training "
          f"seed | [95%, across seeds] | verdict |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if name not in r.get(key, {}):
            continue
        d, a, v = r[key][name], rhos_of(r)[name], rhos_of(r)["val_ppl"]
        per = ", ".join(f"{x:+.2f}" for x in d["per_seed"])
        mark = " (excludes 0)" if d["excludes_zero"] else ""
        print(f"| {r['epoch']} | {a['rho']:.2f} {ci((a['lo'], a['hi']), '.2f')} | {v['rho']:.2f} "
              f"{ci((v['lo'], v['hi']), '.2f')} | {d['diff']:+.2f} {ci((d['lo'], d['hi']))}{mark} | {per} | "
              f"{ci(d.get('t_ci'))} | {d.get('verdict', '-')} |")


def signals(res, ls=("lsh-pca2",)):
    """Spearman rho of each signal at each epoch with the final test ppl of the same run, averaged
    over the training seeds, and the paired difference of the LS signals with the val ppl."""
    rows = res["rho"]["epochs"]
    sigs = sorted({k for r in rows for k in r if k not in NOT_SIGNALS})
    print("| epoch | " + " | ".join(sigs) + " | highest rho (point estimate) [95%] |")
    print("|---|" + "---|" * (len(sigs) + 1))
    for r in rows:
        vals = {s: r[s]["rho"] for s in sigs if s in r and r[s]["rho"] is not None}
        cells = [f"{vals[s]:.2f}" if s in vals else "-" for s in sigs]
        best = "-"
        if vals:
            b = max(vals, key=lambda s: vals[s])
            best = f"{b} {vals[b]:.2f} {ci((r[b]['lo'], r[b]['hi']), '.2f')}"
        print(f"| {r['epoch']} | " + " | ".join(cells) + f" | {best} |")
    for name in ls:
        print()
        rho_difference(rows, name, "minus_val_ppl", lambda r: r)
        if any("minus_val_ppl_held_out" in r for r in rows):
            print()
            print("The same, each seed's signals against the other seeds' mean test ppl (the val and test ppl of one "
                  "run share its noise):")
            print()
            rho_difference(rows, name, "minus_val_ppl_held_out", lambda r: r["held_out"])
    print()
    print(res["rho"]["note"] + ".")


def main(path):
    res = json.load(open(path))
    hpos = [h for h in ("grid", "tpe") if any(m["hpo"] == h for m in res["methods"])]
    print(f"Table {res['table']}: {res['configs']} configurations + dense, {res['table_seeds']} training seed(s); "
          f"best in expectation {res['best']['config']}, mean test ppl {res['best']['test_ppl']:.2f} (PTB-16%); "
          f"n = {res['n']}, {res['methods'][0]['seeds']} replays per setting"
          + (" and as many on each training seed." if res["table_seeds"] >= 2 else
             "; one training seed: the intervals exclude training noise.") + "\n")
    noise(res)
    print()
    plateau(res)
    for hpo in hpos:
        print()
        pivot(res, hpo)
    for hpo in hpos:
        print()
        methods(res, hpo)
        print()
        lsh_vs(res, hpo)
        for a, b in (("lsh-pca2", "full"), ("loss", "full"), ("lsh-pca2", "random"), ("loss", "random")):
            if any(d["a"] == a and d["b"] == b and d["hpo"] == hpo for d in res["differences"]):
                print()
                lsh_vs(res, hpo, a, b)
        print()
        epochs_for_full_quality(res, hpo)
    if res.get("full_curve"):
        print()
        full_curve(res)
    print()
    signals(res)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/figures/replay/replay.json")
