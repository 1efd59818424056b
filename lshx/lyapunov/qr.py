"""The QR choices of the Lyapunov loop and the adaptive re-orthonormalization interval.

Each QR function maps J.B, a (K, N, k) batch, to (Q, log|diag R|), |R_ii| floored at the
dtype's smallest normal number (a direction a masked-out unit annihilates counts
log(tiny), never -inf).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from lshx import ops
from lshx.errors import ConfigError
from lshx.lyapunov.config import QR_METHODS

# the longest interval the adaptive rule takes (a guard: the rule itself stops far earlier
# for a spectrum of any spread)
AUTO_MAX = 16


def qr_function(method: str, like: torch.Tensor) -> Callable:
    """The op behind a QR method name for tensors like `like` (the CUDA kernels take float32)."""
    if method not in QR_METHODS:
        raise ConfigError(f"unknown qr {method!r}; allowed: {', '.join(QR_METHODS)}")
    if method == "cholqr2":
        return ops.cholqr2  # (float64 inside, any device)
    if like.is_cuda and like.dtype != torch.float32:
        return ops.lyapunov_step_ref
    return ops.householder_qr if method == "batched" else ops.lyapunov_step


def resolvable_nats(dtype: torch.dtype) -> float:
    """How far apart (in nats) two columns' growth may drift between QRs before the smaller
    one's direction is lost in the dtype: half the dtype's precision, log(1/eps) / 2, so that
    the relative error of the smaller R_ii stays near sqrt(eps) (3e-4 in float32, 1e-8 in
    float64)."""
    return 0.5 * math.log(1.0 / torch.finfo(dtype).eps)


def next_interval(logr: torch.Tensor, m: int, dtype: torch.dtype, longest: int = AUTO_MAX) -> int:
    """The adaptive rule: how many steps to multiply B by the Jacobians before the next QR.

    logr: (K, k) log|R_ii| of the QR that closed an interval of m steps, so logr / m is each
    column's growth per step. Over the next interval the columns' growth must stay within
    resolvable_nats(dtype) of each other, or the smaller ones are lost in rounding: m' =
    floor(resolvable / spread), spread = the largest per-step growth minus the smallest,
    per sample, the worst sample deciding. Columns at the floor (log|R_ii| = log(tiny): a
    direction already annihilated, whose exponent is -inf in exact arithmetic) are left
    out of the spread: nothing more of them can be lost. The interval at most doubles from one
    QR to the next: a spread measured over a short interval (the first steps from B = I, before
    the columns align with the dynamics) can read far smaller than it is."""
    floor = math.log(torch.finfo(logr.dtype).tiny) + 1.0
    g = (logr / m).double()
    alive = logr > floor
    top = g.masked_fill(~alive, -math.inf).max(dim=1).values
    low = g.masked_fill(~alive, math.inf).min(dim=1).values
    spread = (top - low)[alive.any(dim=1)]
    if spread.numel() == 0:
        return 1
    worst = float(spread.max())
    cap = min(longest, 2 * m)
    if worst <= 0:
        return cap
    return max(1, min(cap, int(resolvable_nats(dtype) // worst)))
