"""A one-line progress display on stderr (only when stderr is a terminal, or forced)."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, desc: str = "", enabled: bool | None = None) -> None:
        self.total, self.desc, self.n = total, desc, 0
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.t0 = time.perf_counter()
        self.postfix = ""

    def update(self, n: int = 1, **postfix) -> None:
        self.n += n
        if postfix:
            self.postfix = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in postfix.items())
        if self.enabled:
            el = time.perf_counter() - self.t0
            eta = el / self.n * (self.total - self.n) if self.n else 0.0
            width = 24
            fill = int(width * self.n / max(self.total, 1))
            sys.stderr.write(f"\r{self.desc} [{'#' * fill}{'.' * (width - fill)}] {self.n}/{self.total} "
                             f"{el:.0f}s<{eta:.0f}s {self.postfix}\033[K")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def log(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)
