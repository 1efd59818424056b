"""The loop of Eq. 1, once, for every way of stepping a recurrence (lshx's own models,
torch.nn RNNs, step functions); it owns the QR choice and the re-orthonormalization interval.

B^0 = I (N x k); per counted step J^t B^{t-1}; every m steps (or at the adaptive rule's
interval) B, R = qr(J^t ... J^{t-m+1} B), and log|R_ii| is added: in exact arithmetic the
diagonal of the R of the product is the product of the per-step diagonals, so any m gives the
same exponents, and m > 1 divides the QR's cost by m (Engelken, Wolf & Abbott 2023's
re-orthonormalization interval). The first `warmup` steps only advance the state
("advance"), or also propagate B and re-orthonormalize it at every step without counting
("orthonormalize": the authors' aligned warm-up); counting starts from B after the warm-up.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Union

import torch

from lshx.errors import ConfigError
from lshx.lyapunov.config import AUTO, WARMUP_MODES, check_reorth
from lshx.lyapunov.qr import AUTO_MAX, alive_columns, interval_held, next_interval, qr_function


class Exponents(NamedTuple):
    """What the loop measured over K windows: per window and column of B (unsorted) the sum of
    log|R_ii| over the counted steps, their number, and the QRs taken (discarded ones included)."""
    sums: torch.Tensor
    counted: int
    qrs: int

    def per_sample(self) -> torch.Tensor:
        """(K, k) exponents per window, natural log per counted step."""
        return self.sums / self.counted

    def mean(self) -> torch.Tensor:
        """(k,) exponents averaged over the windows: the sums added over the windows first, then
        divided once by K x steps. Every stored spectrum was computed in this order, and float32
        rounds the other order (per window, then averaged) differently in the last bit: a run
        retrained from a table must give the table's numbers to the bit (scripts/check_retrain.py)."""
        return self.sums.sum(0) / (self.sums.shape[0] * self.counted)


def run(advance: Callable, tangent: Callable, state, K: int, steps: int, N: int, k: int, like: torch.Tensor, *,
        warmup: int = 0, warmup_mode: str = "advance", qr: str = "householder",
        reorth_every: Union[int, str] = 1) -> Exponents:
    """Eq. 1 over steps 0..steps-1 of a recurrence given by advance(state, t) -> state and
    tangent(state, t, B) -> (state, J B), both pure (the adaptive interval may step an interval
    again from its start)."""
    if warmup_mode not in WARMUP_MODES:
        raise ConfigError(f"unknown warmup_mode {warmup_mode!r}; allowed: {', '.join(WARMUP_MODES)}")
    reorth_every = check_reorth(reorth_every)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ConfigError(f"warmup must be an integer >= 0, got {warmup!r}")
    counted = steps - warmup
    if counted < 1:
        raise ConfigError(f"{steps} steps leave none to count after {warmup} warm-up steps")
    if not 1 <= k <= N:
        raise ConfigError(f"k must be in [1, N = {N}], got {k}")
    qrf = qr_function(qr, like)
    B = torch.eye(N, k, dtype=like.dtype, device=like.device).expand(K, N, k).contiguous()
    for t in range(warmup):
        if warmup_mode == "advance":
            state = advance(state, t)
        else:  # the aligned warm-up: propagated and re-orthonormalized, not counted
            state, JB = tangent(state, t, B)
            B = qrf(JB.detach())[0]
    acc = torch.zeros(K, k, dtype=like.dtype, device=like.device)
    auto = reorth_every == AUTO
    interval, longest = (1, AUTO_MAX) if auto else (reorth_every, reorth_every)
    alive = torch.ones(K, k, dtype=torch.bool, device=like.device)
    since, qrs, t = 0, 0, warmup
    start = (state, B, t)
    while t < steps:
        state, JB = tangent(state, t, B)
        JB = JB.detach()
        since += 1
        if since >= interval or t == steps - 1:
            Q, logr = qrf(JB)
            qrs += 1
            if auto and since > 1 and not interval_held(logr, alive, Q.dtype):
                # the spread grew inside the interval: redo it with a QR at every step, and
                # never again take an interval as long as this one
                state, B, t = start
                longest, interval, since = max(1, since // 2), 1, 0
                continue
            B, acc = Q, acc + logr
            if auto:
                alive = alive_columns(logr)
                interval = next_interval(logr, since, B.dtype, longest)
            since = 0
            start = (state, B, t + 1)
        else:
            B = JB
        t += 1
    return Exponents(acc, counted, qrs)
