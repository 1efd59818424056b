"""Proposers: given a history of (config, distance) they propose new configs (ask/tell).

Lower distance is better: it is the HPO 'loss'. Every call rebuilds the optimizer's
history from what it is given (the survivors, in LSH), so a proposer holds no hidden
state and a resumed search proposes exactly what the first run proposed.
"""
from __future__ import annotations

import datetime
from abc import ABC, abstractmethod
import math
import random
from typing import List, Optional, Sequence, Set, Tuple

from lshx.errors import ConfigError
from lshx.search.space import CATEGORICAL, DEATH_RATE_RANGE, config_hash, grid, normalize, random_config

HPOS = ("tpe", "atpe", "grid", "random", "optuna")
History = Sequence[Tuple[dict, float]]


class Proposer(ABC):
    @abstractmethod
    def propose(self, history: History, n: int, exclude: Set[str], round_seed: int) -> List[dict]:
        """n new configs, none of whose hashes is in `exclude`."""


def _fill_distinct(cands: List[dict], n: int, exclude: Set[str], rng: random.Random) -> List[dict]:
    """Keeps the first n configs not seen before (by hash); tops up with random draws."""
    out, seen = [], set(exclude)
    for c in cands:
        h = config_hash(c)
        if h not in seen:
            out.append(normalize(c))
            seen.add(h)
        if len(out) == n:
            return out
    for _ in range(1000 * n):
        if len(out) == n:
            break
        c = random_config(rng)
        if config_hash(c) not in seen:
            out.append(c)
            seen.add(config_hash(c))
    return out


class RandomProposer(Proposer):
    def propose(self, history, n, exclude, round_seed):
        return _fill_distinct([], n, exclude, random.Random(round_seed))


class GridProposer(Proposer):
    """The grid in a seeded order; it proposes nothing once every point has been tried."""

    def __init__(self, task: str, points: Optional[Sequence[dict]] = None) -> None:
        """points: another finite pool instead of the task's grid (a table's configurations)."""
        self.points = [normalize(p) for p in points] if points else grid(task)

    def propose(self, history, n, exclude, round_seed):
        order = list(self.points)
        random.Random(round_seed).shuffle(order)
        return [c for c in order if config_hash(c) not in exclude][:n]


