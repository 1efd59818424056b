"""Tables: every configuration of a pool trained once (per training seed), with its per-epoch
validation perplexity, training loss and spectra and its final test perplexity, so that
searches can be replayed on it (lshx.studies.replay) instead of trained (tabular HPO benchmarks).

A table is one 'full'-strategy search per training seed, named NAME-t0, NAME-t1, ... in an
ordinary run DB: it resumes like any search, and its test perplexities (of each
configuration's best-validation checkpoint) go into the DB's tests table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import json
import math
import re
import sqlite3
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from lshx.errors import ConfigError
from lshx.paths import writable_file
from lshx.progress import log
from lshx.search.executors import Executor
from lshx.search.config import SearchConfig
from lshx.search.engine import Search, open_search
from lshx.search.rundb import RunDB
from lshx.search.space import POOLS, config_hash, grid, normalize

# Below this validation ppl a PTB-16% model has left the unigram plateau (600-690; issue 14).
PLATEAU_PPL = 450.0


STATES = ("h", "both")


def extra_spectra(task: str, state: str) -> Optional[List[str]]:
    """The spectra a table records beside the h state's: none for 'h'; for 'both' the authors'
    aligned warm-up and, where the model has a cell state (ptb-lstm), the full (h, c) state's
    (the RHN has a single state vector)."""
    if state not in STATES:
        raise ConfigError(f"unknown state {state!r}; allowed: {', '.join(STATES)}")
    if state == "h":
        return None
    return ["hc", "h-orth"] if task == "ptb-lstm" else ["h-orth"]


def table_configs(task: str, space: str, n: Optional[int], preset: str, state: str = "h",
                  **over) -> SearchConfig:
    """The SearchConfig of a table: gs24 is the paper's grid (all 24 points), random n seeded
    draws from TPE's space; both with the full strategy (every configuration trained to P), on
    whole epochs unless max_batches is given (not the search preset's cap), with the spectra
    of `state` (extra_spectra)."""
    if "ls_extra" in over:
        raise ConfigError("a table's spectra are chosen by state ('h' or 'both'), not by ls_extra")
    over["ls_extra"] = extra_spectra(task, state)
    if space not in POOLS:
        raise ConfigError(f"unknown space {space!r}; allowed: {', '.join(POOLS)}")
    if space == "gs24":
        if n not in (None, 24):
            raise ConfigError("--space gs24 is the whole grid: leave --n out (it is 24)")
        hpo, n = "grid", 24
    else:
        if not n or n < 2:
            raise ConfigError("--space random needs --n N (N >= 2)")
        hpo = "random"
    max_batches = over.pop("max_batches", None)
    cfg = SearchConfig.from_preset(task, preset, hpo=hpo, strategy="full", distance="pca2", n=n, e0=1, **over)
    cfg.max_batches = max_batches
    return cfg


def train_table(cfg: SearchConfig, db_path: str | Path, executor: Executor, name: str, seeds: int = 1,
                resume: bool = False, quiet: bool = False, wait: bool = False,
                lease_stale_s: Optional[float] = None, only_seed: Optional[int] = None) -> dict:
    """Trains the pool once per training seed (0 .. seeds-1, or only seed `only_seed`: one seed
    on another machine) and stores every test perplexity, each seed's search and its test
    perplexities under that search's lease (one process at a time; another is refused, or
    waits with wait=True). Returns the table's summary (the trained seed's alone with only_seed)."""
    if seeds < 1:
        raise ConfigError("--seeds must be >= 1")
    if only_seed is not None and (isinstance(only_seed, bool) or not isinstance(only_seed, int) or only_seed < 0):
        raise ConfigError(f"--only-seed must be an integer >= 0, got {only_seed!r}")
    for t in ([only_seed] if only_seed is not None else range(seeds)):
        tcfg = SearchConfig(**{**cfg.to_dict(), "train_seed": t})
        tname = f"{name}-t{t}"
        log(f"table {name}: training seed {t} ({tname})", quiet)
        with open_search(tcfg, db_path, tname, resume, quiet, wait, lease_stale_s, read_finished=False) as \
                (db, lease, done):
            search = Search(tcfg, db, executor, tname, quiet, lease=lease)
            if done is None:
                search.run()
            search.quiet = True
            cands = db.candidates(tname)
            have = db.tests(tcfg.seed)
            todo = [c for c in cands if c["eval_key"] not in have]
            tests = search.test_perplexities(todo) if todo else []
            search.check_lease()
            for c, ppl in zip(todo, tests):
                db.put_test(c["eval_key"], tcfg.seed, ppl)
    if only_seed is not None:
        return {"name": name, "trained_seed": only_seed, "search": f"{name}-t{only_seed}"}
    return load_table(db_path, name).summary()


@dataclass
class Table:
    """A table read back: configs[i] (None for the dense model, index 0), and per training
    seed t: evals[t][i] = {epoch: eval} and test[t][i] = final test ppl."""
    name: str
    task: str
    options: dict
    configs: List[Optional[dict]]
    evals: List[List[Dict[int, dict]]]
    test: List[List[float]]
    seeds: List[int] = field(default_factory=list)
    cache: dict = field(default_factory=dict, repr=False)  # the replays' eval keys, proposers, prepared evals

    @property
    def final_epochs(self) -> int:
        return int(self.options["final_epochs"])

    def index(self, config: Optional[dict]) -> int:
        if config is None:
            return 0
        h = config_hash(config)
        for i, c in enumerate(self.configs):
            if c is not None and config_hash(c) == h:
                return i
        raise KeyError(f"configuration {normalize(config)} is not in table {self.name!r}")

    def worst_finite_test(self) -> float:
        return max(v for t in self.test for v in t if finite(v))

    def mean_test(self, i: int) -> float:
        """Configuration i's test ppl averaged over the seeds, a diverged seed (+inf, NaN) counted
        as the table's worst finite test ppl (as the replays penalize a diverged pick)."""
        worst = self.worst_finite_test()
        vals = [v if finite(v) else worst for v in (t[i] for t in self.test)]
        return sum(vals) / len(vals)

    def best(self) -> int:
        """The configuration (not the dense model) best in expectation: the lowest mean_test."""
        return min(range(1, len(self.configs)), key=lambda i: (self.mean_test(i), i))

    def off_plateau(self, threshold: float = PLATEAU_PPL) -> List[dict]:
        """Per epoch, how many sparse (configuration, training seed) runs have a validation ppl
        below `threshold`, i.e. have left the unigram plateau (val ppl 600-690 on PTB-16%):
        before that, early signals can only tell which run leaves it first."""
        out = []
        for e in range(1, self.final_epochs + 1):
            vals = [seed[i].get(e, {}).get("val_ppl") for seed in self.evals for i in range(1, len(self.configs))]
            off = sum(finite(v) and v < threshold for v in vals)
            dense = [seed[0][e]["val_ppl"] for seed in self.evals if e in seed[0]]
            out.append({"epoch": e, "off": off, "runs": len(vals), "threshold": threshold,
                        "median_val_ppl": _median([v if finite(v) else math.inf for v in vals]),
                        "dense_val_ppl": sum(dense) / len(dense) if dense else None})
        return out

    def summary(self) -> dict:
        P = self.final_epochs
        rows = []
        for i, c in enumerate(self.configs):
            curves = [[ev[e]["val_ppl"] if e in ev else None for e in range(1, P + 1)] for ev in
                      (seed[i] for seed in self.evals)]
            rows.append({"config": c or "dense", "val_ppl": curves, "test_ppl": [t[i] for t in self.test]})
        return {"name": self.name, "task": self.task, "configs": len(self.configs) - 1, "seeds": len(self.evals),
                "final_epochs": P, "best": self.configs[self.best()], "best_test_ppl": self.mean_test(self.best()),
                "off_plateau": self.off_plateau(), "rows": rows}


