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
    """y = x @ (weight * mask)^T + bias; d/dweight is the dense gradient (growth may use it),
    except on the CSR path, taken where use_csr says it is faster."""
    if _native() and use_csr(x, weight, mask):
        return csr_linear(x, weight, mask, bias)
    return masked_linear_dense(x, weight, mask, bias)


def masked_linear_dense(x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor,
                        bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """masked_linear without the CSR path: a dense GEMM on the masked weight."""
    if _native():
        if not _needs_grad(x, weight, bias):  # inference: the masked weight is cached
            return F.linear(x, _cached_masked(weight, mask), bias)
        return torch.ops.lshx.masked_linear(x, weight, mask, bias)
    return masked_linear_ref(x, weight, mask, bias)


def _needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


_cache: dict = {}


def _cached(kind: str, tensors: tuple, compute):
    """compute(), recomputed only when one of `tensors` is replaced or edited in place (their
    version counters move with optimizer steps and topology updates); an entry dies with
    its tensors. The cached values must not hold references to those tensors."""
    import weakref

    key = (kind,) + tuple(id(t) for t in tensors)
    versions = tuple(t._version for t in tensors)
    hit = _cache.get(key)
    if hit is not None and all(r() is t for r, t in zip(hit[0], tensors)) and hit[1] == versions:
        return hit[2]
    value = compute()
    drop = (lambda _, k=key: _cache.pop(k, None))
    _cache[key] = (tuple(weakref.ref(t, drop) for t in tensors), versions, value)
    return value


def _cached_masked(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """weight * mask for inference, reused until the weight or the mask changes."""
    def compute():
        with torch.no_grad():
            return weight.detach() * mask_as(mask, weight.dtype)
    return _cached("masked", (weight, mask), compute)


def linear(x: torch.Tensor, weight: torch.Tensor, mask: Optional[torch.Tensor],
           bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """masked_linear when a mask is given, the plain dense linear map otherwise."""
    return F.linear(x, weight, bias) if mask is None else masked_linear(x, weight, mask, bias)


def mask_as(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The mask as a 0/1 tensor of `dtype`, cached per mask object and version: multiplying
    by it is ~7x faster than by a bool mask (measured: 0.66 ms against 5 ms, 1.6M weights)."""
    if mask.dtype == dtype:
        return mask
    return _cached(f"as-{dtype}", (mask,), lambda: mask.to(dtype))


class _MaskedWeight(torch.autograd.Function):
    """weight * mask whose backward passes the gradient through unmasked (straight-through),
    so a weight used many times (a recurrence) gets the same dense gradient as masked_linear."""

    @staticmethod
    def forward(ctx, weight, mask):
        return weight * mask_as(mask, weight.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def masked_weight(weight: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """weight * mask with the dense weight gradient; weight itself when there is no mask."""
    if mask is None:
        return weight
    if not weight.requires_grad or not torch.is_grad_enabled():
        return weight * mask_as(mask, weight.dtype)
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
    return q, r.diagonal(dim1=-2, dim2=-1).abs().clamp_min(torch.finfo(jb.dtype).tiny).log()


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

    def _qr_fake(jb):
        K, N, k = jb.shape
        return jb.new_empty((K, N, k)), jb.new_empty((K, k))

    # lyapunov_step, cholqr2 and householder_qr all map (K, N, k) to (Q, log|diag R|)
    for _name in ("lyapunov_step", "cholqr2", "householder_qr"):
        torch.library.register_fake(f"lshx::{_name}")(_qr_fake)


# ----------------------------------------------------------------------------- CSR path
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
    return _cached("csr", (mask,), lambda: CSRStructure(mask))


def _csr_values(weight: torch.Tensor, mask: torch.Tensor, s: CSRStructure) -> torch.Tensor:
    """The weight's values at the mask's nonzeros (CSR order), cached per (weight, mask) version."""
    return _cached("csr-values", (weight, mask), lambda: weight.detach().flatten()[s.gather])


def mask_density(mask: torch.Tensor) -> float:
    """Fraction of nonzeros, cached per mask version (cheaper than building the CSR structure)."""
    return _cached("density", (mask,), lambda: int(mask.count_nonzero()) / max(mask.numel(), 1))


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
    if not _native():
        val = weight.flatten()[s.gather]
        return csr_linear_ref(x, s.crow, s.col, val, weight.shape[0], bias)
    if _needs_grad(x, weight, bias):
        return _CSRLinear.apply(x, weight, mask, bias)
    return torch.ops.lshx.csr_linear(x, s.crow, s.col, _csr_values(weight, mask, s), bias)


def use_csr(x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor) -> bool:
    """Whether masked_linear takes the CSR path: a large weight and a density below the
    measured break-even (on the CPU inference and training have their own)."""
    if weight.numel() < CSR_MIN_NUMEL:
        return False
    if weight.device.type == "cpu":
        limit = CSR_TRAIN_MAX_DENSITY if _needs_grad(x, weight) else CSR_MAX_DENSITY
    elif weight.device.type == "cuda" and CUDA_CSR_MAX_DENSITY is not None:
        limit = CUDA_CSR_MAX_DENSITY
    else:
        return False
    return mask_density(mask) <= limit


# ----------------------------------------------------------------------------- CholeskyQR2
def cholqr2(jb: torch.Tensor):
    """Q, log|diag R| by CholeskyQR2 (GEMM-bound for k << N; Householder when ill-conditioned)."""
    if _native():
        return torch.ops.lshx.cholqr2(jb)
    return lyapunov_step_ref(jb)


# ----------------------------------------------------------------------------- batched Householder QR
def householder_qr(jb: torch.Tensor):
    """Q, log|diag R| by lshx's unblocked batched Householder QR: on CUDA one block per
    sample (the many small blocks of a Lyapunov run); on the CPU the same algorithm, slower
    than LAPACK, kept so the tests pin the kernel's arithmetic down."""
    if _native():
        return torch.ops.lshx.householder_qr(jb)
    return lyapunov_step_ref(jb)


# ----------------------------------------------------------------------------- sparse LSTM recurrence
# Inference of a sparse LSTM layer with W_hh in CSR form, all steps in one op. On the CPU a
# CSR SpMM per step, used where `lshx bench recurrence` measured it faster than the dense
# per-step recurrence (H = 1500, B = 20, 35 steps, 2 threads: 1.21x at density 0.1, 1.61x at
# 0.05, 0.77x at 0.2; slower at H = 200 whatever the density, hence CSR_MIN_NUMEL). On CUDA
# the persistent kernel (W_hh in shared memory across all steps), measured on an H200
# (benchmarks/RESULTS.md, 2026-11-28, H = 1500, B = 20, T = 35): 1.45x the per-step cuBLAS
# recurrence at density 0.05 and 0.1, 1.12x at 0.2, 1.06x at 0.25, 0.83-1.0x at 0.33, and
# 0.17x when the weights do not fit in shared memory (the global-memory path, density 0.5):
# used below PERSISTENT_MAX_DENSITY and only where the weights fit (persistent_fits).
RECURRENCE_CPU_MAX_DENSITY = 0.1
PERSISTENT_MAX_DENSITY: Optional[float] = 0.2


def persistent_fits(mask: torch.Tensor) -> bool:
    """Whether the persistent kernel keeps every block's W_hh rows in shared memory: the
    launcher's split (one block per multiprocessor, units evenly), its slice layout (4U + 1 row
    pointers, then a value and a column index per nonzero), the device's opt-in limit."""
    def compute():
        props = torch.cuda.get_device_properties(mask.device)
        limit = getattr(props, "shared_memory_per_block_optin", 227 * 1024)
        H = mask.shape[1]
        blocks = max(1, min(props.multi_processor_count, H))
        U = -(-H // blocks)
        rows = mask.sum(1).view(4, H).sum(0).cpu()  # nonzeros per unit, its four gate rows
        worst = max(int(rows[u0:u0 + U].sum()) for u0 in range(0, H, U))
        return 4 * (4 * U + 1) + 8 * worst <= limit
    return _cached("persistent-fits", (mask,), compute)


def lstm_recurrence_ref(xproj, h0, c0, w_hh):
    """T steps of an LSTM layer given the input projections (both biases included)."""
    h, c, outs = h0, c0, []
    for t in range(xproj.shape[0]):
        i, f, g, o = (xproj[t] + h @ w_hh.t()).chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outs.append(h)
    return torch.stack(outs), h, c


def lstm_recurrence(xproj: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, w_hh: torch.Tensor,
                    mask: torch.Tensor):
    """(out (T, B, H), h_T, c_T) of one LSTM layer with W_hh * mask in CSR form, no autograd.
    xproj (T, B, 4H) = x @ W_ih^T + b_ih + b_hh."""
    s = csr_structure(mask)
    if _native():
        return torch.ops.lshx.lstm_recurrence(xproj, h0, c0, s.crow, s.col, _csr_values(w_hh, mask, s))
    return lstm_recurrence_ref(xproj, h0, c0, w_hh.detach() * mask_as(mask, w_hh.dtype))


def use_sparse_recurrence(w_hh: torch.Tensor, mask: Optional[torch.Tensor], *inputs: torch.Tensor) -> bool:
    """Whether an LSTM layer's inference goes through lstm_recurrence (see the limits above):
    never when W_hh or any of the layer's `inputs` needs a gradient (the op has no backward)."""
    if mask is None or _needs_grad(w_hh, *inputs) or not _native():
        return False
    if w_hh.device.type == "cpu":
        limit = RECURRENCE_CPU_MAX_DENSITY if w_hh.numel() >= CSR_MIN_NUMEL else None
    else:
        limit = PERSISTENT_MAX_DENSITY if w_hh.device.type == "cuda" and cuda_version() > 0 else None
        if limit is not None and mask_density(mask) <= limit and not persistent_fits(mask):
            return False
    return limit is not None and mask_density(mask) <= limit


if HAS_EXTENSION:

    @torch.library.register_fake("lshx::lstm_recurrence")
    def _(xproj, h0, c0, crow, col, val):
        T, B, _ = xproj.shape
        return xproj.new_empty((T, B, h0.shape[-1])), h0.new_empty(h0.shape), c0.new_empty(c0.shape)

    @torch.library.register_fake("lshx::csr_linear")
    def _(x, crow, col, val, bias):
        return x.new_empty((*x.shape[:-1], crow.numel() - 1))

    @torch.library.register_fake("lshx::csr_linear_backward")
    def _(grad, x, crow, col, val, tcrow, tcol, tperm):
        return x.new_empty(x.shape), x.new_empty((crow.shape[0] - 1, x.shape[-1]))


# ----------------------------------------------------------------------------- RHN recurrence
# The RHN's training recurrence in one op, forward and backward. Measured on one small-preset
# batch (H = 200, depth 5, B = 10, T = 35; 1 thread, CPU time, 2026-11-28): the per-step loop
# runs ~13,700 aten ops and ~2,000 autograd nodes for its 175 micro-steps, 140 ms of which its
# GEMMs take 46 ms; the rest is per-op dispatch and autograd (the whole batch: ~290 ms, the
# tied decoder and the loss ~125 ms). The op keeps the GEMMs (one per micro-step forward, one
# backward, one per depth for each weight gradient) and fuses the gate math, forward and
# backward, into one loop (one CUDA kernel) per micro-step: 53-61 ms for the recurrence, 12
# autograd nodes. `lshx bench train-epoch ptb-rhn --preset small` (2 threads, loaded machine):
# loop_ms / lshx_ms = 2.13 (1404 / 660 ms), partly because the op keeps its tiny GEMMs on one
# thread (csrc/cpu/rhn_recurrence.cpp).
def rhn_recurrence_ref(xp, s0, weights, biases, drop=None):
    """T steps x D micro-steps of the coupled highway recurrence in plain torch ops (autograd
    through them): pre = (s * drop) @ W_d^T + b_d (+ xp_t when d = 0), h = tanh(pre[:, :H]),
    g = sigmoid(pre[:, H:]), s = h * g + s * (1 - g). Returns (out (T, B, H), s_T)."""
    H = s0.shape[-1]
    s, outs = s0, []
    for t in range(xp.shape[0]):
        for d, (w, b) in enumerate(zip(weights, biases)):
            pre = F.linear(s if drop is None else s * drop, w, b)
            if d == 0:
                pre = pre + xp[t]
            h, g = torch.tanh(pre[..., :H]), torch.sigmoid(pre[..., H:])
            s = h * g + s * (1 - g)
        outs.append(s)
    return (torch.stack(outs) if outs else xp.new_empty((0, *s0.shape))), s


def rhn_recurrence(xp: torch.Tensor, s0: torch.Tensor, weights, biases, drop: Optional[torch.Tensor] = None):
    """(out (T, B, H), s_T) of the RHN's recurrence given xp (T, B, 2H) = x @ W_ih^T + b_ih,
    the initial state s0 (B, H), the D recurrent weights (2H, H) as the model uses them (masked,
    or known to be zero off their masks), the D biases (2H) and the hidden-dropout mask (B, H)
    shared by every micro-step (None: no dropout). Differentiable in xp, s0, weights, biases;
    each weight gets the dense gradient of the weight as used (masked_weight passes it through)."""
    if _native() and _rhn_has_kernel(xp):
        out, s, _, _ = torch.ops.lshx.rhn_recurrence(xp, s0, list(weights), list(biases), drop)
        return out, s
    return rhn_recurrence_ref(xp, s0, list(weights), list(biases), drop)


def _rhn_has_kernel(xp: torch.Tensor) -> bool:
    """The native kernels: float32/float64 on the CPU, float32 on CUDA (a CUDA build); any
    other dtype or device takes the reference loop."""
    if xp.device.type == "cpu":
        return xp.dtype in (torch.float32, torch.float64)
    return xp.device.type == "cuda" and xp.dtype == torch.float32 and cuda_version() > 0


if HAS_EXTENSION:

    @torch.library.register_fake("lshx::rhn_recurrence")
    def _(xp, s0, weights, biases, drop):
        T, B, _ = xp.shape
        H, D = s0.shape[-1], len(weights)
        return (xp.new_empty((T, B, H)), xp.new_empty((B, H)), xp.new_empty((D, T, B, H)),
                xp.new_empty((D, T, B, 2 * H)))

    @torch.library.register_fake("lshx::rhn_recurrence_backward")
    def _(grad_out, grad_s, weights, drop, states, gates):
        D, T, B, H = states.shape
        return (gates.new_empty((T, B, 2 * H)), grad_s.new_empty((B, H)),
                [w.new_empty(w.shape) for w in weights], [w.new_empty((2 * H,)) for w in weights])

    def _rhn_setup(ctx, inputs, output):
        _, _, weights, _, drop = inputs
        _, _, states, gates = output
        ctx.mark_non_differentiable(states, gates)
        ctx.save_for_backward(states, gates, drop, *weights)

    def _rhn_backward(ctx, grad_out, grad_s, _grad_states, _grad_gates):
        states, gates, drop, *weights = ctx.saved_tensors
        gxp, gs0, gw, gb = torch.ops.lshx.rhn_recurrence_backward(grad_out, grad_s, weights, drop, states, gates)
        return gxp, gs0, list(gw), list(gb), None

    torch.library.register_autograd("lshx::rhn_recurrence", _rhn_backward, setup_context=_rhn_setup)
