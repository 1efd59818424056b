"""DSTConfig: every dynamic-sparse-training control in one validated, JSON-able object."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Optional

from lshx.errors import ConfigError

INITS = ("uniform", "ER")
# SET-original: Selfish-RNN's SET rule (removes the most negative weights), to reproduce its
# numbers; not in the search space (lshx/search/space.py lists the deaths it searches)
DEATHS = ("magnitude", "SET", "threshold", "global_magnitude", "SET-original")
GROWTHS = ("random",)
REDISTRIBUTIONS = ("magnitude", "nonzeros", "none")
DEFAULT_FINAL_DEATH_RATE = 0.005


@dataclass(frozen=True)
class DSTConfig:
    density: float = 0.33
    init: str = "uniform"
    death: str = "magnitude"
    growth: str = "random"
    redistribution: str = "none"
    death_rate: float = 0.5
    # cosine decay target; None: 0.005, or the death rate itself when that is lower (0 for
    # death_rate 0: no topology change at all)
    death_rate_final: Optional[float] = None
    update_every: int = 0  # 0: one topology update per epoch; N > 0: every N optimizer steps
    threshold: float = 1e-3  # 'threshold' death: the starting threshold (adapted to the death rate)

    def __post_init__(self) -> None:
        for name in ("density", "death_rate", "death_rate_final", "threshold"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):
                raise ConfigError(f"{name.replace('_', ' ')} must be a finite number, got {value!r}")
        if isinstance(self.update_every, bool) or not isinstance(self.update_every, int):
            raise ConfigError(f"update_every must be an integer, got {self.update_every!r}")
        if self.death_rate_final is None and 0.0 <= self.death_rate < 1.0:
            object.__setattr__(self, "death_rate_final", min(DEFAULT_FINAL_DEATH_RATE, self.death_rate))
        for name, allowed in (("init", INITS), ("death", DEATHS), ("growth", GROWTHS),
                              ("redistribution", REDISTRIBUTIONS)):
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")
        if not 0.0 < self.density <= 1.0:
            raise ConfigError(f"density must be in (0, 1], got {self.density}")
        if not 0.0 <= self.death_rate < 1.0:
            raise ConfigError(f"death rate must be in [0, 1), got {self.death_rate}")
        if not 0.0 <= self.death_rate_final <= self.death_rate:
            raise ConfigError(f"final death rate must be in [0, death rate = {self.death_rate}], got "
                              f"{self.death_rate_final}")
        if self.update_every < 0:
            raise ConfigError(f"update_every must be >= 0, got {self.update_every}")
        if self.threshold < 0:
            raise ConfigError(f"threshold must be >= 0, got {self.threshold}")

    @property
    def sparse(self) -> bool:
        return self.density < 1.0

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "DSTConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown DST field(s): {', '.join(sorted(unknown))}")
        return cls(**d)