TABLE_RUN = re.compile(r"^(?P<name>.+)-t(?P<seed>\d+)$")


def table_names(db: RunDB) -> Dict[str, List[str]]:
    """The tables of a run DB: name -> its searches NAME-t0, NAME-t1, ... (full-strategy
    searches named so; an ordinary search is not a table, whatever its name)."""
    out: Dict[str, List[str]] = {}
    for n in db.search_names():
        m = TABLE_RUN.match(n)
        if m and (db.get_search(n) or {}).get("args", {}).get("strategy") == "full":
            out.setdefault(m["name"], []).append(n)
    return {k: sorted(v, key=lambda n: int(TABLE_RUN.match(n)["seed"])) for k, v in out.items()}


def load_table(db_path: str | Path, name: str, seeds: Optional[Sequence[int]] = None) -> Table:
    """Reads table NAME (its searches NAME-t0, NAME-t1, ...) from a run DB, read-only, and
    checks that it is whole before anything uses it; one clear error (ConfigError) naming what
    is missing or damaged otherwise (lshx.studies.table_check). seeds: only these training
    seeds (the finished ones of a table still in training); default every seed, each finished."""
    from lshx.studies.table_check import check_table

    if not Path(db_path).exists():
        raise ConfigError(f"no run DB at {db_path}")
    db = RunDB(db_path, readonly=True)
    try:
        try:
            table = _read_table(db, db_path, name, seeds)
        except (sqlite3.DatabaseError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"table {name!r} in {db_path} is damaged and cannot be read "
                              f"({type(exc).__name__}: {exc})") from None
    finally:
        db.close()
    check_table(table)
    return table


