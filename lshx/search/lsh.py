"""LS-based Hyperpruning (paper section 3): the schedule, the distances, the final pick.

Schedule: n candidates and the dense model train e0 epochs; then, every ei epochs, the
farthest floor(n/2) are eliminated (keep ceil(n/2)), floor(keep/2) new candidates (n/4)
are proposed by the HPO method from the survivors' (config, distance) and trained up to
the current epoch (catch-up epochs count in train_epochs), until at most final_k
survive; they are trained to P epochs and the best validation perplexity wins. This
rounding reproduces the paper's Table 3 exactly (GS-24: 24 e0 + 58 ei = 246 at 3/3),
whose counts leave the catch-up epochs out (selection_epochs below does the same).

Resuming replays the schedule: every decision is recomputed from stored evaluations
(deterministic) or read back from the DB, and training jobs skip finished epochs.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from lshx.errors import CheckpointError, ConfigError
from lshx.lyapunov import LSConfig
from lshx.progress import Progress, log
from lshx.search import jobs as J
from lshx.search.executors import Executor, run_all
from lshx.search.hpo import HPOS, Proposer, make_proposer
from lshx.search.lease import Lease, default_stale_s
from lshx.search.rundb import RunDB
from lshx.search.space import config_hash, describe, normalize
from lshx.train import TrainConfig

DISTANCES = ("pca2", "raw", "pca2-pair", "loss")
# spectra a table may record beside the default (state h, warm-up 'advance'): the full LSTM
# state, and the authors' aligned warm-up (B propagated through the warm-up steps)
LS_EXTRA = {"hc": {"state": "hc"}, "h-orth": {"warmup_mode": "orthonormalize"}}
STRATEGIES = ("lsh", "full")

# search sizes per preset (model sizes come from lshx.presets)
SEARCH_PRESETS = {
    # e0 >= 2: the DST settings act from the first topology update (end of epoch 1) on
    "smoke": {"n": 6, "e0": 2, "ei": 1, "final_epochs": 4, "ls_samples": 2, "ls_steps": 8, "ls_warmup": 2},
    "small": {"n": 8, "e0": 2, "ei": 1, "final_epochs": 4, "ls_samples": 2, "ls_steps": 35, "ls_warmup": 10,
              "max_batches": 80},
    "paper": {"n": 40, "e0": 3, "ei": 3, "final_epochs": 100, "ls_samples": 2, "ls_steps": 35, "ls_warmup": 10},
}


@dataclass
class SearchConfig:
    task: str = "ptb-lstm"
    preset: str = "small"
    hpo: str = "tpe"
    distance: str = "pca2"
    strategy: str = "lsh"
    n: int = 8
    e0: int = 1
    ei: int = 1
    final_epochs: int = 4
    final_k: int = 2
    density: Optional[float] = None  # default: the preset's
    seed: int = 0
    data: Optional[str] = None
    max_batches: Optional[int] = None
    ls_samples: int = 2
    ls_steps: int = 35
    ls_warmup: int = 10
    ls_k: Optional[int] = None
    device: str = "cpu"  # where every candidate trains and its spectrum is computed
    train_seed: Optional[int] = None  # the candidates' training seed (default: seed, which also seeds the HPO)
    ls_extra: Optional[List[str]] = None  # more spectra per epoch (LS_EXTRA), for tables
    # intra-op threads of every job (training, spectrum, test), on every executor: the results
    # depend on it (summation order), so it is part of the search, not of the shell it runs in
    threads: int = 1

    @classmethod
    def from_preset(cls, task: str, preset: str, **over) -> "SearchConfig":
        if preset not in SEARCH_PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; allowed: {', '.join(SEARCH_PRESETS)}")
        d = dict(SEARCH_PRESETS[preset])
        d.update({k: v for k, v in over.items() if v is not None})
        cfg = cls(task=task, preset=preset, **d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Every option, checked before anything is written (the data folder: check_inputs)."""
        if self.hpo not in HPOS:
            raise ConfigError(f"unknown hpo {self.hpo!r}; allowed: {', '.join(HPOS)}")
        if self.distance not in DISTANCES:
            raise ConfigError(f"unknown distance {self.distance!r}; allowed: {', '.join(DISTANCES)}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.strategy!r}; allowed: {', '.join(STRATEGIES)}")
        if self.n < 1 or self.e0 < 1 or self.ei < 1 or self.final_k < 1:
            raise ConfigError("n, e0, ei and final-k must be >= 1")
        if self.final_epochs < self.e0:
            raise ConfigError("final epochs must be >= e0")
        for opt, value, low in (("--threads", self.threads, 1), ("--max-batches", self.max_batches, 1),
                                ("--seed", self.seed, 0), ("train seed", self.train_seed, 0),
                                ("ls samples", self.ls_samples, 1), ("ls steps", self.ls_steps, 1),
                                ("ls warmup", self.ls_warmup, 0), ("ls k", self.ls_k, 1)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
                raise ConfigError(f"{opt} must be an integer >= {low}, got {value!r}")
        # the training settings of the dense model and of a candidate (the density, the preset)
        TrainConfig.from_preset(self.task, self.preset, data=self.data, epochs=self.final_epochs,
                                max_batches=self.max_batches, device=self.device, dst={"density": 1.0})
        if self.density is not None:
            if isinstance(self.density, bool) or not isinstance(self.density, (int, float)):
                raise ConfigError(f"density must be a number in (0, 1], got {self.density!r}")
            TrainConfig.from_preset(self.task, self.preset, dst={"density": self.density})
        if self.strategy == "lsh" and self.n > self.final_k:
            last = elimination_epochs(self.n, self.e0, self.ei, self.final_k)[-1]
            if last > self.final_epochs:
                raise ConfigError(f"the schedule eliminates until epoch {last} (n={self.n}, e0={self.e0}, "
                                  f"ei={self.ei}) but --final-epochs is {self.final_epochs}: raise --final-epochs "
                                  f"to >= {last}, or lower n, e0 or ei")
        bad = set(self.ls_extra or ()) - set(LS_EXTRA)
        if bad:
            raise ConfigError(f"unknown extra spectrum {', '.join(sorted(bad))}; allowed: {', '.join(LS_EXTRA)}")
        if self.task == "ptb-rhn" and any(LS_EXTRA[x].get("state", "h") != "h" for x in self.ls_extra or ()):
            raise ConfigError("the RHN has a single state vector: no hc spectrum for ptb-rhn")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"device {self.device!r}: expected cpu or cuda[:N]")
        if self.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise ConfigError(f"device {self.device!r} asked for, but torch sees no CUDA device")

    def check_inputs(self) -> None:
        """validate() and the data: the folder holds the three splits, readable, each long
        enough for its batch size (and the validation split for the LS windows). The corpus
        stays cached for the jobs of this process."""
        self.validate()
        from lshx.data import batchify

        corpus = J._corpus(self.data)
        t = TrainConfig.from_preset(self.task, self.preset)
        for split, batch in (("train", t.batch_size), ("valid", t.eval_batch_size), ("test", t.eval_batch_size)):
            batchify(getattr(corpus, split), batch)
        if self.distance != "loss" and self.ls_samples * (self.ls_warmup + self.ls_steps) > corpus.valid.numel():
            raise ConfigError(f"{self.ls_samples} LS windows of {self.ls_warmup + self.ls_steps} tokens need more "
                              f"than the {corpus.valid.numel()} tokens of the validation split")

    def to_dict(self) -> dict:
        return asdict(self)

    def same_search(self, stored: dict) -> bool:
        """Whether options stored in a run DB describe this search (fields added since, like
        device, take their defaults)."""
        known = {k: v for k, v in stored.items() if k in self.__dataclass_fields__}
        return SearchConfig(**known).to_dict() == self.to_dict()


