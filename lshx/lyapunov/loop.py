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

from typing import Callable, Tuple, Union

import torch

from lshx.errors import ConfigError
from lshx.lyapunov.config import AUTO, WARMUP_MODES, check_reorth
from lshx.lyapunov.qr import next_interval, qr_function


def run(advance: Callable, tangent: Callable, state, K: int, steps: int, N: int, k: int, like: torch.Tensor, *,
        warmup: int = 0, warmup_mode: str = "advance", qr: str = "householder",
        reorth_every: Union[int, str] = 1) -> Tuple[torch.Tensor, int]:
    """Eq. 1 over steps 0..steps-1 of a recurrence given by advance(state, t) -> state and
    tangent(state, t, B) -> (state, J B). Returns ((K, k) exponents per sample, natural log
    per counted step, unsorted: column order of B; the number of QRs taken)."""
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
    acc = torch.zeros(K, k, dtype=like.dtype, device=like.device)
    interval = 1 if reorth_every == AUTO else reorth_every
    since, qrs = 0, 0
    for t in range(steps):
        if t < warmup and warmup_mode == "advance":
            state = advance(state, t)
            continue
        state, JB = tangent(state, t, B)
        JB = JB.detach()
        if t < warmup:  # the aligned warm-up: propagated and re-orthonormalized, not counted
            B = qrf(JB)[0]
            continue
        since += 1
        if since >= interval or t == steps - 1:
            B, logr = qrf(JB)
            acc += logr
            qrs += 1
            if reorth_every == AUTO:
                interval = next_interval(logr, since, B.dtype)
            since = 0
        else:
            B = JB
    return acc / counted, qrs
