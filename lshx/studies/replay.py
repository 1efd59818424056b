"""Searches replayed on a table (lshx.studies.table): the real search engine (lshx.search.engine.Search:
its schedule, distances, elimination and HPO) with an executor that reads each candidate's
evaluations from the table instead of training it. A replay costs milliseconds, so methods
can be compared over thousands of seeds instead of one.

What a replay cannot see: a search whose final epochs P differ from the table's (the DST
schedule depends on P), and training noise beyond the table's seeds; each replayed candidate
draws one of its configuration's training seeds.
"""
from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from lshx.errors import ConfigError
from lshx.search import jobs as J
from lshx.search.executors import Executor
from lshx.search.hpo import GridProposer, HyperoptProposer, Proposer
from lshx.search.config import SearchConfig
from lshx.search.engine import Search
from lshx.search.schedule import distances, elimination_epochs, round_seed
from lshx.search.rundb import MemoryRunDB
from lshx.search.space import config_hash
from lshx.studies import replay_stats as stats
from lshx.studies.replay_cache import ReplayCache
from lshx.studies.table import Table, is_grid_table


@dataclass(frozen=True)
class Method:
    """One way of searching: strategy lsh (a distance, on which spectrum, top-k exponents),
    lsh with the loss as distance, full training, or a random pick of an initial config."""
    name: str
    strategy: str = "lsh"  # lsh | full | random
    distance: str = "pca2"
    spectrum: str = "h"  # h | hc | h-orth (what the table recorded)
    top_k: Optional[int] = None  # the k largest exponents only


