"""The LSH search engine (paper section 3): trains candidates through an executor, eliminates
by the distances of lshx.search.schedule, proposes new candidates with the HPO method and
picks the best of the final ones; every evaluation and decision lives in the run DB.

Resuming replays the schedule: every decision is recomputed from stored evaluations
(deterministic) or read back from the DB, and training jobs skip finished epochs.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from lshx.errors import CheckpointError, ConfigError, LshxError
from lshx.lyapunov import LSConfig
from lshx.lyapunov.config import ADDED_DEFAULTS
from lshx.paths import writable_file
from lshx.progress import Progress, log
from lshx.search import jobs as J
from lshx.search.config import LS_EXTRA, SearchConfig
from lshx.search.executors import Executor, run_all
from lshx.search.hpo import Proposer, make_proposer
from lshx.search.lease import Lease, default_stale_s
from lshx.search.rundb import RunDB
from lshx.search.schedule import distances, eliminate, round_seed
from lshx.search.space import config_hash, describe, normalize
from lshx.train import TrainConfig


class Search:
    DENSE = 0  # candidate id of the dense reference

    def __init__(self, cfg: SearchConfig, db: RunDB, executor: Executor, name: str, quiet: bool = False,
                 proposer: Optional[Proposer] = None, lease: Optional[Lease] = None,
                 key_cache: Optional[Dict[str, Tuple[dict, str]]] = None) -> None:
        """proposer: instead of cfg.hpo's (a replay restricts it to a table's configurations).
        lease: the search's lease in db, checked before each write (run_search takes it).
        key_cache: keyed()'s answers, shared by searches of the same training and LS settings
        (a replay runs thousands)."""
        self.cfg, self.db, self.ex, self.name, self.quiet = cfg, db, executor, name, quiet
        self.lease = lease
        self.ckpt_root = db.path.with_suffix("").parent / (db.path.stem + "-runs")
        self.proposer = proposer or make_proposer(cfg.hpo, cfg.task)
        self._key_cache: Dict[str, Tuple[dict, str]] = {} if key_cache is None else key_cache
        self._paths: Dict[str, str] = {}
        self._ls: Optional[dict] = None
        self.train_epochs_used: Dict[int, int] = {}

    # ---------------------------------------------------------------- candidates
    def train_config(self, config: Optional[dict]) -> TrainConfig:
        c = self.cfg
        dst = {} if config is None else {k: v for k, v in normalize(config).items()}
        if config is None:
            dst["density"] = 1.0
        elif c.density is not None:
            dst["density"] = c.density
        seed = c.seed if c.train_seed is None else c.train_seed
        return TrainConfig.from_preset(c.task, c.preset, data=c.data, epochs=c.final_epochs, seed=seed,
                                       max_batches=c.max_batches, device=c.device, dst=dst)

    def ls_config(self) -> Optional[dict]:
        """Spectra are computed unless the distance is the loss (the full strategy keeps them
        too, for correlation studies)."""
        if self.cfg.distance == "loss":
            return None
        if self._ls is None:
            c = self.cfg
            self._ls = asdict(LSConfig(samples=c.ls_samples, steps=c.ls_steps, warmup=c.ls_warmup, k=c.ls_k))
        return dict(self._ls)

    def ls_extra(self) -> Dict[str, dict]:
        return {k: LS_EXTRA[k] for k in (self.cfg.ls_extra or [])} if self.ls_config() else {}

    def _eval_key(self, tcfg: TrainConfig) -> str:
        ls = self.ls_config()
        if ls is not None:  # (fields added since, at the value that reproduces the old results: left out)
            ls = {k: v for k, v in ls.items() if not (k in ADDED_DEFAULTS and v == ADDED_DEFAULTS[k])}
        what = {"train": tcfg.to_dict(), "ls": ls}
        if self.ls_extra():  # (left out when empty: the keys of DBs written before stay valid)
            what["ls_extra"] = self.ls_extra()
        if self.cfg.threads != 1:  # (left out at the default, likewise): results depend on it
            what["threads"] = self.cfg.threads
        blob = json.dumps(what, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:20]

    def keyed(self, config: Optional[dict]) -> Tuple[dict, str]:
        """(TrainConfig dict, eval key) of a candidate config (None: the dense model): the key
        hashes everything its evaluations depend on. Computed once per config."""
        h = config_hash(config) if config else "dense"
        if h not in self._key_cache:
            tcfg = self.train_config(config)
            self._key_cache[h] = (tcfg.to_dict(), self._eval_key(tcfg))
        return self._key_cache[h]

    def add(self, cid: int, config: Optional[dict], origin: str, round_: int) -> None:
        key = self.keyed(config)[1]
        self.db.add_candidate(self.name, cid, config or {"dense": True}, config_hash(config) if config else "dense",
                              key, origin, round_, str(self.ckpt_root / key))

    def job(self, cand: dict, target: int) -> dict:
        """A job runs wherever the executor puts it (another process, another Ray node): its
        paths are absolute, as this process resolves them (the default data folder too), and
        its thread count is the search's."""
        from lshx.data import default_data_dir

        cfg = None if cand["origin"] == "dense" else cand["config"]
        train = dict(self.keyed(cfg)[0])
        train["data"] = self._absolute(train["data"] or default_data_dir())
        return {"key": cand["eval_key"], "train": train, "ls": self.ls_config(),
                "ls_extra": self.ls_extra(), "target": target, "dir": self._absolute(cand["ckpt_dir"]),
                "threads": self.cfg.threads}

    def _absolute(self, path) -> str:
        key = str(path)
        if key not in self._paths:  # (a replay makes thousands of jobs)
            self._paths[key] = str(Path(path).resolve())
        return self._paths[key]

    def test_perplexities(self, cands: List[dict]) -> List[float]:
        """Test perplexity of each candidate's best-validation checkpoint; +inf for one that
        diverged before any validation (it never wrote one). Trained runs are shared across a
        DB's searches, so a checkpoint may predate this process: a missing one (the DB was
        moved without its runs folder) is said in one line."""
        out: Dict[int, float] = {}
        todo = []
        stored = self.db.tests(self.cfg.seed)  # (the full strategy's jobs store them as they finish)
        for i, cand in enumerate(cands):
            ck = Path(cand["ckpt_dir"]) / "best.pt"
            if cand["eval_key"] in stored:
                out[i] = stored[cand["eval_key"]]
            elif ck.exists():
                todo.append(i)
            elif any(e["diverged"] for e in self.evals(cand).values()):
                out[i] = math.inf
            else:
                raise CheckpointError(f"the run DB {self.db.path} records candidate {cand['cid']} as trained, but "
                                      f"its checkpoint {ck} is missing: keep {self.ckpt_root.name}/ next to the "
                                      f"DB, or start from a new DB")
        out.update(zip(todo, run_all(self.ex, J.test_perplexity, [self.job(cands[i], 0) for i in todo])))
        return [out[i] for i in range(len(cands))]

    def advance(self, cids: List[int], target: int, what: str) -> None:
        """Brings candidates to `target` epochs (skipping what is done) and stores their evals."""
        cands = {c["cid"]: c for c in self.db.candidates(self.name)}
        evs = {c: self.evals(cands[c]) for c in cids}  # one DB query per candidate
        todo = [cands[c] for c in cids if max(evs[c], default=0) < target
                and not any(e["diverged"] for e in evs[c].values())]
        for c in cids:
            self.train_epochs_used[c] = max(self.train_epochs_used.get(c, 0), target)
        if not todo:
            return
        # the full strategy tests every candidate it trains to the end, in the same job, while
        # its checkpoint is at hand: a run DB carried to another machine without its
        # checkpoints (a table resumed from a committed snapshot) needs none of them again
        test = self.cfg.strategy == "full" and target >= self.cfg.final_epochs
        jobs = [{**self.job(c, target), "test": test} for c in todo]
        bar = Progress(len(todo), what, enabled=None if not self.quiet else False)
        for i, res in self.ex.map_unordered(J.advance, jobs):  # each stored as soon as it is done
            self.check_lease()
            with self.db.transaction():
                for ev in res["evals"]:
                    self.db.put_eval(res["key"], self.cfg.seed, ev, os.path.join(todo[i]["ckpt_dir"], "last.pt"))
                if res.get("test_ppl") is not None:
                    self.db.put_test(res["key"], self.cfg.seed, res["test_ppl"])
            bar.update(1)
        bar.close()

    def check_lease(self) -> None:
        """Before a DB write: stop if another process took this search over (lshx.search.lease)."""
        if self.lease is not None:
            self.lease.check()

    def evals(self, cand: dict) -> Dict[int, dict]:
        return self.db.evals(cand["eval_key"], self.cfg.seed)

    def _failed(self, cand: dict, epoch: int) -> bool:
        ev = self.evals(cand)
        return any(e["diverged"] for e in ev.values()) or epoch not in ev

    # ---------------------------------------------------------------- run
    def run(self) -> dict:
        t0 = time.perf_counter()
        c = self.cfg
        existing = {x["cid"]: x for x in self.db.candidates(self.name)}
        n_initial = sum(x["origin"] == "initial" for x in existing.values())
        if n_initial == 0:
            # grid: n points of the grid in the seeded order (all 24 when n >= 24)
            initial = self.proposer.propose([], c.n, set(), round_seed(c.seed, 0))
            with self.db.transaction():  # the dense model and every initial candidate, or none
                if self.DENSE not in existing:
                    self.add(self.DENSE, None, "dense", 0)
                for i, cfg in enumerate(initial, start=1):
                    self.add(i, cfg, "initial", 0)
        elif n_initial != min(c.n, self._max_initial()):
            raise ConfigError(f"search {self.name!r} in {self.db.path} holds {n_initial} initial candidates, not "
                              f"n = {c.n}: it was interrupted while being created by an older lshx; start it "
                              f"under a new --name or in a new DB")
        initial_ids = sorted(x["cid"] for x in self.db.candidates(self.name) if x["origin"] == "initial")
        if c.strategy == "lsh" and len(initial_ids) <= c.final_k:  # nothing to select
            self.advance([self.DENSE] + initial_ids, c.final_epochs, "final training")
            result = self._pick(initial_ids, [], time.perf_counter() - t0)
            self.db.finish_search(self.name, result)
            return result
        if c.strategy == "full":
            rounds = []
            alive = [x["cid"] for x in self.db.candidates(self.name) if x["origin"] != "dense"]
            self.advance([self.DENSE] + alive, c.final_epochs, "full training")
            finalists = alive
        else:
            rounds, finalists = self._select()
            self.advance([self.DENSE] + finalists, c.final_epochs, "final training")
        result = self._pick(finalists, rounds, time.perf_counter() - t0)
        self.db.finish_search(self.name, result)
        return result

    def _max_initial(self) -> int:
        """How many initial configs the proposer can give (the grid has 24 points)."""
        return len(self.proposer.points) if hasattr(self.proposer, "points") else self.cfg.n

    def _select(self) -> Tuple[List[dict], List[int]]:
        c = self.cfg
        cands = {x["cid"]: x for x in self.db.candidates(self.name)}
        alive = sorted(x for x in cands if x != self.DENSE and cands[x]["origin"] == "initial")
        epoch = c.e0
        self.advance([self.DENSE] + alive, epoch, f"epochs 1-{epoch}")
        stored = {r["round"]: r for r in self.db.rounds(self.name)}
        rounds_out, r = [], 0
        while True:
            r += 1
            cands = {x["cid"]: x for x in self.db.candidates(self.name)}
            dense_ev = self.evals(cands[self.DENSE])
            cand_ev = {x: self.evals(cands[x]) for x in cands if x != self.DENSE}
            keep = math.ceil(len(alive) / 2)
            if r in stored:  # replay the recorded decision with the distances it was made on
                dist = stored[r]["distances"]
                gone, inserted_ids = stored[r]["eliminated"], stored[r]["inserted"]
                survivors = sorted(set(alive) - set(gone))
            else:
                dist = distances(c.distance, dense_ev, cand_ev, epoch, alive)
                survivors, gone = eliminate(dist, keep)
                # candidates an older lshx added for this round before crashing: reuse them
                inserted_ids = sorted(x for x in cands if cands[x]["origin"] == "inserted" and cands[x]["round"] == r)
                new = []
                if not inserted_ids and keep > c.final_k and len(alive) > c.final_k:
                    n_ins = keep // 2
                    history = [(cands[s]["config"], dist[s]) for s in survivors]
                    seen = {cands[x]["config_hash"] for x in cands}
                    new = self.proposer.propose(history, n_ins, seen, round_seed(c.seed, r))
                    next_id = max(cands) + 1
                    inserted_ids = list(range(next_id, next_id + len(new)))
                self.check_lease()
                with self.db.transaction():  # the round's insertions and its record, or neither
                    for cid, cfg in zip(inserted_ids, new):  # (new is empty when orphans were reused)
                        self.add(cid, cfg, "inserted", r)
                    self.db.put_round(self.name, r, epoch, alive, gone, inserted_ids, dist)
            for g in gone:
                self.db.set_status(self.name, g, "eliminated")
            finite = [d for d in dist.values() if math.isfinite(d)]
            log(f"round {r}: epoch {epoch}, alive {len(alive)}, eliminated {len(gone)}, inserted "
                f"{len(inserted_ids)}, best distance {min(finite) if finite else float('inf'):.4g}", self.quiet)
            rounds_out.append({"epoch": epoch, "alive": alive, "eliminated": gone, "inserted": inserted_ids,
                               "distances": {str(k): v for k, v in dist.items()}})
            if not inserted_ids and (keep <= c.final_k or len(alive) <= c.final_k):
                return rounds_out, survivors
            if inserted_ids:  # catch up to the current epoch before the next comparison
                self.advance(inserted_ids, epoch, f"catch-up to epoch {epoch}")
            alive = sorted(survivors + inserted_ids)
            if len(alive) <= c.final_k:
                return rounds_out, alive
            epoch += c.ei
            self.advance([self.DENSE] + alive, epoch, f"epochs to {epoch}")

    def _pick(self, finalists: List[int], rounds: List[dict], wall: float) -> dict:
        cands = {x["cid"]: x for x in self.db.candidates(self.name)}

        def best_val(cid):
            vals = [e["val_ppl"] for e in self.evals(cands[cid]).values()
                    if e["val_ppl"] is not None and math.isfinite(e["val_ppl"])]
            return min(vals) if vals else math.inf

        ranked = sorted(finalists, key=lambda x: (best_val(x), x))
        best = ranked[0]
        tests = self.test_perplexities([cands[best], cands[self.DENSE]])
        self.check_lease()
        for x in finalists:
            self.db.set_status(self.name, x, "final")
        self.db.set_status(self.name, best, "best")
        # what the method costs: each candidate up to the epoch this search took it to (or to
        # where it diverged), whatever else other searches stored in a shared DB; plus the
        # dense model up to the last elimination for the LS distances (the loss-based and the
        # full-training searches need no dense model: it is trained to P for the report only)
        used = sum(min(target, max(self.evals(cands[x]), default=0)) for x, target in self.train_epochs_used.items()
                   if x != self.DENSE)
        if self.cfg.strategy == "lsh" and self.cfg.distance != "loss" and rounds:
            used += min(max(r["epoch"] for r in rounds), max(self.evals(cands[self.DENSE]), default=0))
        result = {
            "name": self.name,
            "best": {"cid": best, "config": cands[best]["config"], "describe": describe(cands[best]["config"]),
                     "val_ppl": best_val(best), "test_ppl": tests[0]},
            "dense": {"val_ppl": best_val(self.DENSE), "test_ppl": tests[1]},
            "rounds": rounds,
            "train_epochs": used,
            "dense_epochs": max(self.evals(cands[self.DENSE]), default=0),
            # Table 3's count for the rounds that ran (catch-up epochs left out); equals
            # selection_epochs(n, e0, ei) when every planned insertion happened
            "selection_epochs_table3": (self.cfg.n * self.cfg.e0 + self.cfg.ei * sum(
                len(r["alive"]) - len(r["eliminated"]) + len(r["inserted"]) for r in rounds[:-1])) if rounds else None,
            "candidates": len(cands) - 1,
            "wall_s": wall,
        }
        if self.cfg.strategy == "full" and self.cfg.hpo in ("tpe", "atpe", "optuna"):
            result["note"] = (f"strategy full: the {self.cfg.n} configs were proposed at once, before any result, "
                              f"so {self.cfg.hpo} saw no feedback: a seeded sample from its prior")
        return result