class HyperoptProposer(Proposer):
    """TPE or ATPE from hyperopt 0.3, used as ask/tell through trial documents.
    `from_model` says how many of the last proposals came from the algorithm (the rest, only
    when it keeps proposing configs already tried, are random draws)."""

    def __init__(self, algo: str, configs: Optional[Sequence[dict]] = None) -> None:
        """configs: restrict the proposals to these (a table's pool). When they are a whole
        product of the categorical choices at one death rate (the grid) the space keeps its
        structure (one choice per control); otherwise it is one choice among the configs."""
        try:
            import hyperopt  # noqa: F401
        except ImportError:
            raise ConfigError("hyperopt is not installed: pip install hyperopt==0.3.0") from None
        if algo == "atpe":
            try:
                import lightgbm  # noqa: F401
            except ImportError:
                raise ConfigError("--hpo atpe needs lightgbm: pip install lightgbm") from None
        self.algo = algo
        self.from_model = 0
        self._built = None  # (space, Domain, tpe's posterior graphs for it): _domain, _cache_posterior
        self.configs = [normalize(c) for c in configs] if configs else None
        self.mode = "space"
        if self.configs:
            rates = {c["death_rate"] for c in self.configs}
            combos = {tuple(c[k] for k in CATEGORICAL) for c in self.configs}
            full = len(combos) == len(self.configs) == math.prod(len(v) for v in CATEGORICAL.values())
            # a pool that is not a whole product: TPE still models the structured space (a single
            # choice among configs would carry no similarity between them: random search), and
            # each proposal is snapped to the nearest pool config not tried yet
            self.mode = "product" if full and len(rates) == 1 else "snap"
            self.rate = rates.pop() if self.mode == "product" else None

    def _space(self):
        from hyperopt import hp

        space = {k: hp.choice(k, list(v)) for k, v in CATEGORICAL.items()}
        if self.mode != "product":
            space["death_rate"] = hp.uniform("death_rate", *DEATH_RATE_RANGE)
        return space

    def _domain(self):
        """The space and its hyperopt Domain, built once (fmin also keeps one Domain for a whole
        run; building it is a third of a proposal's cost in a replay)."""
        if self._built is None:
            from hyperopt import Domain

            space = self._space()
            self._built = (space, Domain(lambda _: 0.0, space), {})  # {}: its posteriors
        return self._built

    def _cache_posterior(self, tpe):
        """Makes tpe.suggest reuse this proposer's posterior graph until the returned function is
        put back as tpe.build_posterior_wrapper. hyperopt rebuilds the same graph from the
        Domain on every suggestion (a third of its cost); the graph holds no observations (they
        are passed in each call's memo), so reusing it changes no proposal. (Not for two
        threads proposing at once: no search does; the patch is module-wide.)"""
        original = tpe.build_posterior_wrapper
        _, own, posteriors = self._built

        def cached(domain, prior_weight, gamma):
            if domain is not own:
                return original(domain, prior_weight, gamma)
            key = (prior_weight, gamma)
            if key not in posteriors:
                posteriors[key] = original(domain, prior_weight, gamma)
            return posteriors[key]

        tpe.build_posterior_wrapper = cached
        return original

    def __getstate__(self) -> dict:  # (the Domain holds a lambda: rebuilt where unpickled)
        return {**self.__dict__, "_built": None}

    def _vals(self, cfg: dict) -> dict:
        """A config as hyperopt's trial 'vals' (choice indices, the rate)."""
        c = normalize(cfg)
        vals = {k: [list(CATEGORICAL[k]).index(c[k])] for k in CATEGORICAL}
        if self.mode != "product":
            vals["death_rate"] = [c["death_rate"]]
        return vals

    def _config(self, point: dict, seen: Set[str]) -> Optional[dict]:
        """A point of the space (space_eval's output) as a config; in a pool that is not a
        product, the nearest pool config not in `seen` (fewest differing controls, then the
        closest death rate; None when the pool is used up)."""
        if self.mode == "product":
            return normalize({**point, "death_rate": self.rate})
        if self.mode == "space":
            return normalize(point)
        p = normalize(point)
        rest = [c for c in self.configs if config_hash(c) not in seen]
        if not rest:
            return None
        return min(rest, key=lambda c: (sum(c[k] != p[k] for k in CATEGORICAL), abs(c["death_rate"] - p["death_rate"]),
                                        config_hash(c)))

    def propose(self, history, n, exclude, round_seed):
        from functools import partial

        from hyperopt import JOB_STATE_DONE, STATUS_OK, Trials, atpe, space_eval, tpe

        space, domain, _ = self._domain()
        trials = Trials()
        now = datetime.datetime.now()
        # Diverged configs (infinite distance) are left out: TPE models finite losses only.
        history = [(c, float(d)) for c, d in history if d is not None and math.isfinite(d)]
        if history:
            tids = trials.new_trial_ids(len(history))
            docs = []
            for tid, (cfg, dist) in zip(tids, history):
                vals = self._vals(cfg)
                misc = {"tid": tid, "cmd": domain.cmd, "workdir": None,
                        "idxs": {k: [tid] for k in vals}, "vals": vals}
                docs.extend(trials.new_trial_docs([tid], [None], [{"loss": dist, "status": STATUS_OK}], [misc]))
            for d in docs:  # atpe needs these timestamps on finished trials
                d["state"] = JOB_STATE_DONE
                d["book_time"] = now
                d["refresh_time"] = now
            trials.insert_trial_docs(docs)
            trials.refresh()
        if self.algo == "tpe":  # with the survivors as its whole history, TPE must use it at once
            algo = partial(tpe.suggest, n_startup_jobs=2)
        else:
            algo = atpe.suggest
        import numpy as np

        # hyperopt's suggest returns ONE document however many ids it is given: ask n times,
        # each with its own seed, so every proposal comes from the model. Once TPE models its
        # history (2 finished trials or more), each suggestion is also added as a pending trial
        # before the next (it then counts among the 'bad' points, pushing the next ones
        # elsewhere). Before that, TPE draws from its prior, and pending trials would become
        # its model (all equally bad, the first one 'good'): none are added. ATPE cannot read a
        # trial without a loss, so it gets the finished history only.
        pending = self.algo == "tpe" and len(history) >= 2
        seeds = np.random.SeedSequence(round_seed).generate_state(4 * n + 4)
        out: List[dict] = []
        seen = set(exclude)
        state_np, state_py = np.random.get_state(), random.getstate()
        restore = None
        try:
            restore = self._cache_posterior(tpe) if self.algo == "tpe" else None
            for seed in seeds:
                if len(out) == n:
                    break
                seed = int(seed) % (2 ** 31)
                np.random.seed(seed)  # atpe also draws from the global numpy and python RNGs
                random.seed(seed)
                docs = algo(trials.new_trial_ids(1), domain, trials, seed)
                for d in docs:
                    vals = {k: v[0] for k, v in d["misc"]["vals"].items() if v}
                    cfg = self._config(space_eval(space, vals), seen)
                    if cfg is not None and config_hash(cfg) not in seen and len(out) < n:
                        out.append(cfg)
                        seen.add(config_hash(cfg))
                if pending:
                    trials.insert_trial_docs(docs)  # pending: the next suggestion sees it was asked
                    trials.refresh()
        finally:
            if restore is not None:
                tpe.build_posterior_wrapper = restore
            np.random.set_state(state_np)
            random.setstate(state_py)
        self.from_model = len(out)
        if self.configs:  # a pool: top up from what is left of it, never from outside
            rest = [c for c in self.configs if config_hash(c) not in seen]
            random.Random(round_seed).shuffle(rest)
            return out + rest[:n - len(out)]
        return _fill_distinct(out, n, exclude, random.Random(round_seed))


