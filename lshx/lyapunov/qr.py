"""The QR choices of the Lyapunov loop and the adaptive re-orthonormalization interval.

Each QR function maps J.B, a (K, N, k) batch, to (Q, log|diag R|), |R_ii| floored at the
dtype's smallest normal number: never -inf. A direction a masked-out unit annihilates reads
log(tiny) only where its R_ii is exactly 0 (the first QR from B = I); later it reads the
rounding left in it, about log(eps * |J|), which depends on the dtype and the QR (around -9
in float32, -30 in float64).
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
# the most the interval grows from one QR to the next
GROWTH = 4


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


def magnitude_nats(dtype: torch.dtype) -> float:
    """How far (in nats) a column's norm may grow or shrink between QRs: half the way from 1
    to the dtype's smallest normal number, so that no column under- or overflows (a column
    that underflows reads as annihilated and its exponent is lost)."""
    return 0.5 * abs(math.log(torch.finfo(dtype).tiny))


# how far past its budget an interval may turn out before it is redone at m = 1 (the rule
# predicts from the last interval; a spread that grows inside one shows at its closing QR)
CHECK_SLACK = 1.25


def _floor(dtype: torch.dtype) -> float:
    return math.log(torch.finfo(dtype).tiny) + 1.0


def alive_columns(logr: torch.Tensor) -> torch.Tensor:
    """The columns above the floor (log|R_ii| = log(tiny): annihilated or underflowed)."""
    return logr > _floor(logr.dtype)


def interval_held(logr: torch.Tensor, alive_before: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether an interval of several steps, closed by the QR that gave `logr`, stayed within
    what `dtype` resolves: every log|R_ii| finite, no column that was alive at the last QR
    now at the floor (it underflowed), the columns' total spread within CHECK_SLACK times
    resolvable_nats and their growth within CHECK_SLACK times magnitude_nats. Otherwise the
    loop redoes the interval with a QR at every step."""
    if not bool(torch.isfinite(logr).all()):
        return False
    alive = alive_columns(logr)
    if bool((alive_before & ~alive).any()):
        return False
    g = logr.double()
    top = g.masked_fill(~alive, -math.inf).max(dim=1).values
    low = g.masked_fill(~alive, math.inf).min(dim=1).values
    some = alive.any(dim=1)
    if not bool(some.any()):
        return True
    spread = float((top - low)[some].max())
    size = float(g.abs().masked_fill(~alive, 0).max())
    return spread <= CHECK_SLACK * resolvable_nats(dtype) and size <= CHECK_SLACK * magnitude_nats(dtype)


def next_interval(logr: torch.Tensor, m: int, dtype: torch.dtype, longest: int = AUTO_MAX) -> int:
    """The adaptive rule: how many steps to multiply B by the Jacobians before the next QR.

    logr: (K, k) log|R_ii| of the QR that closed an interval of m steps, so logr / m is each
    column's growth per step. Over the next interval the columns' growth must stay within
    resolvable_nats(dtype) of each other, or the smaller ones are lost in rounding: m' =
    floor(resolvable / spread), spread = the largest per-step growth minus the smallest,
    per sample, the worst sample deciding. Columns at the floor (log|R_ii| = log(tiny): a
    direction already annihilated, whose exponent is -inf in exact arithmetic) are left
    out of the spread: nothing more of them can be lost. No column's norm may move by more
    than magnitude_nats(dtype) either (a spectrum of one column, or of columns that all decay
    fast, has no spread but underflows). The interval grows at most GROWTH-fold from one QR to
    the next (a spread measured over a short interval, such as the first step from B = I,
    before the columns align with the dynamics, can read smaller than it is), and the loop
    checks each interval after the fact (interval_held) and redoes one that did not hold."""
    g = (logr / m).double()
    alive = alive_columns(logr)
    top = g.masked_fill(~alive, -math.inf).max(dim=1).values
    low = g.masked_fill(~alive, math.inf).min(dim=1).values
    spread = (top - low)[alive.any(dim=1)]
    if spread.numel() == 0:
        return 1
    cap = min(longest, GROWTH * m)
    worst = float(spread.max())
    if worst > 0:
        cap = min(cap, int(resolvable_nats(dtype) // worst))
    size = float(g.abs().masked_fill(~alive, 0).max())
    if size > 0:
        cap = min(cap, int(magnitude_nats(dtype) // size))
    return max(1, cap)
