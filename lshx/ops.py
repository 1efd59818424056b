"""The only door to the native ops of lshx._C, with pure-torch fallbacks.

When the extension cannot be loaded, every op falls back to its reference below and one
warning says so. The references are also what the tests compare the native kernels with.
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch
import torch.nn.functional as F

try:
    from lshx import _C  # noqa: F401  (registers torch.ops.lshx.*)

    HAS_EXTENSION = True
    _LOAD_ERROR: Optional[str] = None
except ImportError as exc:  # pragma: no cover - exercised only without a build
    HAS_EXTENSION = False
    _LOAD_ERROR = str(exc)

_warned = False


def _native() -> bool:
    global _warned
    if not HAS_EXTENSION and not _warned:
        warnings.warn(f"lshx._C is not built ({_LOAD_ERROR}); using the pure-torch reference ops", stacklevel=3)
        _warned = True
    return HAS_EXTENSION


def cuda_version() -> int:
    """CUDA runtime version the extension was built with, -1 for a CPU-only build."""
    return int(torch.ops.lshx.cuda_version()) if HAS_EXTENSION else -1


# ----------------------------------------------------------------------------- masked_linear
class _MaskedLinearRef(torch.autograd.Function):
    """x @ (w*m)^T + b whose weight gradient is the dense one, like the native op."""

    @staticmethod
    def forward(ctx, x, weight, mask, bias):
        ctx.save_for_backward(x, weight, mask)
        ctx.has_bias = bias is not None
        return F.linear(x, weight * mask.to(weight.dtype), bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight, mask = ctx.saved_tensors
        gx, gw, gb = masked_linear_backward_ref(grad, x, weight, mask, ctx.has_bias)
        return gx, gw, None, gb


def masked_linear_backward_ref(grad, x, weight, mask, has_bias):
    """Reference backward: (grad_x, dense grad_w, grad_b or None)."""
    we = weight * mask.to(weight.dtype)
    g2 = grad.reshape(-1, weight.shape[0])
    x2 = x.reshape(-1, weight.shape[1])
    return (g2 @ we).reshape(x.shape), g2.t() @ x2, (g2.sum(0) if has_bias else None)


def masked_linear_ref(x, weight, mask, bias=None):
    return _MaskedLinearRef.apply(x, weight, mask, bias)


def masked_linear(x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor,
                  bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """y = x @ (weight * mask)^T + bias; d/dweight is the dense gradient (growth may use it)."""
    if _native():
        return torch.ops.lshx.masked_linear(x, weight, mask, bias)
    return masked_linear_ref(x, weight, mask, bias)


def linear(x: torch.Tensor, weight: torch.Tensor, mask: Optional[torch.Tensor],
           bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """masked_linear when a mask is given, the plain dense linear map otherwise."""
    return F.linear(x, weight, bias) if mask is None else masked_linear(x, weight, mask, bias)


class _MaskedWeight(torch.autograd.Function):
    """weight * mask whose backward passes the gradient through unmasked (straight-through),
    so a weight used many times (a recurrence) gets the same dense gradient as masked_linear."""

    @staticmethod
    def forward(ctx, weight, mask):
        return weight * mask.to(weight.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def masked_weight(weight: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """weight * mask with the dense weight gradient; weight itself when there is no mask."""
    if mask is None:
        return weight
    if not weight.requires_grad or not torch.is_grad_enabled():
        return weight * mask.to(weight.dtype)
    return _MaskedWeight.apply(weight, mask)


if HAS_EXTENSION:

    @torch.library.register_fake("lshx::masked_linear")
    def _(x, weight, mask, bias):
        return x.new_empty((*x.shape[:-1], weight.shape[0]))

    @torch.library.register_fake("lshx::masked_linear_backward")
    def _(grad, x, weight, mask, has_bias):
        gb = grad.new_empty((weight.shape[0],)) if has_bias else None
        return x.new_empty(x.shape), weight.new_empty(weight.shape), gb

    def _ml_setup(ctx, inputs, output):
        x, weight, mask, bias = inputs
        ctx.save_for_backward(x, weight, mask)
        ctx.has_bias = bias is not None

    def _ml_backward(ctx, grad):
        x, weight, mask = ctx.saved_tensors
        gx, gw, gb = torch.ops.lshx.masked_linear_backward(grad, x, weight, mask, ctx.has_bias)
        return gx, gw, None, gb

    torch.library.register_autograd("lshx::masked_linear", _ml_backward, setup_context=_ml_setup)


# ----------------------------------------------------------------------------- Lyapunov step
def row_combine_ref(w, coef, diag=None):
    """out[s, j, :] = sum_g coef[s, g, j] * w[g*H + j, :] (+ diag on the diagonal)."""
    K, G, H = coef.shape
    out = (coef.unsqueeze(-1) * w.view(G, H, -1).unsqueeze(0)).sum(1)
    if diag is not None and diag.numel() > 0:
        out = out + torch.diag_embed(diag)  # reference only: the native kernel adds in place
    return out


def lyapunov_step_ref(jb):
    q, r = torch.linalg.qr(jb, mode="reduced")
    return q, r.diagonal(dim1=-2, dim2=-1).abs().log()


def row_combine(w: torch.Tensor, coef: torch.Tensor, diag: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Jacobian block sum_g diag(coef[:, g]) @ W_g (+ diag(diag)) for a batch of K samples."""
    if _native():
        return torch.ops.lshx.row_combine(w, coef, w.new_empty(0) if diag is None else diag)
    return row_combine_ref(w, coef, diag)


def lyapunov_step(jb: torch.Tensor):
    """Q, log|diag R| of the batched reduced QR of jb (K, N, k)."""
    if _native():
        return torch.ops.lshx.lyapunov_step(jb)
    return lyapunov_step_ref(jb)


if HAS_EXTENSION:

    @torch.library.register_fake("lshx::row_combine")
    def _(w, coef, diag):
        K, G, H = coef.shape
        return w.new_empty((K, H, w.shape[1]))

    @torch.library.register_fake("lshx::lyapunov_step")
    def _(jb):
        K, N, k = jb.shape
        return jb.new_empty((K, N, k)), jb.new_empty((K, k))
