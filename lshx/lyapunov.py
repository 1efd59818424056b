"""Lyapunov spectrum of a recurrent language model (paper Eq. 1).

h^0 = 0, B^0 = I (N x k); per step h^t = f(h^{t-1}, x^t) and B^t, R^t = qr(J^t B^{t-1});
lambda_i = mean over steps and samples of log|R^t_ii|.

Two implementations share the loop below:
- "reference": the Jacobian of a plain-torch step function by autograd, then J @ B.
- "fast": J @ B from the gate vectors without autograd: every Jacobian block
  sum_g diag(a_g) W_g is built in O(H^2) by the native op row_combine, and the stacked
  layers are walked in order (block lower-triangular J), batched over the K samples.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import List, Optional

import torch
import torch.nn.functional as F

from lshx import ops
from lshx.errors import ConfigError
from lshx.models import LSTMLM, RHNLM, MaskedLM, detach_state

STATES = ("h", "hc")
PROPAGATE = ("J", "JT")
IMPLS = ("fast", "reference")
WARMUP_MODES = ("advance", "orthonormalize")
QR_METHODS = ("householder", "cholqr2", "batched")


def qr_function(method: str):
    """The op behind an LSConfig.qr name: (K, N, k) -> (Q, log|diag R|)."""
    return {"cholqr2": ops.cholqr2, "batched": ops.householder_qr}.get(method, ops.lyapunov_step)


@dataclass(frozen=True)
class LSConfig:
    samples: int = 2
    steps: int = 35
    warmup: int = 10
    warmup_mode: str = "advance"  # advance the state only, or also propagate and re-orthonormalize B
    state: str = "h"  # h: c held fixed (as the authors); hc: the full LSTM state
    k: Optional[int] = None  # number of exponents (default: all N)
    log_base: str = "e"
    propagate: str = "J"  # J: B <- J.B (Eq. 1); JT: B <- J^T.B (the authors' released code)
    seed: Optional[int] = None  # None: the first windows of the split; int: windows drawn by seed
    impl: str = "fast"
    reorth_every: int = 1  # QR every m steps (m > 1 trades accuracy for speed)
    # householder: LAPACK / cuSOLVER; cholqr2: GEMM-bound for k << N, Householder when
    # ill-conditioned; batched: lshx's one-block-per-sample Householder kernel (CUDA)
    qr: str = "householder"

    def __post_init__(self) -> None:
        checks = [("state", STATES), ("propagate", PROPAGATE), ("impl", IMPLS), ("warmup_mode", WARMUP_MODES),
                  ("log_base", ("e", "2")), ("qr", QR_METHODS)]
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise ConfigError(f"unknown {name} {getattr(self, name)!r}; allowed: {', '.join(allowed)}")
        if self.samples < 1 or self.steps < 1 or self.warmup < 0 or self.reorth_every < 1:
            raise ConfigError("samples and steps must be >= 1, warmup >= 0, reorth_every >= 1")
        if self.k is not None and self.k < 1:
            raise ConfigError("k must be >= 1")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or not 0 <= self.seed <= 2 ** 32 - 1):
            raise ConfigError(f"seed must be an integer in [0, 2^32 - 1], got {self.seed!r}")


@dataclass
class LSResult:
    spectrum: List[float]
    max: float
    mean: float
    var: float
    tokens: List[List[int]]
    config: dict = field(default_factory=dict)
    wall_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def sample_windows(ids: torch.Tensor, samples: int, length: int, seed: Optional[int] = None) -> torch.Tensor:
    """K windows of `length` tokens: consecutive from the start, or at seeded random offsets."""
    n = ids.numel()
    if seed is None:
        if samples * length > n:
            raise ConfigError(f"{samples} windows of {length} tokens need {samples * length} tokens, split has {n}")
        starts = [i * length for i in range(samples)]
    else:
        if length > n:
            raise ConfigError(f"a window of {length} tokens is longer than the split ({n})")
        g = torch.Generator().manual_seed(seed)
        starts = sorted(torch.randint(0, n - length + 1, (samples,), generator=g).tolist())
    return torch.stack([ids[s: s + length] for s in starts])


# ----------------------------------------------------------------------------- state layout
def _flatten(model: MaskedLM, state, kind: str) -> torch.Tensor:
    """Model state -> (K, N): LSTM 'h' = [h_0..h_L-1], 'hc' = [h_0, c_0, h_1, c_1, ...]; RHN = s."""
    if isinstance(model, RHNLM):
        return state
    h, c = state
    parts = [h[k] for k in range(h.size(0))] if kind == "h" else [t for k in range(h.size(0)) for t in (h[k], c[k])]
    return torch.cat(parts, dim=-1)


# ----------------------------------------------------------------------------- reference
def _masked_params(model: MaskedLM) -> dict:
    return {n: ops.masked_weight(p.detach(), model.masks.get(n)) for n, p in model.named_parameters()}


def _ref_lstm_step(P: dict, L: int, x: torch.Tensor, h: List[torch.Tensor], c: List[torch.Tensor]):
    """Plain torch LSTM step (no lshx ops), for the autograd reference."""
    hs, cs, inp = [], [], x
    for k in range(L):
        gates = F.linear(inp, P[f"rnn.weight_ih_l{k}"], P[f"rnn.bias_ih_l{k}"]) + \
            F.linear(h[k], P[f"rnn.weight_hh_l{k}"], P[f"rnn.bias_hh_l{k}"])
        i, f, g, o = gates.chunk(4, -1)
        cn = torch.sigmoid(f) * c[k] + torch.sigmoid(i) * torch.tanh(g)
        hn = torch.sigmoid(o) * torch.tanh(cn)
        hs.append(hn)
        cs.append(cn)
        inp = hn
    return hs, cs


def _ref_rhn_step(P: dict, depth: int, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    H = s.size(-1)
    xp = F.linear(x, P["rnn.weight_ih"], P["rnn.bias_ih"])
    for d in range(depth):
        pre = F.linear(s, P[f"rnn.weight_hh_l{d}"], P[f"rnn.bias_hh_l{d}"]) + (xp if d == 0 else 0)
        h, t = torch.tanh(pre[..., :H]), torch.sigmoid(pre[..., H:])
        s = h * t + s * (1 - t)
    return s


class _Reference:
    def __init__(self, model: MaskedLM, cfg: LSConfig) -> None:
        self.model, self.cfg, self.P = model, cfg, _masked_params(model)

    def _emb(self, tok):
        return F.embedding(tok, self.P["encoder.weight"])

    def jacobian(self, state, tok) -> torch.Tensor:
        """(K, N, N) by autograd, one sample at a time."""
        m, kind, out = self.model, self.cfg.state, []
        x = self._emb(tok)
        for s in range(tok.size(0)):
            if isinstance(m, RHNLM):
                fn = lambda v: _ref_rhn_step(self.P, m.depth, x[s], v)  # noqa: E731
                v0 = state[s]
            else:
                L, H = m.num_layers, m.hidden_size
                h0 = [state[0][k, s] for k in range(L)]
                c0 = [state[1][k, s] for k in range(L)]
                if kind == "h":
                    def fn(v, s=s):
                        hs, _ = _ref_lstm_step(self.P, L, x[s], list(v.view(L, H)), c0)
                        return torch.cat(hs)
                    v0 = torch.cat(h0)
                else:
                    def fn(v, s=s):
                        vv = v.view(L, 2, H)
                        hs, cs = _ref_lstm_step(self.P, L, x[s], [vv[k, 0] for k in range(L)],
                                                [vv[k, 1] for k in range(L)])
                        return torch.cat([t for k in range(L) for t in (hs[k], cs[k])])
                    v0 = torch.cat([t for k in range(L) for t in (h0[k], c0[k])])
            out.append(torch.autograd.functional.jacobian(fn, v0, vectorize=True))
        return torch.stack(out)

    def advance(self, state, tok):
        with torch.no_grad():
            return self.model.step(tok, state)[0]

    def tangent(self, state, tok, B):
        J = self.jacobian(state, tok)
        JB = (J.transpose(1, 2) if self.cfg.propagate == "JT" else J) @ B
        return self.advance(state, tok), JB


# ----------------------------------------------------------------------------- fast
def lstm_tangent(B: torch.Tensor, layers, W, H: int, hc: bool, combine=None) -> torch.Tensor:
    """J @ B for one step of a stacked LSTM, walking the layers in order: layer k's tangent feeds
    layer k+1 at the same step. layers: per layer (i, f, g, o, c_prev, c), the gates after
    their nonlinearities; W: per layer (w_ih, w_hh). 'h' (hc False) holds c fixed; 'hc' orders
    the state [h_0, c_0, h_1, c_1, ...]. combine(w, coef) is diag-weighted row combination
    (ops.row_combine by default). Shared by LyapunovEstimator and lshx.spectrum."""
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


class _FastLSTM:
    def __init__(self, model: LSTMLM, cfg: LSConfig) -> None:
        self.model, self.cfg = model, cfg
        self.L, self.H = model.num_layers, model.hidden_size
        self.W, self.b = [], []
        for k in range(self.L):
            w_ih, w_hh, b_ih, b_hh = model.rnn.layer_weights(k)
            self.W.append((ops.masked_weight(w_ih.detach(), model.masks.get(f"rnn.weight_ih_l{k}")),
                           ops.masked_weight(w_hh.detach(), model.masks.get(f"rnn.weight_hh_l{k}"))))
            self.b.append((b_ih + b_hh).detach())
        self.emb = ops.masked_weight(model.encoder.weight.detach(), model.masks.get("encoder.weight"))

    def step(self, tok, state):
        """model.step with the masked weights applied once, not at every timestep."""
        h0, c0 = state
        inp, hs, cs, info = F.embedding(tok, self.emb), [], [], []
        for k in range(self.L):
            w_ih, w_hh = self.W[k]
            gates, c, h = self.model.rnn.cell(torch.addmm(self.b[k], inp, w_ih.t()) + h0[k] @ w_hh.t(), c0[k])
            info.append((gates, c0[k], c))
            hs.append(h)
            cs.append(c)
            inp = h
        return (torch.stack(hs), torch.stack(cs)), info

    def advance(self, state, tok):
        return self.step(tok, state)[0]

    def _apply(self, info, B: torch.Tensor) -> torch.Tensor:
        layers = [(*gates.chunk(4, dim=-1), c_prev, c) for gates, c_prev, c in info]
        return lstm_tangent(B, layers, self.W, self.H, self.cfg.state == "hc")

    def tangent(self, state, tok, B):
        new_state, info = self.step(tok, state)
        if self.cfg.propagate == "JT":
            N = B.size(1)
            eye = torch.eye(N, dtype=B.dtype, device=B.device).expand(B.size(0), N, N)
            return new_state, torch.bmm(self._apply(info, eye).transpose(1, 2), B)
        return new_state, self._apply(info, B)


class _FastRHN:
    def __init__(self, model: RHNLM, cfg: LSConfig) -> None:
        self.model, self.cfg = model, cfg
        self.W = [ops.masked_weight(getattr(model.rnn, f"weight_hh_l{d}").detach(),
                                    model.masks.get(f"rnn.weight_hh_l{d}")) for d in range(model.depth)]

    def advance(self, state, tok):
        return self.model.step(tok, state)[0]

    def _apply(self, info, B):
        for d, (h, t, s_prev) in enumerate(info):
            coef = torch.stack([t * (1 - h * h), (h - s_prev) * t * (1 - t)], dim=1)
            B = torch.bmm(ops.row_combine(self.W[d], coef, 1 - t), B)
        return B

    def tangent(self, state, tok, B):
        new_state, info = self.model.step(tok, state)
        if self.cfg.propagate == "JT":
            N = B.size(1)
            eye = torch.eye(N, dtype=B.dtype, device=B.device).expand(B.size(0), N, N)
            return new_state, torch.bmm(self._apply(info, eye).transpose(1, 2), B)
        return new_state, self._apply(info, B)


def _stepper(model: MaskedLM, cfg: LSConfig):
    if cfg.impl == "reference":
        return _Reference(model, cfg)
    if isinstance(model, LSTMLM):
        return _FastLSTM(model, cfg)
    if isinstance(model, RHNLM):
        if cfg.state != "h":
            raise ConfigError("the RHN has a single state vector: use --state h")
        return _FastRHN(model, cfg)
    raise ConfigError(f"no Lyapunov implementation for {type(model).__name__}")


# ----------------------------------------------------------------------------- the loop
def run_spectrum(stepper, state, tokens: torch.Tensor, N: int, k: int, cfg: LSConfig,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The loop of Eq. 1 over any stepper (advance(state, x), tangent(state, x, B) -> (state, JB)).

    Returns the k exponents in natural log, unsorted (column order of B).
    """
    K, total = tokens.shape
    W, T = cfg.warmup, tokens.shape[1] - cfg.warmup
    device = tokens.device
    B = torch.eye(N, k, dtype=dtype, device=device).expand(K, N, k).contiguous()
    acc = torch.zeros(K, k, dtype=dtype, device=device)
    qr = qr_function(cfg.qr)
    for t in range(total):
        tok = tokens[:, t]
        if t < W and cfg.warmup_mode == "advance":
            with torch.no_grad():
                state = stepper.advance(state, tok)
            continue
        state, JB = stepper.tangent(state, tok, B)
        state = detach_state(state)
        c = t - W
        if t < W or (c + 1) % cfg.reorth_every == 0 or c == T - 1:
            B, logr = qr(JB.detach())
            if t >= W:
                acc += logr
        else:
            B = JB.detach()
    return acc.sum(0) / (K * T)


