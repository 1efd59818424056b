"""The CSR path of masked_linear (csr_linear, taken where use_csr says) and the cached CSR
structure of a mask, which the sparse LSTM recurrence (lshx.ops.lstm) uses too."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from lshx.ops.native import HAS_EXTENSION, cached, use_native, needs_grad

# Low-density path on the CPU, chosen automatically by masked_linear where the benchmark
# (`lshx bench matmul`, benchmarks/RESULTS.md) shows it faster than the dense GEMM on the
# masked weight: inference below CSR_MAX_DENSITY, training (forward + backward) below
# CSR_TRAIN_MAX_DENSITY. In training its weight gradient is the masked one (zero off the
# mask): the dense gradient is what costs a dense GEMM, and random growth never reads it.
# `lshx bench matmul --path csr` (6000x1500, 2 threads): inference 2.3x dense at 0.1 and 1.1x
# at 0.2 with B=20, 1.3x at 0.1 and 0.6x at 0.2 with B=350; 0.12 is faster at every batch tried.
CSR_MAX_DENSITY = 0.12
# `lshx bench matmul --train --path csr`: forward + backward 0.75x dense at 0.1, 0.99x at 0.05
# (B=20): writing the dense weight gradient costs as much as the GEMM saved, so it stays off.
CSR_TRAIN_MAX_DENSITY = 0.0
# On CUDA (inference and training alike): off until `lshx bench matmul --device cuda --path
# csr [--train]` (benchmarks/gpu_check.sh) has measured the CSR kernels against cuBLAS.
CUDA_CSR_MAX_DENSITY: Optional[float] = None
CSR_MIN_NUMEL = 1 << 20


class CSRStructure:
    """Row pointers, column indices and the flat positions of a mask's nonzeros, and the
    same for the transposed matrix (built on first use: only the backward needs it)."""

    def __init__(self, mask: torch.Tensor) -> None:
        m = mask.to(torch.bool)
        self.shape = tuple(m.shape)
        flat = m.flatten().nonzero().squeeze(1)
        self.gather = flat
        self._index = torch.int32 if max(m.shape) < 2 ** 31 else torch.long
        self.col = (flat % m.shape[1]).to(self._index)
        counts = m.sum(1).to(torch.long)
        self.crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        self._transposed = None

    def transposed(self):
        """(tcrow, tcol, tperm): W^T in CSR form; its values are val[tperm]."""
        if self._transposed is None:
            rows, cols = self.gather // self.shape[1], self.gather % self.shape[1]
            tperm = torch.argsort(cols * self.shape[0] + rows)
            counts = torch.bincount(cols, minlength=self.shape[1])
            tcrow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
            self._transposed = (tcrow, rows[tperm].to(self._index), tperm)
        return self._transposed


def csr_structure(mask: torch.Tensor) -> CSRStructure:
    """Cached per mask object: the DST engine replaces masks at each topology update."""
    return cached("csr", (mask,), lambda: CSRStructure(mask))


def csr_values(weight: torch.Tensor, mask: torch.Tensor, s: CSRStructure) -> torch.Tensor:
    """The weight's values at the mask's nonzeros (CSR order), cached per (weight, mask) version."""
    return cached("csr-values", (weight, mask), lambda: weight.detach().flatten()[s.gather])


def mask_density(mask: torch.Tensor) -> float:
    """Fraction of nonzeros, cached per mask version (cheaper than building the CSR structure)."""
    return cached("density", (mask,), lambda: int(mask.count_nonzero()) / max(mask.numel(), 1))


def csr_linear_ref(x, crow, col, val, out_features, bias=None):
    w = torch.sparse_csr_tensor(crow, col, val, (out_features, x.shape[-1])).to_dense()
    return F.linear(x, w, bias)


def csr_linear_backward_ref(grad, x, crow, col, val, out_features):
    """Reference (grad_x, grad_W masked to the structure) of csr_linear, through dense copies."""
    w = torch.sparse_csr_tensor(crow, col, val, (out_features, x.shape[-1])).to_dense()
    on = torch.sparse_csr_tensor(crow, col, torch.ones_like(val), w.shape).to_dense()
    g2, x2 = grad.reshape(-1, out_features), x.reshape(-1, x.shape[-1])
    return (g2 @ w).reshape(x.shape), (g2.t() @ x2) * on


class _CSRLinear(torch.autograd.Function):
    """x @ (weight*mask)^T + b through the mask's CSR structure, forward and backward; the
    weight gradient is computed at the mask's nonzeros only (zero off the mask)."""

    @staticmethod
    def forward(ctx, x, weight, mask, bias):
        s = csr_structure(mask)
        val = weight.detach().flatten()[s.gather]
        ctx.save_for_backward(x, val)
        ctx.s, ctx.has_bias, ctx.out = s, bias is not None, weight.shape[0]
        return torch.ops.lshx.csr_linear(x, s.crow, s.col, val, bias)

    @staticmethod
    def backward(ctx, grad):
        x, val = ctx.saved_tensors
        s = ctx.s
        gx, gw = torch.ops.lshx.csr_linear_backward(grad.contiguous(), x, s.crow, s.col, val, *s.transposed())
        gb = grad.reshape(-1, ctx.out).sum(0) if ctx.has_bias else None
        return gx, gw, None, gb


def csr_linear(x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor,
               bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x @ (weight * mask)^T + bias through the mask's CSR structure. With autograd when a
    gradient is needed (masked weight gradient); otherwise the structure is cached per mask
    and the gathered values per (weight, mask) version."""
    s = csr_structure(mask)
    if not use_native():
        val = weight.flatten()[s.gather]
        return csr_linear_ref(x, s.crow, s.col, val, weight.shape[0], bias)
    if needs_grad(x, weight, bias):
        return _CSRLinear.apply(x, weight, mask, bias)
    return torch.ops.lshx.csr_linear(x, s.crow, s.col, csr_values(weight, mask, s), bias)


def use_csr(x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor) -> bool:
    """Whether masked_linear takes the CSR path: a large weight and a density below the
    measured break-even (on the CPU inference and training have their own)."""
    if weight.numel() < CSR_MIN_NUMEL:
        return False
    if weight.device.type == "cpu":
        limit = CSR_TRAIN_MAX_DENSITY if needs_grad(x, weight) else CSR_MAX_DENSITY
    elif weight.device.type == "cuda" and CUDA_CSR_MAX_DENSITY is not None:
        limit = CUDA_CSR_MAX_DENSITY
    else:
        return False
    return mask_density(mask) <= limit


if HAS_EXTENSION:

    @torch.library.register_fake("lshx::csr_linear")
    def _(x, crow, col, val, bias):
        return x.new_empty((*x.shape[:-1], crow.numel() - 1))

    @torch.library.register_fake("lshx::csr_linear_backward")
    def _(grad, x, crow, col, val, tcrow, tcol, tperm):
        return x.new_empty(x.shape), x.new_empty((crow.shape[0] - 1, x.shape[-1]))
