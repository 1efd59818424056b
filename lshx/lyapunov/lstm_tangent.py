"""J.B for one step of a stacked LSTM, from the gate vectors: shared by lshx's LSTM and
torch.nn.LSTM (lshx.lyapunov.models, lshx.lyapunov.torch_nn).

For a layer with c held fixed, dh/dh_prev = sum_g diag(a_g) W_hh,g over the four gate row
blocks (a_i = a_c g i(1 - i), a_f = a_c c_prev f(1 - f), a_g = a_c i(1 - g^2),
a_o = o(1 - o) tanh c, a_c = o(1 - tanh^2 c)); row_combine builds each H x H block in O(H^2)
and J.B is one batched GEMM per block. Layer k's tangent feeds layer k + 1 at the same step
(J is block lower-triangular). The hc state adds the c rows: the same blocks without a_c,
plus diag(f) on the old c rows.
"""
from __future__ import annotations

import torch

from lshx import ops


def lstm_tangent(B: torch.Tensor, layers, W, H: int, hc: bool, combine=None) -> torch.Tensor:
    """layers: per layer (i, f, g, o, c_prev, c), the gates after their nonlinearities; W: per
    layer (w_ih, w_hh); hc False holds c fixed, True orders the state [h_0, c_0, h_1, c_1, ...];
    combine(w, coef): diag-weighted row combination (ops.row_combine by default)."""
    combine = combine or ops.row_combine
    width = 2 * H if hc else H
    rows, u = [], None
    for k, (i, f, g, o, c_prev, c) in enumerate(layers):
        tc = torch.tanh(c)
        a_i, a_f, a_g = g * i * (1 - i), c_prev * f * (1 - f), i * (1 - g * g)
        a_o, a_c = o * (1 - o) * tc, o * (1 - tc * tc)
        w_ih, w_hh = W[k]
        Bh = B[:, k * width: k * width + H]
        coef_h = torch.stack([a_c * a_i, a_c * a_f, a_c * a_g, a_o], dim=1)
        dh = torch.bmm(combine(w_hh, coef_h), Bh)
        if u is not None:
            dh = dh + torch.bmm(combine(w_ih, coef_h), u)
        if hc:
            Bc = B[:, k * width + H: (k + 1) * width]
            coef_c = torch.stack([a_i, a_f, a_g, torch.zeros_like(a_o)], dim=1)
            dc = torch.bmm(combine(w_hh, coef_c), Bh)
            if u is not None:
                dc = dc + torch.bmm(combine(w_ih, coef_c), u)
            dh = dh + (a_c * f).unsqueeze(-1) * Bc
            dc = dc + f.unsqueeze(-1) * Bc
            rows += [dh, dc]
        else:
            rows.append(dh)
        u = dh
    return torch.cat(rows, dim=1)