class OptunaProposer(Proposer):
    def __init__(self) -> None:
        try:
            import optuna  # noqa: F401
        except ImportError:
            raise ConfigError("--hpo optuna needs optuna: pip install optuna") from None

    def propose(self, history, n, exclude, round_seed):
        import optuna
        from optuna.distributions import CategoricalDistribution, FloatDistribution

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        dists = {k: CategoricalDistribution(list(v)) for k, v in CATEGORICAL.items()}
        dists["death_rate"] = FloatDistribution(*DEATH_RATE_RANGE)
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=round_seed, n_startup_trials=2))
        for cfg, dist in history:
            c = normalize(cfg)
            ok = dist is not None and math.isfinite(dist)
            study.add_trial(optuna.trial.create_trial(
                params={k: c[k] for k in dists}, distributions=dists, value=float(dist) if ok else None,
                state=optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.FAIL))
        out = []
        for _ in range(4 * n + 4):
            if len(out) == n:
                break
            t = study.ask(dists)
            cfg = normalize(t.params)
            study.tell(t, state=optuna.trial.TrialState.FAIL)
            if config_hash(cfg) not in exclude and all(config_hash(cfg) != config_hash(o) for o in out):
                out.append(cfg)
        return _fill_distinct(out, n, exclude, random.Random(round_seed))


def make_proposer(hpo: str, task: str) -> Proposer:
    if hpo in ("tpe", "atpe"):
        return HyperoptProposer(hpo)
    if hpo == "grid":
        return GridProposer(task)
    if hpo == "random":
        return RandomProposer()
    if hpo == "optuna":
        return OptunaProposer()
    raise ConfigError(f"unknown hpo {hpo!r}; allowed: {', '.join(HPOS)}")
