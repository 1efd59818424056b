"""The RHN recurrence: rhn_recurrence (all T x depth micro-steps in one op, forward and
backward) and its plain-torch reference."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from lshx.ops.native import HAS_EXTENSION, use_native, cuda_version

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
    if use_native() and _rhn_has_kernel(xp):
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