def lyapunov_spectrum(model: MaskedLM, tokens: torch.Tensor, cfg: LSConfig) -> LSResult:
    """Spectrum of `model` (eval mode is set) over token windows (K, warmup + steps)."""
    t0 = time.perf_counter()
    K, total = tokens.shape
    if total - cfg.warmup < 1:
        raise ConfigError(f"windows of {total} tokens leave no step after {cfg.warmup} warm-up steps")
    if isinstance(model, RHNLM) and cfg.state != "h":
        raise ConfigError("the RHN has a single state vector: use --state h")
    N = model.state_size(cfg.state)
    k = cfg.k or N
    if k > N:
        raise ConfigError(f"k = {k} exceeds the state size N = {N}")
    was_training = model.training
    model.eval()
    dtype = next(model.parameters()).dtype
    tokens = tokens.to(next(model.parameters()).device)
    try:
        with torch.set_grad_enabled(cfg.impl == "reference"):
            lam = run_spectrum(_stepper(model, cfg), model.init_state(K), tokens, N, k, cfg, dtype)
    finally:
        model.train(was_training)
    if cfg.log_base == "2":
        lam = lam / math.log(2.0)
    lam = torch.sort(lam.double().cpu(), descending=True).values
    return LSResult(spectrum=lam.tolist(), max=float(lam.max()), mean=float(lam.mean()),
                    var=float(lam.var(unbiased=False)) if lam.numel() > 1 else 0.0,
                    tokens=tokens.cpu().tolist(), config=asdict(cfg), wall_s=time.perf_counter() - t0)