# ----------------------------------------------------------------------------- arithmetic
def plan(n: int, final_k: int = 2) -> List[Tuple[int, int, int]]:
    """Rounds as (size before elimination, kept, inserted); the last round inserts nothing."""
    rounds, size = [], n
    while True:
        keep = math.ceil(size / 2)
        if keep <= final_k or size <= final_k:
            rounds.append((size, min(keep, size), 0))
            return rounds
        ins = keep // 2
        rounds.append((size, keep, ins))
        size = keep + ins


def elimination_epochs(n: int, e0: int, ei: int, final_k: int = 2) -> List[int]:
    """The epochs at which the planned rounds eliminate (fewer when the HPO method runs out
    of new configs, as the grid does)."""
    return [e0 + ei * r for r in range(len(plan(n, final_k)))]


def round_seed(seed: int, round_: int) -> int:
    """Independent seeds per (search seed, round): round 0 draws the initial candidates."""
    return int(np.random.SeedSequence([seed, round_]).generate_state(1)[0])


def selection_epochs(n: int, e0: int, ei: int, final_k: int = 2) -> int:
    """Epochs of the candidate-selection phase as the paper's Table 3 counts them
    (every candidate alive in a period, catch-up epochs of inserted ones left out)."""
    rounds = plan(n, final_k)
    return n * e0 + ei * sum(keep + ins for _, keep, ins in rounds[:-1])


