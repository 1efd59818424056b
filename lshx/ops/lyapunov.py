"""The ops of the Lyapunov step: row_combine (a Jacobian block from the gate vectors) and the
batched reduced QRs that return (Q, log|diag R|): lyapunov_step, cholqr2, householder_qr."""
from __future__ import annotations

from typing import Optional

import torch

from lshx.ops.native import HAS_EXTENSION, use_native


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
    """Jacobian block sum_g diag(coef[:, g]) @ W_g (+ diag(diag)) for a batch of K samples
    (the CUDA kernel takes float32: another dtype on CUDA, e.g. a float64 tangent, goes through
    the reference)."""
    if use_native() and not (w.is_cuda and w.dtype != torch.float32):
        return torch.ops.lshx.row_combine(w, coef, w.new_empty(0) if diag is None else diag)
    return row_combine_ref(w, coef, diag)


def lyapunov_step(jb: torch.Tensor):
    """Q, log|diag R| of the batched reduced QR of jb (K, N, k)."""
    if use_native():
        return torch.ops.lshx.lyapunov_step(jb)
    return lyapunov_step_ref(jb)


def cholqr2(jb: torch.Tensor):
    """Q, log|diag R| by CholeskyQR2 (GEMM-bound for k << N; Householder when ill-conditioned)."""
    if use_native():
        return torch.ops.lshx.cholqr2(jb)
    return lyapunov_step_ref(jb)


def householder_qr(jb: torch.Tensor):
    """Q, log|diag R| by lshx's unblocked batched Householder QR: on CUDA one block per
    sample (the many small blocks of a Lyapunov run); on the CPU the same algorithm, slower
    than LAPACK, kept so the tests pin the kernel's arithmetic down."""
    if use_native():
        return torch.ops.lshx.householder_qr(jb)
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