def _with_defaults(args: dict) -> dict:
    """A search's stored options with the fields added since an older lshx wrote it at their defaults."""
    return SearchConfig.from_stored(args).to_dict()


def _config_mismatch(ours: List[Optional[dict]], theirs: List[Optional[dict]], first: str) -> str:
    """Which configurations one seed lacks or adds against the first (at most three named)."""
    from lshx.search.space import describe

    h_ours = {config_hash(c): c for c in ours if c}
    h_theirs = {config_hash(c): c for c in theirs if c}

    def named(keys, where):
        cs = [describe(where[k]) for k in sorted(keys)]
        return ", ".join(cs[:3]) + (f" and {len(cs) - 3} more" if len(cs) > 3 else "")

    lacks, adds = set(h_ours) - set(h_theirs), set(h_theirs) - set(h_ours)
    parts = ([f"lacks {len(lacks)} of {first}'s: {named(lacks, h_ours)}"] if lacks else []) + \
            ([f"adds {len(adds)}: {named(adds, h_theirs)}"] if adds else [])
    return "; ".join(parts) or "the same configurations in another candidate order"


def _read_table(db: RunDB, db_path, name: str, only: Optional[Sequence[int]] = None) -> Table:
    tables = table_names(db)
    if name not in tables:
        raise ConfigError(f"no table {name!r} in {db_path}" +
                          (f"; tables: {', '.join(sorted(tables))}" if tables else "; it holds no table"))
    names = tables[name]
    have = {int(TABLE_RUN.match(t)["seed"]): t for t in names}
    finished = [t for t, n in have.items() if (db.get_search(n) or {}).get("status") == "done"]
    if only is not None:
        if not only or len(set(only)) != len(only):
            raise ConfigError(f"table seeds {list(only)}: name each training seed once")
        absent = [t for t in only if t not in have]
        if absent:
            raise ConfigError(f"table {name!r} has no training seed {', '.join(map(str, absent))}; it has "
                              f"{', '.join(map(str, sorted(have)))}")
        names = [have[t] for t in sorted(only)]
    from lshx.studies.table_check import check_same_options

    configs: Optional[List[Optional[dict]]] = None
    evals, tests, seeds, options, task = [], [], [], {}, ""
    for tname in names:
        s = db.get_search(tname)
        if s["status"] != "done":
            alone = (f", or replay its finished seeds alone (--table-seeds {','.join(map(str, sorted(finished)))})"
                     if finished and only is None else "")
            raise ConfigError(f"table {name!r}: {tname} is not finished (resume it with lshx study table ... "
                              f"--name {name} --resume{alone})")
        if options:
            check_same_options(name, _with_defaults(options), _with_defaults(s["args"]), tname)
        options, task = s["args"], s["task"]
        cands = sorted(db.candidates(tname), key=lambda c: c["cid"])
        if not cands or cands[0]["origin"] != "dense":
            raise ConfigError(f"table {name!r}: {tname} has no dense model (candidate 0)")
        cfgs = [None if c["origin"] == "dense" else normalize(c["config"]) for c in cands]
        if configs is None:
            configs = cfgs
        elif [config_hash(c) if c else "dense" for c in cfgs] != [config_hash(c) if c else "dense"
                                                                  for c in configs]:
            raise ConfigError(f"table {name!r}: {tname} holds other configurations than {names[0]} ("
                              + _config_mismatch(configs, cfgs, names[0]) + ")")
        test = db.tests(options["seed"])
        missing = [c["cid"] for c in cands if c["eval_key"] not in test or test[c["eval_key"]] is None]
        if missing:
            raise ConfigError(f"table {name!r}: {tname} has no test perplexity for candidates {missing}")
        evals.append([db.evals(c["eval_key"], options["seed"]) for c in cands])
        tests.append([float(test[c["eval_key"]]) for c in cands])
        seeds.append(int(TABLE_RUN.match(tname)["seed"]))
    return Table(name, task, options, configs, evals, tests, seeds)


