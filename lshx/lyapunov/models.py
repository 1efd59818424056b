"""The spectrum of lshx's own language models (LSTMLM, RHNLM) on token windows: what a search
measures after every epoch and what `lshx ls-compute` prints.

Two ways to step them, both through lshx.lyapunov.loop.run:
- "fast": J.B from the gate vectors without autograd (lshx.lyapunov.lstm_tangent; the RHN's
  micro-steps (diag t(1-h^2) R_H + diag (h-s) t(1-t) R_T + diag(1-t)) applied in turn), the
  masked weights applied once per call, batched over the K windows;
- "reference": the Jacobian of a plain-torch step by autograd, then J @ B.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict
from typing import List, Optional

import torch
import torch.nn.functional as F

from lshx import ops
from lshx.errors import ConfigError
from lshx.lyapunov.config import LSConfig, LSResult
from lshx.lyapunov.loop import Exponents, run
from lshx.lyapunov.lstm_tangent import lstm_tangent
from lshx.models import LSTMLM, RHNLM, MaskedLM, detach_state


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


class ReferenceStepper:
    """Jacobians by autograd of a plain-torch step, one sample at a time (tests, benchmarks)."""

    def __init__(self, model: MaskedLM, cfg: LSConfig) -> None:
        self.model, self.cfg, self.P = model, cfg, _masked_params(model)

    def jacobian(self, state, tok) -> torch.Tensor:
        """(K, N, N) by autograd, one sample at a time."""
        m, kind, out = self.model, self.cfg.state, []
        x = F.embedding(tok, self.P["encoder.weight"])
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
        J = self.jacobian(state, tok).to(B.dtype)  # (a float64 tangent: J from the model's dtype, as the fast path)
        JB = (J.transpose(1, 2) if self.cfg.propagate == "JT" else J) @ B
        return self.advance(state, tok), JB


# ----------------------------------------------------------------------------- fast
def _transposed(apply, B: torch.Tensor) -> torch.Tensor:
    """J^T.B (the authors' propagation) from a J.(.) map: J built as J.I, then transposed."""
    N = B.size(1)
    eye = torch.eye(N, dtype=B.dtype, device=B.device).expand(B.size(0), N, N)
    return torch.bmm(apply(eye).transpose(1, 2), B)


def _tangent_dtype(model: MaskedLM, cfg: LSConfig) -> torch.dtype:
    return getattr(torch, cfg.tangent_dtype) if cfg.tangent_dtype else next(model.parameters()).dtype


class FastLSTMStepper:
    def __init__(self, model: LSTMLM, cfg: LSConfig) -> None:
        self.model, self.cfg = model, cfg
        self.H = model.hidden_size
        masks = model.rnn_masks()
        self.W, self.b = model.rnn.step_weights(masks)
        self.dtype = _tangent_dtype(model, cfg)
        self.W_tangent = [(a.to(self.dtype), b.to(self.dtype)) for a, b in self.W]
        self.emb = ops.masked_weight(model.encoder.weight.detach(), model.masks.get("encoder.weight"))

    def step(self, tok, state):
        """model.step with the masked weights applied once, not at every timestep."""
        return self.model.rnn.step_with(F.embedding(tok, self.emb), state, self.W, self.b)

    def advance(self, state, tok):
        return self.step(tok, state)[0]

    def _apply(self, info, B: torch.Tensor) -> torch.Tensor:
        layers = [tuple(x.to(self.dtype) for x in (*gates.chunk(4, dim=-1), c_prev, c)) for gates, c_prev, c in info]
        return lstm_tangent(B, layers, self.W_tangent, self.H, self.cfg.state == "hc")

    def tangent(self, state, tok, B):
        new_state, info = self.step(tok, state)
        if self.cfg.propagate == "JT":
            return new_state, _transposed(lambda X: self._apply(info, X), B)
        return new_state, self._apply(info, B)


class FastRHNStepper:
    def __init__(self, model: RHNLM, cfg: LSConfig) -> None:
        self.model, self.cfg = model, cfg
        self.dtype = _tangent_dtype(model, cfg)
        self.W = [ops.masked_weight(getattr(model.rnn, f"weight_hh_l{d}").detach(),
                                    model.masks.get(f"rnn.weight_hh_l{d}")).to(self.dtype) for d in range(model.depth)]

    def advance(self, state, tok):
        return self.model.step(tok, state)[0]

    def _apply(self, info, B):
        for d, (h, t, s_prev) in enumerate(info):
            h, t, s_prev = (x.to(self.dtype) for x in (h, t, s_prev))
            coef = torch.stack([t * (1 - h * h), (h - s_prev) * t * (1 - t)], dim=1)
            B = torch.bmm(ops.row_combine(self.W[d], coef, 1 - t), B)
        return B

    def tangent(self, state, tok, B):
        new_state, info = self.model.step(tok, state)
        if self.cfg.propagate == "JT":
            return new_state, _transposed(lambda X: self._apply(info, X), B)
        return new_state, self._apply(info, B)


def stepper(model: MaskedLM, cfg: LSConfig):
    """The stepper of `model` for `cfg` (its impl and state)."""
    if isinstance(model, RHNLM) and cfg.state != "h":
        raise ConfigError("the RHN has a single state vector: use --state h")
    if cfg.impl == "reference":
        return ReferenceStepper(model, cfg)
    if isinstance(model, LSTMLM):
        return FastLSTMStepper(model, cfg)
    if isinstance(model, RHNLM):
        return FastRHNStepper(model, cfg)
    raise ConfigError(f"no Lyapunov implementation for {type(model).__name__}")


def exponents(model: MaskedLM, tokens: torch.Tensor, cfg: LSConfig, k: Optional[int] = None):
    """(K, k) exponents per window (natural log, unsorted) and the number of QRs."""
    res = measure(model, tokens, cfg, k)
    return res.per_sample(), res.qrs


def measure(model: MaskedLM, tokens: torch.Tensor, cfg: LSConfig, k: Optional[int] = None) -> Exponents:
    """The loop of Eq. 1 on `model` (eval behaviour, no gradient unless the reference needs it)."""
    K, total = tokens.shape
    N = model.state_size(cfg.state)
    st = stepper(model, cfg)
    p = next(model.parameters())
    tokens = tokens.to(p.device)

    def advance(state, t):
        with torch.no_grad():
            return detach_state(st.advance(state, tokens[:, t]))

    def tangent(state, t, B):
        new, JB = st.tangent(state, tokens[:, t], B)
        return detach_state(new), JB

    like = torch.zeros((), dtype=_tangent_dtype(model, cfg), device=p.device)
    with torch.set_grad_enabled(cfg.impl == "reference"):
        return run(advance, tangent, model.init_state(K), K, total, N, k or cfg.k or N, like,
                   warmup=cfg.warmup, warmup_mode=cfg.warmup_mode, qr=cfg.qr, reorth_every=cfg.reorth_every)


def model_spectrum(model: MaskedLM, tokens: torch.Tensor, cfg: LSConfig) -> LSResult:
    """The spectrum of `model` over token windows (K, warmup + steps): sorted descending, with
    its max, mean and (population) variance. The model is put in eval mode for the run."""
    t0 = time.perf_counter()
    K, total = tokens.shape
    if total - cfg.warmup < 1:
        raise ConfigError(f"windows of {total} tokens leave no step after {cfg.warmup} warm-up steps")
    N = model.state_size(cfg.state) if not (isinstance(model, RHNLM) and cfg.state != "h") else None
    k = cfg.k or N
    if N is not None and k > N:
        raise ConfigError(f"k = {k} exceeds the state size N = {N}")
    was_training = model.training
    model.eval()
    try:
        res = measure(model, tokens, cfg, k)
    finally:
        model.train(was_training)
    lam, qrs = res.mean(), res.qrs
    if cfg.log_base == "2":
        lam = lam / math.log(2.0)
    lam = torch.sort(lam.double().cpu(), descending=True).values
    return LSResult(spectrum=lam.tolist(), max=float(lam.max()), mean=float(lam.mean()),
                    var=float(lam.var(unbiased=False)) if lam.numel() > 1 else 0.0,
                    tokens=tokens.cpu().tolist(), config=asdict(cfg), wall_s=time.perf_counter() - t0, qr_steps=qrs)