# ----------------------------------------------------------------------------- distances
def _trajectory(evs: Dict[int, dict], epoch: int) -> List[list]:
    """A model's spectra at epochs 1..epoch (diverged or missing epochs left out)."""
    return [ev["spectrum"] for e, ev in sorted(evs.items())
            if e <= epoch and ev.get("spectrum") is not None and not ev.get("diverged")]


def _pca_distance(rows: List[list], ref: list, points: List[list]) -> List[float]:
    """Fits a 2-D PCA on `rows` (centring, then the two leading right singular vectors: what
    sklearn's PCA with the full solver computes, up to the sign of each axis, which no
    distance sees) and returns the L2 distance of each point to `ref` in it."""
    X = np.asarray(rows, dtype=np.float64)
    mean = X.mean(axis=0)
    _, _, vt = np.linalg.svd(X - mean, full_matrices=False)
    axes = vt[: min(2, X.shape[0], X.shape[1])]
    d0 = (np.asarray(ref, dtype=np.float64) - mean) @ axes.T
    Y = (np.asarray(points, dtype=np.float64) - mean) @ axes.T
    return [float(np.linalg.norm(y - d0)) for y in Y]


def distances(kind: str, dense: Dict[int, dict], cands: Dict[int, Dict[int, dict]], epoch: int,
              alive: List[int]) -> Dict[int, float]:
    """s_i for every alive candidate at `epoch` (lower is closer to the dense model).

    loss: the validation perplexity. raw: L2 between the spectra. pca2: L2 in one 2-D PCA
    fitted on the dense trajectory and the trajectories of the candidates alive in this
    round, epochs 1..epoch (what the search knows then: eliminated candidates and other
    searches' evaluations in a shared DB do not move it). pca2-pair: one PCA per candidate,
    on the dense trajectory and that candidate's (the paper's embedding([Λ̂, Λ^i]) read
    literally). Diverged or missing candidates get +inf."""
    out: Dict[int, float] = {}
    if kind == "loss":
        for c in alive:
            ev = cands[c].get(epoch)
            ok = ev and not ev["diverged"] and ev["val_ppl"] is not None and math.isfinite(ev["val_ppl"])
            out[c] = float(ev["val_ppl"]) if ok else math.inf
        return out
    ref = dense[epoch]["spectrum"]
    good = [c for c in alive if cands[c].get(epoch) and not cands[c][epoch]["diverged"]
            and cands[c][epoch]["spectrum"] is not None]
    out = {c: math.inf for c in alive}
    if not good:
        return out
    points = [cands[c][epoch]["spectrum"] for c in good]
    if kind == "raw":
        vals = [float(np.linalg.norm(np.array(p) - np.array(ref))) for p in points]
    elif kind == "pca2":
        rows = _trajectory(dense, epoch)
        for c in good:
            rows += _trajectory(cands[c], epoch)
        vals = _pca_distance(rows, ref, points)
    elif kind == "pca2-pair":
        vals = [_pca_distance(_trajectory(dense, epoch) + _trajectory(cands[c], epoch), ref, [p])[0]
                for c, p in zip(good, points)]
    else:
        raise ConfigError(f"unknown distance {kind!r}; allowed: {', '.join(DISTANCES)}")
    out.update(zip(good, vals))
    return out


