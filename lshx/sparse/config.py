"""DSTConfig: every dynamic-sparse-training control in one validated, JSON-able object."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from lshx.errors import ConfigError

INITS = ("uniform", "ER")
# SET-original: Selfish-RNN's SET rule (removes the most negative weights), to reproduce its
# numbers; not in the search space (lshx/search/space.py lists the deaths it searches)
DEATHS = ("magnitude", "SET", "threshold", "global_magnitude", "SET-original")
GROWTHS = ("random",)
REDISTRIBUTIONS = ("magnitude", "nonzeros", "none")


@dataclass(frozen=True)
class DSTConfig:
    density: float = 0.33
    init: str = "uniform"
    death: str = "magnitude"
    growth: str = "random"
    redistribution: str = "none"
    death_rate: float = 0.5
    death_rate_final: float = 0.005  # cosine decay target
    update_every: int = 0  # 0: one topology update per epoch; N > 0: every N optimizer steps
    threshold: float = 1e-3  # 'threshold' death: the starting threshold (adapted to the death rate)

    def __post_init__(self) -> None:
        for name, allowed in (("init", INITS), ("death", DEATHS), ("growth", GROWTHS),
                              ("redistribution", REDISTRIBUTIONS)):
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")
        if not 0.0 < self.density <= 1.0:
            raise ConfigError(f"density must be in (0, 1], got {self.density}")
        if not 0.0 <= self.death_rate < 1.0:
            raise ConfigError(f"death rate must be in [0, 1), got {self.death_rate}")
        if not 0.0 <= self.death_rate_final <= max(self.death_rate, 1e-12) or self.death_rate_final > 1:
            raise ConfigError(f"final death rate must be in [0, death rate], got {self.death_rate_final}")
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
