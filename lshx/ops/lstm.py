"""The sparse LSTM recurrence: lstm_recurrence (inference, W_hh in CSR form, all steps in
one op), use_sparse_recurrence (where it is taken) and persistent_fits (CUDA)."""
from __future__ import annotations

from typing import Optional

import torch

from lshx.ops.csr import CSR_MIN_NUMEL, csr_structure, csr_values, mask_density
from lshx.ops.masked import mask_as
from lshx.ops.native import HAS_EXTENSION, cached, cuda_version, needs_grad, use_native

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
    return cached("persistent-fits", (mask,), compute)


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
    if use_native():
        return torch.ops.lshx.lstm_recurrence(xproj, h0, c0, s.crow, s.col, csr_values(w_hh, mask, s))
    return lstm_recurrence_ref(xproj, h0, c0, w_hh.detach() * mask_as(mask, w_hh.dtype))


def use_sparse_recurrence(w_hh: torch.Tensor, mask: Optional[torch.Tensor], *inputs: torch.Tensor) -> bool:
    """Whether an LSTM layer's inference goes through lstm_recurrence (see the limits above):
    never when W_hh or any of the layer's `inputs` needs a gradient (the op has no backward)."""
    if mask is None or needs_grad(w_hh, *inputs) or not use_native():
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