def eliminate(dist: Dict[int, float], keep: int) -> Tuple[List[int], List[int]]:
    """(survivors, eliminated): the `keep` nearest stay; ties go to the lower candidate id."""
    order = sorted(dist, key=lambda c: (dist[c], c))
    return sorted(order[:keep]), sorted(order[keep:])


# ----------------------------------------------------------------------------- the search
class Search:
    DENSE = 0  # candidate id of the dense reference

    def __init__(self, cfg: SearchConfig, db: RunDB, executor: Executor, name: str, quiet: bool = False,
                 proposer: Optional[Proposer] = None, lease: Optional[Lease] = None) -> None:
        """proposer: instead of cfg.hpo's (a replay restricts it to a table's configurations).
        lease: the search's lease in db, checked before each write (run_search takes it)."""
        self.cfg, self.db, self.ex, self.name, self.quiet = cfg, db, executor, name, quiet
        self.lease = lease
        self.ckpt_root = db.path.with_suffix("").parent / (db.path.stem + "-runs")
        self.proposer = proposer or make_proposer(cfg.hpo, cfg.task)
        self._key_cache: Dict[str, Tuple[dict, str]] = {}
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
        what = {"train": tcfg.to_dict(), "ls": self.ls_config()}
        if self.ls_extra():  # (left out when empty: the keys of DBs written before stay valid)
            what["ls_extra"] = self.ls_extra()
        if self.cfg.threads != 1:  # (left out at the default, likewise): results depend on it
            what["threads"] = self.cfg.threads
        blob = json.dumps(what, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:20]

    def _keyed(self, config: Optional[dict]) -> Tuple[dict, str]:
        """(TrainConfig dict, eval key) of a candidate config, computed once per config."""
        h = config_hash(config) if config else "dense"
        if h not in self._key_cache:
            tcfg = self.train_config(config)
            self._key_cache[h] = (tcfg.to_dict(), self._eval_key(tcfg))
        return self._key_cache[h]

    def add(self, cid: int, config: Optional[dict], origin: str, round_: int) -> None:
        key = self._keyed(config)[1]
        self.db.add_candidate(self.name, cid, config or {"dense": True}, config_hash(config) if config else "dense",
                              key, origin, round_, str(self.ckpt_root / key))

    def _job(self, cand: dict, target: int) -> dict:
        """A job runs wherever the executor puts it (another process, another Ray node): its
        paths are absolute, as this process resolves them (the default data folder too), and
        its thread count is the search's."""
        from lshx.data import default_data_dir

        cfg = None if cand["origin"] == "dense" else cand["config"]
        train = dict(self._keyed(cfg)[0])
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
        out.update(zip(todo, run_all(self.ex, J.test_perplexity, [self._job(cands[i], 0) for i in todo])))
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
        jobs = [{**self._job(c, target), "test": test} for c in todo]
        bar = Progress(len(todo), what, enabled=None if not self.quiet else False)
        for i, res in self.ex.map_unordered(J.advance, jobs):  # each stored as soon as it is done
            self.check_lease()
            with self.db.transaction():
                for ev in res["evals"]:
                    self.db.put_eval(res["key"], self.cfg.seed, ev, str(Path(todo[i]["ckpt_dir"]) / "last.pt"))
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


@contextmanager
def open_search(cfg: SearchConfig, db_path: str | Path, name: str, resume: bool = False, quiet: bool = False,
                wait: bool = False, lease_stale_s: Optional[float] = None) -> Iterator[Tuple[RunDB, Lease,
                                                                                          Optional[dict]]]:
    """Checks every input (options and data) before the DB is opened, and whether the search
    may start or resume before anything is written; then takes the search's lease (or raises
    SearchBusy naming the holder; waits with wait=True) and creates the search. Yields (db,
    lease, the stored result when the search is finished, else None); the lease is released
    after."""
    cfg.check_inputs()
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
