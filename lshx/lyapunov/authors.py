"""The authors' algorithm for one Lyapunov step of a stacked LSTM, written again as a timing
baseline (lshx bench ls-step); not used to compute spectra.

What the released code (FATE4869/hyperpruning, sources/lyapunov.py) does per step, as
described in DESIGN.md section 4: every gate derivative becomes a dense diagonal matrix
(torch.diag_embed of the whole 4H pre-activation vector, then its H x H gate block), each
Jacobian block is a chain of dense (H x H) @ (H x H) products of those diagonal matrices with
the weight blocks, the cross-layer block is a dense product of two such blocks, the full
(N x N) J is assembled, B is propagated by J^T (Z = J^T Q), and Z is factored by
torch.linalg.qr with the signs of diag R moved into Q by two more dense products. The state
is h (c held fixed), as theirs. Everything is batched over the K samples; float32.
"""
from __future__ import annotations

from typing import Tuple

import torch

from lshx import ops
from lshx.models import LSTMLM


def _diag(v: torch.Tensor) -> torch.Tensor:
    return torch.diag_embed(v)


class AuthorsLSTMStep:
    def __init__(self, model: LSTMLM) -> None:
        self.model = model
        self.L, self.H = model.num_layers, model.hidden_size
        self.W, self.b = model.rnn.step_weights(model.rnn_masks())
        self.emb = ops.masked_weight(model.encoder.weight.detach(), model.masks.get("encoder.weight"))

    def jacobian(self, x: torch.Tensor, state) -> torch.Tensor:
        """(K, N, N): dh_t / dh_{t-1} for the stacked state [h_0, ..., h_{L-1}], c held fixed."""
        H, L = self.H, self.L
        h_prev, c_prev = state
        K = x.size(0)
        J = x.new_zeros(K, L * H, L * H)
        gi, gf, gg, go = (slice(j * H, (j + 1) * H) for j in range(4))
        inp = x
        for l in range(L):
            w_ih, w_hh = self.W[l]
            y = inp @ w_ih.t() + h_prev[l] @ w_hh.t() + self.b[l]  # (K, 4H) pre-activations
            s = torch.sigmoid(y)
            d_sp, d_s = _diag(s * (1 - s)), _diag(s)  # (K, 4H, 4H) each, as the released code builds them
            d_t, d_sech2 = _diag(torch.tanh(y)), _diag(1 - torch.tanh(y) ** 2)
            c = s[:, gf] * c_prev[l] + s[:, gi] * torch.tanh(y[:, gg])
            tc = torch.tanh(c)

            def block(w):  # dh/d(input of w): the chain of dense diagonal products
                a1 = (d_sp[:, gf, gf] @ _diag(c_prev[l])) @ w[gf]
                a2 = (d_sp[:, gi, gi] * d_t[:, gg, gg]) @ w[gi]
                a3 = (d_s[:, gi, gi] * d_sech2[:, gg, gg]) @ w[gg]
                b_o = (d_sp[:, go, go] * tc.unsqueeze(1)) @ w[go]
                c_o = d_s[:, go, go] @ _diag(1 - tc ** 2)
                return c_o @ (a1 + a2 + a3) + b_o

            J[:, l * H:(l + 1) * H, l * H:(l + 1) * H] = block(w_hh)
            if l > 0:
                j_x = block(w_ih)
                for m in range(l, 0, -1):
                    J[:, l * H:(l + 1) * H, (m - 1) * H:m * H] = j_x @ J[:, (l - 1) * H:l * H, (m - 1) * H:m * H]
            inp = s[:, go] * tc
        return J

    def step(self, tok: torch.Tensor, state, Q: torch.Tensor) -> Tuple[tuple, torch.Tensor, torch.Tensor]:
        """(the next state, the next Q, log|diag R|): Z = J^T Q, Z = q r, signs of r moved into q."""
        x = torch.nn.functional.embedding(tok, self.emb)
        J = self.jacobian(x, state)
        new_state = self.model.rnn.step_with(x, state, self.W, self.b)[0]
        Z = J.transpose(1, 2) @ Q
        q, r = torch.linalg.qr(Z)
        sign = _diag(torch.sign(torch.diagonal(r, dim1=1, dim2=2)))
        return new_state, q @ sign, torch.diagonal(sign @ r, dim1=1, dim2=2).log()
