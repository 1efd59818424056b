"""What a replay's searches and a table's seeds say, with intervals that include training noise:
the table's noise (noise), a method's regret at a setting (method_summary), two methods
against each other (difference) and how each early signal ranks the configurations
(seed_averaged_rho, paired_rho_difference). A pick is judged by its configuration's mean test
ppl over the seeds; a bootstrap over the replays and a t-interval across the per-seed replays
bound each number (the latter also with each seed's picks judged by the other seeds only), and
a difference is called only when all three exclude 0 on the same side. The method, in full:
docs/results.md, "How the intervals are made"."""
from __future__ import annotations

import math
import warnings
from typing import List, Optional, Sequence, Tuple

import numpy as np
from scipy import stats as sps

from lshx.studies.table import PLATEAU_PPL, Table, finite, is_grid_table

LEVEL = 0.95


# ----------------------------------------------------------------------------- intervals
def bootstrap_mean(x: np.ndarray, reps: int = 2000, seed: int = 0) -> Tuple[float, float]:
    """95% percentile bootstrap interval of the mean of x."""
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (reps, len(x)))].mean(axis=1)
    a = (1 - LEVEL) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def t_interval(x: Sequence[float]) -> Optional[Tuple[float, float]]:
    """95% t-interval of the mean of a few values (None with fewer than two)."""
    x = np.asarray(x, float)
    if len(x) < 2:
        return None
    half = sps.t.ppf(1 - (1 - LEVEL) / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


def excludes_zero(ci: Optional[Sequence[float]]) -> Optional[bool]:
    return None if ci is None else bool(ci[0] > 0 or ci[1] < 0)


def penalized(table: Table, x: np.ndarray) -> np.ndarray:
    """Test ppls with a diverged pick (+inf, or NaN) counted as the table's worst finite one:
    a method that picks a diverged config is penalized, not dropped from the mean."""
    worst = max(v for t in table.test for v in t if finite(v))
    return np.where(np.isfinite(x), x, worst)


def expected_test(table: Table) -> np.ndarray:
    """Every configuration's test ppl averaged over the table's seeds (index 0: the dense
    model), a diverged seed penalized as the table's worst finite test ppl (Table.mean_test)."""
    per_seed = penalized(table, np.array(table.test, float))
    return per_seed.mean(axis=0)


def held_out_test(table: Table, t: int) -> np.ndarray:
    """The same averaged over every seed but t: how a pick made on seed t's curves is judged
    without the noise of the run it was made on (val and test ppl of one run share it). With
    one seed, seed t's own."""
    per_seed = penalized(table, np.array(table.test, float))
    others = [s for s in range(len(per_seed)) if s != t]
    return per_seed[others].mean(axis=0) if others else per_seed[t]


# ----------------------------------------------------------------------------- noise
def _pooled_sd(rows: List[List[float]]) -> dict:
    """Pooled within-group SD of groups of replicates (each row: one configuration's values
    across seeds), its degrees of freedom and a 95% chi-square interval."""
    ss, df = 0.0, 0
    for r in rows:
        r = np.asarray(r, float)
        if len(r) >= 2:
            ss += float(((r - r.mean()) ** 2).sum())
            df += len(r) - 1
    if df == 0:
        return {"sd": None, "df": 0, "lo": None, "hi": None, "groups": len(rows)}
    sd = math.sqrt(ss / df)
    a = (1 - LEVEL) / 2
    return {"sd": sd, "df": df, "lo": sd * math.sqrt(df / sps.chi2.ppf(1 - a, df)),
            "hi": sd * math.sqrt(df / sps.chi2.ppf(a, df)), "groups": len(rows)}


def _largest_share(table: Table, ids: List[int]) -> dict:
    """Which configuration carries the largest share of the pooled sum of squares, that share,
    and the pooled SD without it: one run that leaves the plateau late in one seed and early in
    another can carry most of the pooled SD, which then says little about the others."""
    S = len(table.evals)
    if S < 2 or len(ids) < 2:
        return {}
    rows = {i: np.array([table.test[t][i] for t in range(S)]) for i in ids}
    ss = {i: float(((r - r.mean()) ** 2).sum()) for i, r in rows.items()}
    total = sum(ss.values())
    top = max(ss, key=ss.get)
    rest = _pooled_sd([r for i, r in rows.items() if i != top])
    return {"largest": {"index": top, "config": table.configs[top], "share": ss[top] / total if total else 0.0},
            "without_largest": rest}


def twin_pairs(table: Table) -> List[Tuple[int, int]]:
    """GS-24's twins: with SET or magnitude death every tensor loses rate x its nonzeros, so
    'nonzeros' redistribution regrows what 'none' regrows: one algorithm trained twice."""
    if not is_grid_table(table):
        return []
    out = []
    for i, c in enumerate(table.configs):
        if c is None or c["death"] not in ("SET", "magnitude") or c["redistribution"] != "none":
            continue
        for j, d in enumerate(table.configs):
            if d is not None and d["redistribution"] == "nonzeros" and \
                    all(d[k] == c[k] for k in d if k != "redistribution"):
                out.append((i, j))
    return out


def noise(table: Table) -> dict:
    """Training noise measured on the table: per configuration the SD of the final test ppl
    across seeds; pooled over the configurations whose runs leave the plateau in every seed
    (val ppl < PLATEAU_PPL at the last epoch) and over every finite one; the same for the val
    ppl of each epoch (off plateau: the configurations below PLATEAU_PPL at that epoch in every
    seed); and on the GS-24 grid the twin-pair estimate (sd = sqrt(mean(d^2) / 2)
    over the pairs' differences in every seed, df = pairs x seeds). Twins share their training
    seed (same data order and initialization), so the twin SD is a lower bound on the noise
    between independently seeded runs."""
    S, P = len(table.evals), table.final_epochs
    ids = range(1, len(table.configs))

    def val(t, i, e):
        return table.evals[t][i].get(e, {}).get("val_ppl")

    good = [i for i in ids if all(finite(val(t, i, P)) and val(t, i, P) < PLATEAU_PPL and finite(table.test[t][i])
                                  for t in range(S))]
    finite_ids = [i for i in ids if all(finite(table.test[t][i]) for t in range(S))]
    per_config = []
    for i in ids:
        xs = [table.test[t][i] for t in range(S)]
        ok = all(map(finite, xs))
        per_config.append({"index": i, "config": table.configs[i], "test_ppl": xs,
                           "sd": float(np.std(xs, ddof=1)) if S >= 2 and ok else None, "off_plateau": i in good})
    epochs = []
    for e in range(1, P + 1):
        rows_all = [[val(t, i, e) for t in range(S)] for i in ids]
        rows_all = [r for r in rows_all if all(map(finite, r))]
        # off the plateau at this epoch in every seed (a run that leaves it later is not yet off)
        rows_off = [r for r in rows_all if all(v < PLATEAU_PPL for v in r)]
        epochs.append({"epoch": e, "all": _pooled_sd(rows_all), "off_plateau": _pooled_sd(rows_off)})
    twins = twin_pairs(table)
    d = [table.test[t][i] - table.test[t][j] for t in range(S) for i, j in twins
         if finite(table.test[t][i]) and finite(table.test[t][j])]
    twin = {"pairs": [[table.configs[i], table.configs[j]] for i, j in twins], "df": len(d),
            "sd": math.sqrt(sum(x * x for x in d) / (2 * len(d))) if d else None}
    if d:
        a = (1 - LEVEL) / 2
        twin["lo"] = twin["sd"] * math.sqrt(len(d) / sps.chi2.ppf(1 - a, len(d)))
        twin["hi"] = twin["sd"] * math.sqrt(len(d) / sps.chi2.ppf(a, len(d)))
    dense = [table.test[t][0] for t in range(S)]
    return {"seeds": S, "configs": len(table.configs) - 1,
            "test_ppl": {"off_plateau": {**_pooled_sd([[table.test[t][i] for t in range(S)] for i in good]),
                                         "configs": good, **_largest_share(table, good)},
                         "all": _pooled_sd([[table.test[t][i] for t in range(S)] for i in finite_ids])},
            "dense_test_ppl": {"values": dense, "sd": float(np.std(dense, ddof=1)) if S >= 2 else None},
            "per_config": per_config, "val_ppl": epochs, "twins": twin}


# ----------------------------------------------------------------------------- methods
def method_summary(table: Table, mixed: List[dict], per_seed: List[List[dict]]) -> dict:
    """One method at one setting: mixed = its replays with a drawn training seed per
    configuration, per_seed[t] = its replays on seed t alone (empty with one seed)."""
    exp = expected_test(table)
    best = table.best()
    pick = np.array([r["pick"] for r in mixed])
    drawn = penalized(table, np.array([r["test_ppl"] for r in mixed], float))
    regret = exp[pick] - exp[best]
    regret_drawn = drawn - np.array([r["best_test_ppl"] for r in mixed])
    out = {"seeds": len(mixed), "final_test_ppl_mean": float(drawn.mean()),
           # against the configuration best in expectation, each pick judged by its mean test ppl
           "regret_mean": float(regret.mean()), "regret_ci": bootstrap_mean(regret),
           "p_best": float(np.mean(pick == best)),
           # against the best configuration of each replay's draw, each pick by its drawn test ppl
           "regret_drawn_mean": float(regret_drawn.mean()), "regret_drawn_ci": bootstrap_mean(regret_drawn),
           "p_best_drawn": float(np.mean([r["pick"] == r["best"] for r in mixed])),
           "diverged_picks": int(np.sum(~np.isfinite([r["test_ppl"] for r in mixed]))),
           "distinct_picks": len(set(pick.tolist())),
           "train_epochs_mean": float(np.mean([r["train_epochs"] for r in mixed]))}
    out["includes_training_noise"] = bool(per_seed)
    if per_seed:
        means = [float(np.mean(exp[[r["pick"] for r in rs]] - exp[best])) for rs in per_seed]
        out["regret_per_seed"] = means
        out["regret_t_ci"] = t_interval(means)
        held = []
        for t, rs in enumerate(per_seed):  # judged by the other seeds only
            h = held_out_test(table, t)
            held.append(float(np.mean(h[[r["pick"] for r in rs]] - h[1:].min())))
        out["regret_held_out_per_seed"] = held
        out["regret_held_out_t_ci"] = t_interval(held)
    return out


def difference(table: Table, a: Tuple[List[dict], List[List[dict]]], b: Tuple[List[dict], List[List[dict]]]) -> dict:
    """a - b in regret (picks judged by their mean test ppl; < 0: a picks better) on the same
    replays: mean and bootstrap interval over the paired mixed-draw replays, the per-seed
    means and their t-interval, and the verdict the intervals allow."""
    exp = expected_test(table)
    d = exp[[r["pick"] for r in a[0]]] - exp[[r["pick"] for r in b[0]]]
    out = {"mean": float(d.mean()), "ci": bootstrap_mean(d), "p_a_better": float(np.mean(d < 0)),
           "p_b_better": float(np.mean(d > 0)), "p_tie": float(np.mean(d == 0))}
    out["ci_excludes_zero"] = excludes_zero(out["ci"])
    if a[1] and b[1]:
        per = [float(np.mean(exp[[r["pick"] for r in ra]] - exp[[r["pick"] for r in rb]]))
               for ra, rb in zip(a[1], b[1])]
        out["per_seed"] = per
        out["t_ci"] = t_interval(per)
        out["t_ci_excludes_zero"] = excludes_zero(out["t_ci"])
        held = []
        for t, (ra, rb) in enumerate(zip(a[1], b[1])):
            h = held_out_test(table, t)
            held.append(float(np.mean(h[[r["pick"] for r in ra]] - h[[r["pick"] for r in rb]])))
        out["per_seed_held_out"] = held
        out["t_ci_held_out"] = t_interval(held)
        # called only when all three intervals exclude 0 on the same side: the replays' (the
        # searches and the seed draws, judged by the mean over the table's seeds), the one
        # across the per-seed replays (the training seeds), and the held-out one (each seed's
        # picks judged by the other seeds only: the judge's own noise too)
        cis = (out["ci"], out["t_ci"], out["t_ci_held_out"])
        below = all(c is not None and c[1] < 0 for c in cis)
        above = all(c is not None and c[0] > 0 for c in cis)
        out["includes_training_noise"] = True
        out["verdict"] = "a picks better" if below else "b picks better" if above else "not distinguishable"
    else:  # one training seed: the interval covers the searches' randomness only, and decides nothing
        out["includes_training_noise"] = False
        out["verdict"] = "undecided: one training seed"
    return out


# ----------------------------------------------------------------------------- signals
def last_ranked(values) -> List[float]:
    """A diverged or missing value (None, inf, NaN) ranks after every finite one, all tied:
    what a search does with it (eliminated first). Spearman rho sees ranks only."""
    vals = [v if finite(v) else None for v in values]
    top = max((v for v in vals if v is not None), default=0.0)
    return [top + 1.0 if v is None else float(v) for v in vals]


def _nanmean0(a: np.ndarray) -> np.ndarray:
    """The mean over seeds (axis 0) of resampled rhos, a resample whose ranks are all tied
    (rho undefined) left out; NaN where every seed's is."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=0)


def _rho_rows(xs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman rho of every row of xs with the matching row of y (ranks, then Pearson)."""
    from scipy.stats import rankdata

    rx, ry = rankdata(xs, axis=-1), rankdata(y, axis=-1)
    rx -= rx.mean(axis=-1, keepdims=True)
    ry -= ry.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(axis=-1) / np.sqrt((rx * rx).sum(axis=-1) * (ry * ry).sum(axis=-1))


def seed_averaged_rho(x: np.ndarray, y: np.ndarray, reps: int = 2000, seed: int = 0) -> dict:
    """x, y: (S, C) a signal and the final test ppl of C configurations in S seeds. Spearman
    rho per seed, its mean over seeds, and a 95% bootstrap interval of that mean resampling
    the configurations (the same resample in every seed)."""
    S, C = x.shape
    per = _rho_rows(x, y)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, C, (reps, C))
    idx = idx[np.array([len(np.unique(r)) >= 3 for r in idx])]
    boots = _nanmean0(_rho_rows(x[:, idx], y[:, idx]))
    boots = boots[np.isfinite(boots)]
    a = (1 - LEVEL) / 2
    return {"rho": float(np.mean(per)), "lo": float(np.quantile(boots, a)), "hi": float(np.quantile(boots, 1 - a)),
            "per_seed": [float(r) for r in per], "n": C, "idx": idx}