def default_methods(table: Table) -> List[Method]:
    n_exp = _spectrum_length(table)
    k = max(2, n_exp // 8) if n_exp else None
    have = _extra_labels(table)
    out = [Method("lsh-pca2"), Method("lsh-raw", distance="raw"), Method("lsh-pca2-pair", distance="pca2-pair")]
    if k:
        out += [Method(f"lsh-pca2-top{k}", top_k=k), Method(f"lsh-raw-top{k}", distance="raw", top_k=k)]
    for label in ("hc", "h-orth"):
        if label in have:
            out += [Method(f"lsh-pca2-{label}", spectrum=label), Method(f"lsh-raw-{label}", distance="raw",
                                                                         spectrum=label)]
    out += [Method("loss", distance="loss"), Method("full", strategy="full"), Method("random", strategy="random")]
    return out


def _spectrum_length(table: Table) -> int:
    for ev in table.evals[0][0].values():
        if ev.get("spectrum"):
            return len(ev["spectrum"])
    return 0


def _extra_labels(table: Table) -> set:
    return {k for ev in table.evals[0][0].values() for k in (ev.get("extra") or {})}


class TableExecutor(Executor):
    """Answers a search's jobs from a table: J.advance gets the evaluations up to the target
    epoch, of the training seed drawn for that configuration; nothing is trained."""

    threads_per_job = None

    def __init__(self, table: Table, key_to_index: Dict[str, int], draw: Sequence[int], method: Method) -> None:
        self.table, self.keys, self.draw, self.method = table, key_to_index, draw, method

    def _spectrum(self, ev: dict) -> Optional[list]:
        spec = ev.get("spectrum") if self.method.spectrum == "h" else (ev.get("extra") or {}).get(self.method.spectrum)
        if spec is None:
            return None
        return spec[: self.method.top_k] if self.method.top_k else spec

    def _prepared(self, t: int, i: int) -> List[dict]:
        """Every evaluation of config i under training seed t with this method's spectrum, up to
        the first divergence: built once per table (a replay asks for them thousands of times)."""
        key = ("evals", t, i, self.method.spectrum, self.method.top_k)
        if key not in self.table.cache:
            out = []
            for _, ev in sorted(self.table.evals[t][i].items()):
                spec = self._spectrum(ev)
                bad = spec is not None and not all(math.isfinite(v) for v in spec)
                out.append({**ev, "spectrum": spec, "diverged": ev.get("diverged") or bad})
                if out[-1]["diverged"]:
                    break
            self.table.cache[key] = out
        return self.table.cache[key]

    def evals(self, i: int, target: int) -> List[dict]:
        """The drawn seed's evaluations up to `target`, with this method's spectrum; a
        non-finite one is a divergence for this method (as a live search marks it). Copies: the
        prepared ones serve every replay of the table."""
        return [dict(ev) for ev in self._prepared(self.draw[i], i) if ev["epoch"] <= target]

    def map(self, fn, jobs) -> Iterator:
        for job in jobs:
            if fn is not J.advance:
                raise ConfigError(f"a replay answers training jobs only, not {fn.__name__}")
            i = self.keys[job["key"]]
            yield {"key": job["key"], "evals": self.evals(i, job["target"]), "trained": 0, "dir": job["dir"]}


class ReplaySearch(Search):
    """Search whose final test perplexities come from the table."""

    def __init__(self, *args, table: Table, key_to_index: Dict[str, int], draw: Sequence[int], **kw) -> None:
        super().__init__(*args, **kw)
        self.table, self.keys, self.draw = table, key_to_index, draw

    def test_perplexities(self, cands: List[dict]) -> List[float]:
        return [self.table.test[self.draw[self.keys[c["eval_key"]]]][self.keys[c["eval_key"]]] for c in cands]


def _proposer(table: Table, hpo: str) -> Proposer:
    """The HPO method a live search on the table's pool would use, memoized (one per table)."""
    if ("proposer", hpo) not in table.cache:
        pool = [c for c in table.configs if c is not None]
        if hpo == "grid":  # the task's grid in its own order, so that seed s replays `--hpo grid --seed s`
            inner = GridProposer(table.task) if is_grid_table(table) else GridProposer(table.task, points=pool)
        elif hpo == "tpe":
            inner = HyperoptProposer("tpe", configs=pool)
        else:
            raise ConfigError(f"replay hpo {hpo!r}: allowed grid, tpe")
        table.cache[("proposer", hpo)] = MemoProposer(inner)
    return table.cache[("proposer", hpo)]


class MemoProposer(Proposer):
    """A proposer whose answers are remembered: a proposal is a pure function of the history
    (configs and distances), n, the excluded hashes and the round seed, and replays ask the
    same questions again and again (every method of a seed starts from the same initial
    configs; settings that differ only in ei share their first round). Like a live search,
    a replay sees the inner proposer's answer exactly."""

    def __init__(self, inner: Proposer) -> None:
        self.inner = inner
        self.memo: Dict[tuple, Tuple[List[dict], Optional[int]]] = {}
        self.from_model: Optional[int] = None  # the inner proposer's, for the last answer given

    def propose(self, history, n, exclude, round_seed):
        key = (tuple((config_hash(c), d) for c, d in history), n, frozenset(exclude), round_seed)
        if key not in self.memo:
            out = self.inner.propose(history, n, exclude, round_seed)
            self.memo[key] = (out, getattr(self.inner, "from_model", None))
        out, self.from_model = self.memo[key]
        return [dict(c) for c in out]

    def __getattr__(self, name):  # e.g. GridProposer.points, which a search reads
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def replay_one(table: Table, method: Method, hpo: str, n: int, e0: int, ei: int, seed: int,
               train_seed: Optional[int] = None) -> dict:
    """One search on the table: its pick (config index), the pick's test ppl, the epochs spent.
    Each configuration's training seed is drawn (the same draw for every method of this search
    seed), or is the table's seed `train_seed` for all (the per-seed replays)."""
    opts = table.options
    rng = np.random.default_rng([seed, 7])
    draw = rng.integers(0, len(table.evals), len(table.configs)).tolist()  # a training seed per config
    if train_seed is not None:
        draw = [train_seed] * len(table.configs)
    if method.strategy == "random":  # one of the initial configs the searches of this seed start from,
        initial = _proposer(table, hpo).propose([], n, set(), round_seed(seed, 0))  # trained to P
        pick = table.index(initial[int(rng.integers(0, len(initial)))])
        return {"pick": pick, "test_ppl": table.test[draw[pick]][pick], "train_epochs": table.final_epochs,
                **_best_under(table, draw)}
    if method.strategy == "full":  # no schedule: e0 and ei (0 in settings()) play no part
        e0, ei = max(e0, 1), max(ei, 1)
    cfg = SearchConfig(task=table.task, preset=opts["preset"], hpo=hpo, n=n, e0=e0, ei=ei,
                       final_epochs=table.final_epochs, strategy="full" if method.strategy == "full" else "lsh",
                       distance=method.distance, density=opts.get("density"), seed=seed, data=opts.get("data"),
                       max_batches=opts.get("max_batches"), ls_samples=opts["ls_samples"],
                       ls_steps=opts["ls_steps"], ls_warmup=opts["ls_warmup"], ls_k=opts.get("ls_k"),
                       train_seed=opts.get("train_seed") or 0, ls_extra=opts.get("ls_extra"))
    cfg.validate()  # e.g. a schedule that ends after the table's P: one clear error
    db = MemoryRunDB()
    try:
        db.create_search("replay", cfg.task, cfg.to_dict())
        # the eval keys depend on the training and LS settings only, the same for every replay
        keys = table.cache.setdefault(("keys", cfg.distance == "loss"), {})
        search = ReplaySearch(cfg, db, None, "replay", True, _proposer(table, hpo), table=table,
                              key_to_index={}, draw=draw, key_cache=keys)
        search.keys.update({search.keyed(c)[1]: i for i, c in enumerate(table.configs)})
        search.ex = TableExecutor(table, search.keys, draw, method)
        res = search.run()
    finally:
        db.close()
    pick = table.index(res["best"]["config"])
    return {"pick": pick, "test_ppl": res["best"]["test_ppl"], "train_epochs": res["train_epochs"],
            "rounds": res["rounds"], **_best_under(table, draw)}


def _best_under(table: Table, draw: Sequence[int]) -> dict:
    """The best configuration when each configuration's training seed is the drawn one."""
    tests = [table.test[draw[i]][i] for i in range(1, len(table.configs))]
    b = int(np.argmin(tests)) + 1
    return {"best": b, "best_test_ppl": tests[b - 1]}


def settings(methods: Sequence[Method], hpos: Sequence[str], schedules: Sequence[Tuple[int, int]],
             final_epochs: int, n: int) -> List[Tuple[Method, str, int, int]]:
    """Every (method, hpo, e0, ei) that fits in the table's P (full and random take no e0/ei)."""
    out = []
    for m in methods:
        for h in hpos:
            if m.strategy in ("full", "random"):
                out.append((m, h, 0, 0))
                continue
            for e0, ei in schedules:
                if elimination_epochs(n, e0, ei)[-1] <= final_epochs:
                    out.append((m, h, e0, ei))
    return out


def _run_tasks(table: Table, tasks, seeds: int, workers: int, db_path, progress,
               cache: Optional[ReplayCache] = None) -> List[List[dict]]:
    """Each task (method, hpo, n, e0, ei, training seed or None) replayed for seeds
    0..seeds-1; workers > 1 spreads the tasks over spawned processes, each loading the table
    from db_path. With a cache, a task found there is not replayed again, and each task is
    stored there as soon as it finishes."""
    out: List[Optional[List[dict]]] = [cache.get(task, seeds) if cache else None for task in tasks]
    todo = [k for k, r in enumerate(out) if r is None]
    done = len(tasks) - len(todo)
    if progress and done:
        progress(done, len(tasks))

    def finished(k: int, rs: List[dict]) -> None:
        nonlocal done
        out[k] = rs
        if cache:
            cache.put(tasks[k], seeds, rs)
        done += 1
        if progress:
            progress(done, len(tasks))

    if workers <= 1 or not todo:
        for k in todo:
            finished(k, [_slim(replay_one(table, *tasks[k][:5], s, tasks[k][5])) for s in range(seeds)])
        return out
    if db_path is None:
        raise ConfigError("replay with workers needs the table's DB path")
    from lshx.search.executors import ProcessExecutor

    ex = ProcessExecutor(workers, _worker_init, (str(db_path), table.name, list(table.seeds)))
    try:
        jobs = [{"task": tasks[k], "seeds": seeds} for k in todo]
        for j, rs in ex.map_unordered(_worker_setting, jobs):
            finished(todo[j], rs)
    except BaseException:
        ex.close(abort=True)
        raise
    ex.close()
    return out


_WORKER_TABLE: Optional[Table] = None


def _worker_init(db_path: str, name: str, seeds: List[int]) -> None:
    global _WORKER_TABLE
    from lshx.studies.table import load_table

    _WORKER_TABLE = load_table(db_path, name, seeds)


def _worker_setting(job: dict) -> List[dict]:
    task = job["task"]
    return [_slim(replay_one(_WORKER_TABLE, *task[:5], s, task[5])) for s in range(job["seeds"])]


def _slim(r: dict) -> dict:
    return {k: r[k] for k in ("pick", "test_ppl", "train_epochs", "best", "best_test_ppl")}




def replay(table: Table, methods: Optional[Sequence[Method]] = None, hpos: Sequence[str] = ("grid", "tpe"),
           n: int = 8, e0s: Sequence[int] = (1, 2, 3, 4), eis: Sequence[int] = (1, 2), seeds: int = 1000,
           progress=None, workers: int = 1, db_path: Optional[str] = None, full_curve: bool = True,
           schedules: Optional[Sequence[Tuple[int, int]]] = None, cache: Optional[ReplayCache] = None) -> dict:
    """Replays every setting (each e0 with each ei, or exactly the (e0, ei) pairs of
    `schedules`) `seeds` times (search seeds 0..seeds-1, the same for every
    setting), each drawing one training seed per configuration, and with a table of S >= 2
    training seeds also `seeds` times on each training seed alone; then summarizes
    (lshx.studies.replay_stats): the table's training noise, per method and setting the regret
    with its intervals, LSH against the loss-based search setting by setting, and Spearman rho
    of every early signal with the final test ppl. With the full method and full_curve, also
    the anytime baseline (full training of the first k configurations, k = 1..all) and for each
    setting the epochs it needs for the same regret. workers > 1 spreads the settings over
    processes (each loads the table from db_path). With a cache (lshx.studies.replay_cache),
    the tasks an interrupted replay finished are read back instead of replayed."""
    methods = list(methods or default_methods(table))
    if n > len(table.configs) - 1:
        raise ConfigError(f"n = {n} is more than the table's {len(table.configs) - 1} configurations")
    S = len(table.evals)
    train_seeds = list(range(S)) if S >= 2 else []
    schedules = list(schedules) if schedules else [(e0, ei) for e0 in e0s for ei in eis]
    todo = settings(methods, hpos, schedules, table.final_epochs, n)
    skipped = [{"e0": e0, "ei": ei, "last_elimination": elimination_epochs(n, e0, ei)[-1]}
               for e0, ei in schedules if elimination_epochs(n, e0, ei)[-1] > table.final_epochs]
    if not todo or (skipped and len(skipped) == len(schedules) and all(m.strategy == "lsh" for m in methods)):
        raise ConfigError(f"no setting fits the table's {table.final_epochs} epochs: with n = {n} the last "
                          f"elimination of every e0/ei asked for comes later (choose a smaller n, e0 or ei)")
    # full training of the first k configurations of the seeded grid order, k = 1..all: the
    # anytime baseline (the paper's Fig. 3-right), in training epochs
    full = next((m for m in methods if m.strategy == "full"), None)
    curve_ks = list(range(1, len(table.configs))) if full is not None and full_curve else []
    keys = [(m, h, n, e0, ei) for m, h, e0, ei in todo] + [(full, "grid", k, 0, 0) for k in curve_ks]
    tasks = [(*key, t) for key in keys for t in [None] + train_seeds]
    results = iter(_run_tasks(table, tasks, seeds, workers, db_path, progress, cache))
    runs = {key: (next(results), [next(results) for _ in train_seeds]) for key in keys}
    exp, best = stats.expected_test(table), table.best()
    curve = []
    for k in curve_ks:
        mixed, per = runs[(full, "grid", k, 0, 0)]
        curve.append({"k": k, "train_epochs": k * table.final_epochs,
                      "regret_mean": float(np.mean(exp[[r["pick"] for r in mixed]] - exp[best])),
                      "regret_per_seed": [float(np.mean(exp[[r["pick"] for r in rs]] - exp[best])) for rs in per],
                      "p_best": float(np.mean([r["pick"] == best for r in mixed]))})
    out_methods = []
    for m, h, e0, ei in todo:
        mixed, per = runs[(m, h, n, e0, ei)]
        row = {"method": m.name, "hpo": h, "e0": e0 or None, "ei": ei or None,
               **stats.method_summary(table, mixed, per)}
        # the epochs full training (in the seeded grid order) spends to pick as well on average,
        # from the mixed replays and from each training seed's (their spread is the interval's)
        same = next((c for c in curve if c["regret_mean"] <= row["regret_mean"]), None)
        row["full_epochs_same_regret"] = same["train_epochs"] if same else None
        if curve and per:
            row["full_epochs_same_regret_per_seed"] = [
                next((c["train_epochs"] for c in curve if c["regret_per_seed"][t] <= reg), None)
                for t, reg in enumerate(row["regret_per_seed"])]
        out_methods.append(row)
    summary = table.summary()
    return {"table": table.name, "configs": len(table.configs) - 1, "table_seeds": S,
            "training_seeds": list(table.seeds),
            "best": {"config": table.configs[best], "test_ppl": table.mean_test(best)}, "n": n,
            "noise": stats.noise(table), "off_plateau": summary["off_plateau"], "curves": summary["rows"],
            "skipped_settings": skipped, "full_curve": curve, "methods": out_methods,
            "differences": _differences(table, todo, n, runs), "rho": signal_correlations(table, methods)}


def _differences(table: Table, todo, n: int, runs: dict) -> List[dict]:
    """Every scheduled search against the loss-based search on the same schedule (LSH methods),
    and against full training and a random pick: a - b in regret with its intervals."""
    out = []
    scheduled = [(m, h, e0, ei) for m, h, e0, ei in todo if e0]
    by_name = {(m.name, h, e0, ei): (m, h, e0, ei) for m, h, e0, ei in todo}
    for m, h, e0, ei in scheduled:
        others = [("loss", h, e0, ei)] if m.distance != "loss" else []
        others += [("full", h, 0, 0), ("random", h, 0, 0)]
        for name in others:
            if name not in by_name:
                continue
            ob = by_name[name]
            d = stats.difference(table, runs[(m, h, n, e0, ei)], runs[(ob[0], ob[1], n, ob[2], ob[3])])
            out.append({"a": m.name, "b": name[0], "hpo": h, "e0": e0, "ei": ei, **d})
    return out


# the keys of a rho row that are not a signal's rho
NOT_SIGNALS = ("epoch", "minus_val_ppl", "held_out", "minus_val_ppl_held_out")


def signal_correlations(table: Table, methods: Sequence[Method]) -> dict:
    """Spearman rho of each early signal at each epoch with the final test ppl of the same run,
    per training seed and averaged over seeds (a bootstrap over configurations), and for each
    LS signal the paired difference rho(LS) - rho(val ppl). LS distances at epoch e are those a
    search with every configuration alive computes then: pca2 is one PCA fitted on the dense
    and every configuration's spectra of epochs 1..e. With two seeds or more, the same against
    the other seeds' mean test ppl (held_out, minus_val_ppl_held_out)."""
    S, ids = len(table.evals), list(range(1, len(table.configs)))
    y = np.array([stats.last_ranked(table.test[t][i] for i in ids) for t in range(S)])
    # the val and test ppl of one run share that run's noise, which favours the val ppl against
    # the same run's test ppl; against the other seeds' mean test ppl it does not
    y_held = np.array([stats.held_out_test(table, t)[ids] for t in range(S)]) if S >= 2 else None
    signals = [m for m in methods if m.strategy == "lsh" and m.distance != "loss"]
    rows = []
    for e in range(1, table.final_epochs + 1):
        x: Dict[str, np.ndarray] = {}
        for m in signals:
            per_seed = []
            for t in range(S):
                ex = TableExecutor(table, {}, [t] * len(table.configs), m)
                dense = {ev["epoch"]: ev for ev in ex.evals(0, e)}
                if e not in dense or dense[e].get("spectrum") is None:
                    break
                cands = {i: {ev["epoch"]: ev for ev in ex.evals(i, e)} for i in ids}
                d = distances(m.distance, dense, cands, e, ids)
                per_seed.append(stats.last_ranked(d[i] for i in ids))
            if len(per_seed) == S:
                x[m.name] = np.array(per_seed)
        for key, name in (("val_ppl", "val_ppl"), ("train_loss", "train_loss")):
            x[name] = np.array([stats.last_ranked(table.evals[t][i].get(e, {}).get(key) for i in ids)
                                for t in range(S)])
        row: dict = {"epoch": e}
        for name, v in x.items():
            row[name] = stats.seed_averaged_rho(v, y, seed=e)
            idx = row[name].pop("idx")  # (the same configuration resamples for every signal of this epoch)
        row["minus_val_ppl"] = {m.name: stats.paired_rho_difference(x[m.name], x["val_ppl"], y, idx)
                                for m in signals if m.name in x}
        if y_held is not None:  # each seed's signal against the other seeds' mean test ppl
            row["held_out"] = {name: {k: v for k, v in stats.seed_averaged_rho(x[name], y_held, seed=e).items()
                                      if k != "idx"} for name in x}
            row["minus_val_ppl_held_out"] = {m.name: stats.paired_rho_difference(x[m.name], x["val_ppl"], y_held, idx)
                                             for m in signals if m.name in x}
        rows.append(row)
    # what was examined: each (LS signal, epoch) difference with the val ppl has two intervals
    # (over configurations, across seeds); one of zero width (every signal ties, e.g. at epoch
    # 1 where runs of one init are identical) tests nothing and is not counted
    diffs = [d for r in rows for d in r["minus_val_ppl"].values() if d["hi"] > d["lo"]]  # (the held-out ones
    # are the same comparisons judged otherwise, reported beside them and not counted again)
    examined = len(diffs)
    per_diff = 2 if any(d["t_ci"] is not None for d in diffs) else 1
    rhos = sum(1 for r in rows for k, v in r.items() if k not in NOT_SIGNALS and v["hi"] > v["lo"])
    return {"epochs": rows, "pairs_examined": examined, "intervals_examined": examined * per_diff,
            "rho_intervals": rhos,
            "note": f"{examined} (LS signal, epoch) differences with the val ppl were examined "
                    f"({examined * per_diff} intervals): if no difference were real, about "
                    f"{0.05 * examined:.1f} of the {examined} intervals over configurations would exclude 0 by "
                    f"chance alone, so a single epoch's lead is read as what it is ({rhos} rho intervals are "
                    f"shown beside them; rho itself is not expected to be 0)"}
