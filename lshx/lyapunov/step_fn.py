"""The Lyapunov spectrum of any recurrence h <- step(h, x): lshx.lyapunov_spectrum_fn, its
Jacobian by torch.func (jacrev, vmapped over the K sequences), the loop lshx.lyapunov.loop.run.
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch

from lshx.errors import ConfigError
from lshx.lyapunov.loop import run
from lshx.lyapunov.torch_nn import check_qr, finish


def lyapunov_spectrum_fn(step: Callable, h0: torch.Tensor, inputs: torch.Tensor, *,
                         aux0: Optional[torch.Tensor] = None, warmup: int = 0, k: Optional[int] = None,
                         per_sample: bool = False, qr: str = "householder", reorth_every: Union[int, str] = "auto",
                         batch_first: bool = True) -> torch.Tensor:
    """Lyapunov spectrum of any recurrence h <- step(h, x), its Jacobian by torch.func.

    step maps one sequence's state h (N,) and input x (one step of one sequence, any shape)
    to the next state (N,); it must be a torch function torch.func can transform (no in-place
    writes to captured tensors, no .item(); torch's fused cells such as nn.LSTMCell have no
    batching rule). inputs: K independent sequences, (K, T, ...) with batch_first=True (the
    default), (T, K, ...) with batch_first=False (the layout of lyapunov_spectrum's modules).
    h0: (N,) shared by all sequences, or (K, N), floating point; step must return the next
    state in h0's dtype. With aux0, the signature is step(h, x, aux) -> (h, aux): aux is
    advanced but held fixed in the Jacobian (an LSTM's c with state="h"); aux0 is per sequence
    when its leading dimension is K, else shared by all sequences (a shared aux whose leading
    dimension is K must be expanded to (K, ...) by the caller), and step must return aux in
    aux0's per-sequence shape. Every mistake is one ConfigError that says which dimension is
    which. Returns what lyapunov_spectrum returns.
    """
    if not torch.is_tensor(inputs) or inputs.dim() < 2:
        raise ConfigError(f"inputs must be a tensor of K sequences of T steps, (K, T, ...) with batch_first=True "
                          f"or (T, K, ...) with batch_first=False; got {tuple(getattr(inputs, 'shape', ()))}")
    x = inputs.detach() if batch_first else inputs.detach().transpose(0, 1)
    K, T = x.shape[:2]
    layout = (f"inputs {tuple(inputs.shape)} read as K = {K} sequences of T = {T} steps"
              + (" (batch_first=True; pass batch_first=False for (T, K, ...) inputs)" if batch_first
                 else " (batch_first=False)"))
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ConfigError(f"warmup must be an integer >= 0, got {warmup!r}")
    if T - warmup < 1:
        raise ConfigError(f"{layout}: {T} steps leave none to count after {warmup} warm-up steps")
    check_qr(qr)
    if not torch.is_tensor(h0) or not h0.is_floating_point():
        raise ConfigError(f"h0 must be a floating-point tensor, got {getattr(h0, 'dtype', type(h0).__name__)}")
    h0 = h0.detach()
    if h0.dim() == 1:
        h0 = h0.expand(K, -1)
    if h0.dim() != 2 or h0.size(0) != K:
        raise ConfigError(f"h0 must be (N,) or (K, N) with K = {K} ({layout}), got {tuple(h0.shape)}")
    N = h0.size(1)
    if aux0 is None:
        state0 = h0.contiguous()

        def f(h, xt):  # (output to differentiate, next state)
            hn = step(h, xt)
            return hn, hn
    else:
        if not torch.is_tensor(aux0):
            raise ConfigError(f"aux0 must be a tensor, got {type(aux0).__name__}")
        a0 = aux0.detach()
        if a0.dim() == 0 or a0.size(0) != K:  # shared by all sequences: its own leading dimension says
            a0 = a0.expand(K, *a0.shape)
        state0 = (h0.contiguous(), a0.contiguous())

        def f(h, xt, a):
            hn, an = step(h, xt, a)
            return hn, (hn, an)

    fwd = torch.func.vmap(f)
    jac = torch.func.vmap(torch.func.jacrev(f, argnums=0, has_aux=True))  # J = dh'/dh, aux held fixed

    def args(s, t):
        return (s, x[:, t]) if aux0 is None else (s[0], x[:, t], s[1])

    def detach(s):
        return s.detach() if torch.is_tensor(s) else tuple(v.detach() for v in s)

    def advance(s, t):
        return detach(fwd(*args(s, t))[1])

    def tangent(s, t, B):
        J, new = jac(*args(s, t))
        return detach(new), torch.bmm(J.detach(), B)

    # one step forward first: a wrong shape or dtype gives one clear error, not a bmm's
    try:
        probe = advance(state0, 0)
    except RuntimeError as exc:
        raise _translated(exc, h0) from None
    hn = probe if aux0 is None else probe[0]
    if not torch.is_tensor(hn) or tuple(hn.shape) != (K, N):
        got = tuple(hn.shape[1:]) if torch.is_tensor(hn) else type(hn).__name__
        raise ConfigError(f"step must return the next state of shape (N,) = ({N},), got {got}")
    if hn.dtype != h0.dtype:
        raise ConfigError(f"step returns {hn.dtype} for a {h0.dtype} state h0: pass h0 in the dtype step "
                          f"computes in (h0.to({hn.dtype}))")
    if aux0 is not None and (not torch.is_tensor(probe[1]) or probe[1].shape != state0[1].shape):
        got = tuple(probe[1].shape[1:]) if torch.is_tensor(probe[1]) else type(probe[1]).__name__
        raise ConfigError(f"step must return aux of aux0's per-sequence shape {tuple(state0[1].shape[1:])}, got {got}")
    try:
        res = run(advance, tangent, state0, K, T, N, N if k is None else int(k), h0, warmup=warmup, qr=qr,
                  reorth_every=reorth_every)
    except RuntimeError as exc:
        raise _translated(exc, h0) from None
    return finish(res, per_sample)


def _translated(exc: RuntimeError, h0: torch.Tensor) -> Exception:
    """torch's errors from stepping, as the ConfigError the user can act on (others unchanged)."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "Batching rule not implemented" in msg or "vmap" in msg:
        return ConfigError(f"step cannot be transformed by torch.func ({msg}): torch's fused cells (nn.LSTMCell, "
                           f"nn.GRUCell, nn.RNNCell) have no batching rule; write the cell in torch ops (see "
                           f"docs/library.md, 'Any recurrence')")
    if "dtype" in msg or "scalar type" in msg or "Expected" in msg and "Double" in msg:
        return ConfigError(f"step failed on a {h0.dtype} state h0 ({msg}): if step computes in another dtype, "
                           f"pass h0 in that dtype (h0.double() for float64 weights)")
    return exc