def paired_rho_difference(x1: np.ndarray, x2: np.ndarray, y: np.ndarray, idx: np.ndarray) -> dict:
    """rho(x1, y) - rho(x2, y), averaged over seeds, with a paired bootstrap over configurations
    (resamples idx, shared with seed_averaged_rho), the per-seed differences and, with two
    seeds or more, their t-interval (the training noise); the verdict as for regrets."""
    per = _rho_rows(x1, y) - _rho_rows(x2, y)
    boots = _nanmean0(_rho_rows(x1[:, idx], y[:, idx]) - _rho_rows(x2[:, idx], y[:, idx]))
    boots = boots[np.isfinite(boots)]
    a = (1 - LEVEL) / 2
    ci = (float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a)))
    out = {"diff": float(np.mean(per)), "lo": ci[0], "hi": ci[1], "per_seed": [float(v) for v in per],
           "excludes_zero": excludes_zero(ci), "t_ci": t_interval(per)}
    if out["t_ci"] is None:
        out["verdict"] = "undecided: one training seed"
    else:
        same_side = out["excludes_zero"] and excludes_zero(out["t_ci"]) and (ci[1] < 0) == (out["t_ci"][1] < 0)
        out["verdict"] = ("not distinguishable" if not same_side else "first ranks better" if ci[0] > 0
                          else "val ppl ranks better")
    return out
