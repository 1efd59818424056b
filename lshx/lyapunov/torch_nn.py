"""The Lyapunov spectrum of a torch.nn.LSTM, GRU or RNN (tanh, relu), any number of layers,
batch_first either way: lshx.lyapunov_spectrum(rnn, inputs, ...).

Analytic Jacobians: every block sum_g diag(a_g) W_g comes from the gate vectors by
ops.row_combine (no autograd), the stacked layers walked in order (J is block
lower-triangular), batched over the K sequences; the LSTM's is lshx.lyapunov.lstm_tangent,
as for lshx's own models. The loop is lshx.lyapunov.loop.run.
"""
from __future__ import annotations

from typing import List, Optional, Tuple, Union

import torch
from torch import nn

from lshx import ops
from lshx.errors import ConfigError
from lshx.lyapunov.config import QR_METHODS
from lshx.lyapunov.loop import Exponents, run
from lshx.lyapunov.lstm_tangent import lstm_tangent

State = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]


def finish(res: Exponents, per_sample: bool) -> torch.Tensor:
    """The loop's measurement -> (K, k) exponents per sequence if per_sample, else (k,) averaged
    over the K sequences; sorted descending."""
    lam = res.per_sample() if per_sample else res.mean()
    return torch.sort(lam, dim=-1, descending=True).values


def check_qr(qr: str) -> None:
    if qr not in QR_METHODS:
        raise ConfigError(f"unknown qr {qr!r}; allowed: {', '.join(QR_METHODS)}")


def _kind(rnn: nn.Module) -> str:
    if isinstance(rnn, nn.LSTM):
        return "lstm"
    if isinstance(rnn, nn.GRU):
        return "gru"
    if isinstance(rnn, nn.RNN):
        return "rnn_" + rnn.nonlinearity
    raise ConfigError(f"lyapunov_spectrum takes torch.nn.LSTM, GRU or RNN, got {type(rnn).__name__}; "
                      "for any other recurrence use lyapunov_spectrum_fn(step, h0, inputs)")


def state_size(rnn: nn.Module, state: str = "h") -> int:
    """N, the length of the state whose spectrum is computed ('hc' doubles an LSTM's)."""
    n = rnn.num_layers * rnn.hidden_size
    return 2 * n if state == "hc" and isinstance(rnn, nn.LSTM) else n


