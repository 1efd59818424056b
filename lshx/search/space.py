"""The hyperpruning search space (Selfish-RNN's DST controls) and its 24-point grid.

Methodological: sparse init, death mode, redistribution (growth is random for now);
non-methodological: the death rate, U[0.4, 0.9]. The grid fixes the death rate
(0.8 for the LSTM, 0.5 for the RHN): 2 x 4 x 3 = 24 configurations.
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import json
import random
from typing import Dict, List

from lshx.sparse.config import DEATHS, INITS, REDISTRIBUTIONS

# the paper's search space: Selfish-RNN's four death modes (DST may offer more, e.g. the
# original's SET rule for comparison, outside the search)
SEARCH_DEATHS = ("magnitude", "SET", "threshold", "global_magnitude")
assert set(SEARCH_DEATHS) <= set(DEATHS)
CATEGORICAL: Dict[str, tuple] = {"init": INITS, "death": SEARCH_DEATHS, "redistribution": REDISTRIBUTIONS}
DEATH_RATE_RANGE = (0.4, 0.9)
GRID_DEATH_RATE = {"ptb-lstm": 0.8, "ptb-rhn": 0.5}
GROWTH = "random"
# the pools a table (lshx.studies.table) trains: the whole grid, or seeded draws from TPE's space
POOLS = ("gs24", "random")


def normalize(config: dict) -> dict:
    """The canonical form of a candidate config (what is hashed and stored)."""
    out = {k: config[k] for k in CATEGORICAL}
    out["growth"] = config.get("growth", GROWTH)
    out["death_rate"] = round(float(config["death_rate"]), 6)
    return out


def config_hash(config: dict) -> str:
    c = normalize(config)
    try:
        return _hash_of(tuple(c[k] for k in _HASHED))
    except TypeError:  # an unhashable value (a malformed config): hashed as it is
        return _sha(c)


_HASHED = ("death", "death_rate", "growth", "init", "redistribution")  # (sorted: normalize's keys)


@functools.lru_cache(maxsize=1 << 16)
def _hash_of(values: tuple) -> str:
    """config_hash of a normalized config, memoized (a replay hashes the same configs ~10^5 times)."""
    return _sha(dict(zip(_HASHED, values)))


def _sha(c: dict) -> str:
    return hashlib.sha1(json.dumps(c, sort_keys=True).encode()).hexdigest()[:16]


def grid(task: str) -> List[dict]:
    rate = GRID_DEATH_RATE[task]
    return [normalize({"init": i, "death": d, "redistribution": r, "death_rate": rate})
            for i, d, r in itertools.product(INITS, SEARCH_DEATHS, REDISTRIBUTIONS)]


def random_config(rng: random.Random) -> dict:
    cfg = {k: rng.choice(v) for k, v in CATEGORICAL.items()}
    cfg["death_rate"] = rng.uniform(*DEATH_RATE_RANGE)
    return normalize(cfg)


def describe(config: dict) -> str:
    c = normalize(config)
    return f"{c['init']}/{c['death']}/{c['redistribution']}/dr={c['death_rate']:.3f}"