def snapshot(db_path: str | Path, out_path: str | Path) -> dict:
    """A self-contained copy of a run DB, safe to commit or carry to another machine while the
    run goes on: one file (VACUUM INTO, then the rollback journal, so that reading it writes
    nothing beside it), without leases (the process that holds one stays the owner of the
    original only). Checkpoints stay behind: a table resumed from the copy skips every
    finished evaluation and test, and retrains what was in flight. Written to a temporary file
    and renamed, so `out_path` is the old copy or the new one, never half of one."""
    import os
    import sqlite3

    src, out = Path(db_path), Path(out_path)
    if not src.is_file():
        raise ConfigError(f"no run DB at {src}")
    writable_file(out, "the snapshot")
    if out.exists() and out.resolve() == src.resolve():
        raise ConfigError(f"the snapshot of {src} would overwrite it: give another path")
    RunDB(src, readonly=True).close()  # refuses what is not a run DB, in one line
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        con = sqlite3.connect(f"file:{src.resolve()}?mode=ro", uri=True)
        try:
            con.execute("VACUUM INTO ?", (str(tmp),))
        finally:
            con.close()
        con = sqlite3.connect(str(tmp), isolation_level=None)
        try:
            con.execute("DELETE FROM leases")
            con.execute("PRAGMA journal_mode=DELETE")
            con.execute("VACUUM")
            searches = con.execute("SELECT name, status FROM searches ORDER BY name").fetchall()
            evals = con.execute("SELECT COUNT(*) FROM evals").fetchone()[0]
            tests = con.execute("SELECT COUNT(*) FROM tests").fetchone()[0]
        finally:
            con.close()
        os.replace(tmp, out)
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot snapshot {src} into {out}: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return {"db": str(src), "snapshot": str(out), "bytes": out.stat().st_size, "evals": evals, "tests": tests,
            "searches": {n: st for n, st in searches}}


def is_grid_table(table: Table) -> bool:
    """Whether the table's configurations are exactly the task's 24-point grid."""
    want = {config_hash(c) for c in grid(table.task)}
    return {config_hash(c) for c in table.configs if c is not None} == want


def finite(x: Optional[float]) -> bool:
    return x is not None and math.isfinite(x)


def _median(xs: List[float]) -> Optional[float]:
    xs = sorted(xs)
    if not xs:
        return None
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2