class _ModuleSteps:
    """advance/tangent of a stacked torch RNN; states are lists of per-layer (K, H) tensors."""

    def __init__(self, rnn: nn.Module, x: torch.Tensor, state_kind: str) -> None:
        self.kind, self.hc = _kind(rnn), state_kind == "hc"
        self.L, self.H = rnn.num_layers, rnn.hidden_size
        # getattr: the effective weight, also under torch.nn.utils.prune (weight_orig * mask),
        # parametrize and weight_norm, where no parameter carries the name
        p = lambda name: getattr(rnn, name).detach()  # noqa: E731
        self.W, self.b = [], []
        for l in range(self.L):
            w_ih, w_hh = p(f"weight_ih_l{l}"), p(f"weight_hh_l{l}")
            zero = w_hh.new_zeros(w_hh.size(0))
            self.W.append((w_ih, w_hh))
            self.b.append((p(f"bias_ih_l{l}") if rnn.bias else zero, p(f"bias_hh_l{l}") if rnn.bias else zero))
        # layer 0's input projections of every step at once: (K, T, G*H)
        self.x0 = torch.matmul(x, self.W[0][0].t()) + self.b[0][0]
        self.combine = ops.row_combine

    # ---------------------------------------------------------------- forward
    def _layer(self, l: int, xp: torch.Tensor, h: torch.Tensor, c: Optional[torch.Tensor]):
        """One layer's step from its input projection xp; returns (h, c, info for J)."""
        w_hh, b_hh = self.W[l][1], self.b[l][1]
        hp = torch.addmm(b_hh, h, w_hh.t())
        if self.kind == "lstm":
            i, f, g, o = (xp + hp).chunk(4, dim=-1)
            i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
            cn = f * c + i * g
            hn = o * torch.tanh(cn)
            return hn, cn, (i, f, g, o, c, cn)
        if self.kind == "gru":
            xr, xz, xn = xp.chunk(3, dim=-1)
            hr, hz, hn_ = hp.chunk(3, dim=-1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            n = torch.tanh(xn + r * hn_)
            return (1 - z) * n + z * h, None, (r, z, n, hn_, h)
        pre = xp + hp
        if self.kind == "rnn_tanh":
            hn = torch.tanh(pre)
            return hn, None, (1 - hn * hn,)
        return torch.relu(pre), None, ((pre > 0).to(pre.dtype),)

    def step(self, state, t: int):
        hs, cs = state
        nh, nc, infos = [], [], []
        for l in range(self.L):
            xp = self.x0[:, t] if l == 0 else torch.addmm(self.b[l][0], nh[-1], self.W[l][0].t())
            h, c, info = self._layer(l, xp, hs[l], cs[l] if cs is not None else None)
            nh.append(h)
            nc.append(c)
            infos.append(info)
        return (nh, nc if cs is not None else None), infos

    def advance(self, state, t: int):
        return self.step(state, t)[0]

    # ---------------------------------------------------------------- tangent
    def _coefs(self, info) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
        """(coef of the W_hh blocks, diag added to J_hh, coef of the W_ih blocks)."""
        if self.kind == "gru":
            r, z, n, hn_, h = info
            dn = (1 - z) * (1 - n * n)
            a_r = dn * hn_ * r * (1 - r)
            a_z = (h - n) * z * (1 - z)
            return (torch.stack([a_r, a_z, dn * r], dim=1), z, torch.stack([a_r, a_z, dn], dim=1))
        d = info[0].unsqueeze(1)
        return d, None, d

    def tangent(self, state, t: int, B: torch.Tensor):
        new_state, infos = self.step(state, t)
        if self.kind == "lstm":
            return new_state, self._lstm_apply(infos, B)
        H, rows, u = self.H, [], None
        for l, info in enumerate(infos):
            w_ih, w_hh = self.W[l]
            Bl = B[:, l * H:(l + 1) * H]
            coef_h, diag, coef_x = self._coefs(info)
            if coef_h.size(1) == 1:  # one block: diag(a) (W B) is cheaper than building diag(a) W
                dh = coef_h.transpose(1, 2) * torch.matmul(w_hh, Bl)
                if u is not None:
                    dh = dh + coef_x.transpose(1, 2) * torch.matmul(w_ih, u)
            else:
                dh = torch.bmm(self.combine(w_hh, coef_h, diag), Bl)
                if u is not None:
                    dh = dh + torch.bmm(self.combine(w_ih, coef_x), u)
            rows.append(dh)
            u = dh
        return new_state, torch.cat(rows, dim=1)

    def _lstm_apply(self, infos, B: torch.Tensor) -> torch.Tensor:
        """lshx.lyapunov's LSTM tangent: 'h' holds c fixed, 'hc' is [h_0, c_0, h_1, c_1, ...]."""
        return lstm_tangent(B, infos, self.W, self.H, self.hc, self.combine)


def _initial_state(rnn: nn.Module, h0: Optional[State], K: int, like: torch.Tensor, unbatched: bool):
    L, H = rnn.num_layers, rnn.hidden_size
    lstm = isinstance(rnn, nn.LSTM)

    def layers(t: Optional[torch.Tensor], what: str) -> List[torch.Tensor]:
        if t is None:
            return [like.new_zeros(K, H) for _ in range(L)]
        t = t.detach().to(dtype=like.dtype, device=like.device)
        if unbatched and t.dim() == 2:
            t = t.unsqueeze(1)
        if tuple(t.shape) != (L, K, H):
            raise ConfigError(f"{what} has shape {tuple(t.shape)}, expected (num_layers, K, hidden) = {(L, K, H)}")
        return [t[l] for l in range(L)]

    if lstm:
        if h0 is not None and not (isinstance(h0, (tuple, list)) and len(h0) == 2):
            raise ConfigError("an LSTM's h0 is the tuple (h0, c0), as nn.LSTM takes it")
        h, c = h0 if h0 is not None else (None, None)
        return layers(h, "h0"), layers(c, "c0")
    if isinstance(h0, (tuple, list)):
        raise ConfigError(f"a {type(rnn).__name__}'s h0 is one tensor, not a tuple")
    return layers(h0, "h0"), None


def lyapunov_spectrum(rnn: nn.Module, inputs: torch.Tensor, *, h0: Optional[State] = None, warmup: int = 0,
                      k: Optional[int] = None, state: str = "h", per_sample: bool = False,
                      qr: str = "householder", reorth_every: Union[int, str] = "auto") -> torch.Tensor:
    """Lyapunov spectrum of a torch.nn.LSTM, GRU or RNN driven by `inputs`.

    inputs: K independent sequences in the module's own layout ((T, K, D), or (K, T, D) with
    batch_first; an unbatched (T, D) is K = 1). h0: the module's own initial state (zeros
    when None; an LSTM's is (h0, c0)). The state vector is [h_0, ..., h_{L-1}]; for an LSTM,
    state="h" holds c fixed in the Jacobian (as lshx does) and "hc" uses the full state
    [h_0, c_0, h_1, c_1, ...]. The first `warmup` steps only advance the state. Dropout is
    not applied (eval behaviour). Returns the exponents of B's first k columns (after a long
    run, the k largest), sorted largest first, natural log per
    step, in the module's dtype: shape (k,) averaged over the K sequences, or (K, k) with
    per_sample=True. qr: householder (LAPACK), cholqr2 or batched; reorth_every: QR every m
    steps, or "auto" (the default: m from the spread of the last QR's exponents and the dtype,
    1 for a widely spread spectrum; docs/lyapunov.md).
    """
    kind = _kind(rnn)
    if rnn.bidirectional:
        raise ConfigError("a bidirectional RNN has no forward-in-time state map: its Lyapunov spectrum "
                          "is not defined; pass one direction (a unidirectional module) instead")
    if getattr(rnn, "proj_size", 0):
        raise ConfigError("an LSTM with proj_size > 0 is not supported by the fast path; "
                          "use lyapunov_spectrum_fn with a step function")
    if state not in ("h", "hc"):
        raise ConfigError(f"unknown state {state!r}; allowed: h, hc")
    if state == "hc" and kind != "lstm":
        raise ConfigError(f"state 'hc' is the LSTM's (h, c); a {type(rnn).__name__} has the state h only")
    w = rnn.weight_hh_l0
    if inputs.dim() not in (2, 3):
        raise ConfigError(f"inputs must be (T, D), (T, K, D) or batch_first (K, T, D); got {tuple(inputs.shape)}")
    unbatched = inputs.dim() == 2
    x = inputs.detach().to(dtype=w.dtype, device=w.device)
    x = x.unsqueeze(0) if unbatched else (x if rnn.batch_first else x.transpose(0, 1))
    if x.size(-1) != rnn.input_size:
        raise ConfigError(f"inputs have {x.size(-1)} features, the module takes {rnn.input_size}")
    K, T = x.shape[:2]
    check_qr(qr)
    N = state_size(rnn, state)
    with torch.no_grad():
        steps = _ModuleSteps(rnn, x, state)
        h, c = _initial_state(rnn, h0, K, x, unbatched)
        res = run(steps.advance, steps.tangent, (h, c), K, T, N, N if k is None else int(k), x, warmup=warmup,
                  qr=qr, reorth_every=reorth_every)
    return finish(res, per_sample)