def _check_stored(cfg: SearchConfig, prev: Optional[dict], db_path, name: str, resume: bool) -> None:
    if prev is None:
        return
    if not resume:
        raise ConfigError(f"search {name!r} already exists in {db_path}: add --resume, or pick another --name")
    if not cfg.same_search(prev["args"]):
        raise ConfigError(f"search {name!r} in {db_path} was started with other options; resume with the same ones")


class _ReaderLease:
    """The lease of a finished search read back: nothing is written, so nothing is held."""

    def check(self) -> None:
        pass


def _finished(cfg: SearchConfig, db_path, name: str) -> Optional[dict]:
    """A finished search's stored result, read without writing (None if it is not one)."""
    try:
        db = RunDB(db_path, readonly=True)
    except LshxError:
        return None  # (an older DB to migrate, or no DB: the writable path says what is wrong)
    try:
        prev = db.get_search(name)
    finally:
        db.close()
    if prev is None or prev["status"] != "done" or not prev["result"]:
        return None
    _check_stored(cfg, prev, db_path, name, True)
    return prev["result"]


@contextmanager
def open_search(cfg: SearchConfig, db_path: str | Path, name: str, resume: bool = False, quiet: bool = False,
                wait: bool = False, lease_stale_s: Optional[float] = None,
                read_finished: bool = True) -> Iterator[Tuple[RunDB, Lease, Optional[dict]]]:
    """Checks every input (options and data) before the DB is opened, and whether the search
    may start or resume before anything is written; then takes the search's lease (or raises
    SearchBusy naming the holder; waits with wait=True) and creates the search. Yields (db,
    lease, the stored result when the search is finished, else None); the lease is released
    after. read_finished: a finished search resumed is read back from the DB opened read-only
    (nothing written, no lease: a reader never writes); False when the caller may still write."""
    cfg.check_inputs()
    if resume and read_finished and Path(db_path).is_file():
        done = _finished(cfg, db_path, name)
        if done is not None:
            log(f"search {name!r} is already finished", quiet)
            db = RunDB(db_path, readonly=True)
            try:
                yield db, _ReaderLease(), done
            finally:
                db.close()
            return
    writable_file(db_path, "the run DB")  # (and its checkpoints' folder beside it)
    stale_s = default_stale_s() if lease_stale_s is None else lease_stale_s
    if not stale_s > 0:
        raise ConfigError(f"the lease's stale time must be > 0 s, got {stale_s}")
    db = RunDB(db_path)
    try:
        _check_stored(cfg, db.get_search(name), db_path, name, resume)
        lease = Lease(db, name, stale_s)
        lease.acquire(wait=wait, say=lambda msg: log(msg, quiet))
        try:
            prev = db.get_search(name)  # again, as owner: another process may have created it meanwhile
            _check_stored(cfg, prev, db_path, name, resume)
            done = None
            if prev is None:
                db.create_search(name, cfg.task, cfg.to_dict())
            elif prev["status"] == "done" and prev["result"]:
                log(f"search {name!r} is already finished", quiet)
                done = prev["result"]
            yield db, lease, done
        finally:
            lease.release()
    finally:
        db.close()


def run_search(cfg: SearchConfig, db_path: str | Path, executor: Executor, name: str = "default",
               resume: bool = False, quiet: bool = False, proposer: Optional[Proposer] = None,
               wait: bool = False, lease_stale_s: Optional[float] = None) -> dict:
    """Runs (or resumes, or reads back) search `name` in the run DB; one process at a time
    (a second is refused, or waits with wait=True; lshx.search.lease)."""
    with open_search(cfg, db_path, name, resume, quiet, wait, lease_stale_s) as (db, lease, done):
        if done is not None:
            return done
        return Search(cfg, db, executor, name, quiet, proposer, lease=lease).run()
