"""What a Lyapunov spectrum computation takes (LSConfig) and gives (LSResult)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import List, Optional, Union

from lshx.errors import ConfigError

STATES = ("h", "hc")
PROPAGATE = ("J", "JT")
IMPLS = ("fast", "reference")
WARMUP_MODES = ("advance", "orthonormalize")
QR_METHODS = ("householder", "cholqr2", "batched")
TANGENT_DTYPES = ("float32", "float64")
AUTO = "auto"
# fields added to LSConfig after run DBs were written, with the value that reproduces what came
# before: left out of an evaluation's key at that value, so the keys of old DBs stay valid
ADDED_DEFAULTS = {"tangent_dtype": None}


def check_reorth(value) -> Union[int, str]:
    """reorth_every: an integer m >= 1 (QR every m counted steps) or "auto" (the adaptive rule)."""
    if value == AUTO:
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"reorth_every must be an integer >= 1 or 'auto', got {value!r}")
    return value


@dataclass(frozen=True)
class LSConfig:
    samples: int = 2
    steps: int = 35
    warmup: int = 10
    warmup_mode: str = "advance"  # advance the state only, or also propagate and re-orthonormalize B
    state: str = "h"  # h: c held fixed (as the authors); hc: the full LSTM state
    k: Optional[int] = None  # number of exponents (default: all N)
    log_base: str = "e"
    propagate: str = "J"  # J: B <- J.B (Eq. 1); JT: B <- J^T.B (the authors' released code)
    seed: Optional[int] = None  # None: the first windows of the split; int: windows drawn by seed
    impl: str = "fast"
    # QR every m counted steps (B multiplied by the Jacobians in between: exact in exact
    # arithmetic, see docs/lyapunov.md for the accuracy), or "auto": m from the last QR's
    # spread of exponents and the dtype (lshx.lyapunov.qr.next_interval)
    reorth_every: Union[int, str] = 1
    # householder: LAPACK / cuSOLVER; cholqr2: CholeskyQR2 in float64 (shifted CholeskyQR3,
    # then Householder, where Cholesky breaks down); batched: lshx's one-block-per-sample
    # Householder kernel (CUDA)
    qr: str = "householder"
    # J.B and the QR in this dtype (None: the model's). The forward pass stays in the model's
    # dtype: float32 weights with a float64 tangent bring the spectrum within 4e-7 of the
    # float64 computation (docs/lyapunov.md, accuracy), at about twice the tangent's cost
    tangent_dtype: Optional[str] = None

    def __post_init__(self) -> None:
        checks = [("state", STATES), ("propagate", PROPAGATE), ("impl", IMPLS), ("warmup_mode", WARMUP_MODES),
                  ("log_base", ("e", "2")), ("qr", QR_METHODS)]
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise ConfigError(f"unknown {name} {getattr(self, name)!r}; allowed: {', '.join(allowed)}")
        for name, low in (("samples", 1), ("steps", 1), ("warmup", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {v!r}")
        check_reorth(self.reorth_every)
        if self.tangent_dtype is not None and self.tangent_dtype not in TANGENT_DTYPES:
            raise ConfigError(f"unknown tangent_dtype {self.tangent_dtype!r}; allowed: {', '.join(TANGENT_DTYPES)}")
        if self.k is not None and (isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1):
            raise ConfigError(f"k must be an integer >= 1, got {self.k!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or not 0 <= self.seed <= 2 ** 32 - 1):
            raise ConfigError(f"seed must be an integer in [0, 2^32 - 1], got {self.seed!r}")


@dataclass
class LSResult:
    spectrum: List[float]
    max: float
    mean: float
    var: float
    tokens: List[List[int]]
    config: dict = field(default_factory=dict)
    wall_s: float = 0.0
    qr_steps: int = 0  # how many QRs the run took (fewer than the counted steps with reorth_every > 1)

    def to_dict(self) -> dict:
        return asdict(self)
