"""Lyapunov spectrum: fast == reference, known exact exponents, QR signs, k < N, J vs JT."""
import math

import pytest
import torch

import lshx.lyapunov.models as L
from lshx import ops
from lshx.errors import ConfigError
from lshx.lyapunov import LSConfig, sample_windows
from lshx.lyapunov import model_spectrum as lyapunov_spectrum
from lshx.lyapunov.loop import run
from lshx.lyapunov.step_fn import lyapunov_spectrum_fn
from lshx.lyapunov.torch_nn import lyapunov_spectrum as lyapunov_spectrum_module


def run_spectrum(stepper, state0, tokens, N, k, cfg, dtype):
    """The loop on a stepper of the (state, token) protocol: (k,) exponents averaged over K."""
    K, total = tokens.shape
    like = torch.zeros((), dtype=dtype)
    return run(lambda s, t: stepper.advance(s, tokens[:, t]), lambda s, t, B: stepper.tangent(s, tokens[:, t], B),
               state0, K, total, N, k, like, warmup=cfg.warmup, warmup_mode=cfg.warmup_mode, qr=cfg.qr,
               reorth_every=cfg.reorth_every).mean()
from lshx.models import LSTMLM, RHNLM
from lshx.sparse.config import DSTConfig
from lshx.sparse.masking import Masking


def _model(arch, sparse, dtype=torch.float64, scale=3.0):
    torch.manual_seed(0)
    m = LSTMLM(50, 8, 12, 2, dropout=0.0) if arch == "lstm" else RHNLM(50, 10, 3, 0, 0, 0, 0)
    m = m.to(dtype)
    if sparse:
        Masking(m, DSTConfig(density=0.4, init="ER"), 1, seed=1)
    with torch.no_grad():  # larger weights: a richer, partly expanding spectrum
        for p in m.parameters():
            p.mul_(scale)
    return m


CASES = [("lstm", "h"), ("lstm", "hc"), ("rhn", "h")]


@pytest.mark.parametrize("arch,state", CASES)
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("propagate", ["J", "JT"])
def test_fast_equals_reference(arch, state, sparse, propagate):
    m = _model(arch, sparse)
    tok = torch.randint(0, 50, (2, 14), generator=torch.Generator().manual_seed(3))
    cfg = dict(warmup=4, state=state, propagate=propagate)
    fast = lyapunov_spectrum(m, tok, LSConfig(impl="fast", **cfg))
    ref = lyapunov_spectrum(m, tok, LSConfig(impl="reference", **cfg))
    assert len(fast.spectrum) == m.state_size(state)
    assert max(abs(a - b) for a, b in zip(fast.spectrum, ref.spectrum)) < 1e-4


@pytest.mark.parametrize("arch,state", CASES)
def test_fast_equals_reference_float32(arch, state):
    m = _model(arch, True, torch.float32)
    tok = torch.randint(0, 50, (2, 14), generator=torch.Generator().manual_seed(4))
    fast = lyapunov_spectrum(m, tok, LSConfig(impl="fast", warmup=4, state=state))
    ref = lyapunov_spectrum(m, tok, LSConfig(impl="reference", warmup=4, state=state))
    assert max(abs(a - b) for a, b in zip(fast.spectrum, ref.spectrum)) < 1e-4


class LinearMap:
    """h_t = A h_{t-1}: J = A at every step."""

    def __init__(self, A):
        self.A = A

    def advance(self, state, tok):
        return state @ self.A.T

    def tangent(self, state, tok, B):
        J = self.A.expand(B.size(0), *self.A.shape)
        return self.advance(state, tok), (J.transpose(1, 2) if self.propagate == "JT" else J) @ B


def _exponents(stepper, N, steps, k=None, propagate="J", K=1, warmup=0):
    stepper.propagate = propagate
    cfg = LSConfig(warmup=warmup, steps=steps, propagate=propagate)
    tokens = torch.zeros(K, warmup + steps, dtype=torch.long)
    lam = run_spectrum(stepper, torch.zeros(K, N, dtype=torch.float64), tokens, N, k or N, cfg, torch.float64)
    return torch.sort(lam, descending=True).values


def test_triangular_linear_map_exact():
    A = torch.tensor([[2.0, 0.7, -1.0], [0.0, -0.5, 3.0], [0.0, 0.0, 0.1]], dtype=torch.float64)
    lam = _exponents(LinearMap(A), 3, 50)
    expected = torch.sort(torch.log(torch.tensor([2.0, 0.5, 0.1], dtype=torch.float64)), descending=True).values
    # B0 = I and A upper triangular: qr(A) = (I, A) up to signs, so every step is exact
    torch.testing.assert_close(lam, expected, atol=1e-10, rtol=0)


def test_normal_linear_map_exact():
    torch.manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64))
    eig = torch.tensor([1.5, -0.9, 0.5, 0.3, -0.05], dtype=torch.float64)
    A = Q @ torch.diag(eig) @ Q.T  # symmetric, hence normal: lambda_i = log|eig_i| exactly
    for prop in ("J", "JT"):
        lam = _exponents(LinearMap(A), 5, 4000, propagate=prop)
        expected = torch.sort(eig.abs().log(), descending=True).values
        # B0 = I is not aligned with the eigenvectors: the error decays like 1/T
        torch.testing.assert_close(lam, expected, atol=3e-3, rtol=0)


class LogisticMap:
    """x -> 4 x (1 - x): a chaotic map whose exponent is exactly ln 2."""

    def advance(self, state, tok):
        return 4 * state * (1 - state)

    def tangent(self, state, tok, B):
        return self.advance(state, tok), (4 * (1 - 2 * state)).unsqueeze(-1) * B


def test_logistic_map_exponent_ln2():
    stepper = LogisticMap()
    cfg = LSConfig(warmup=100, steps=20000)
    K = 4
    tokens = torch.zeros(K, 20100, dtype=torch.long)
    x0 = torch.tensor([[0.123], [0.31], [0.77], [0.5123]], dtype=torch.float64)
    lam = run_spectrum(stepper, x0, tokens, 1, 1, cfg, torch.float64)
    assert abs(float(lam[0]) - math.log(2)) < 0.02


def test_invariant_to_qr_signs(monkeypatch):
    m = _model("lstm", True)
    tok = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(5))
    base = lyapunov_spectrum(m, tok, LSConfig(warmup=2)).spectrum
    real = ops.lyapunov_step
    g = torch.Generator().manual_seed(0)

    def flipped(jb):
        q, logr = real(jb)
        signs = torch.randint(0, 2, (q.size(0), 1, q.size(2)), generator=g).to(q.dtype) * 2 - 1
        return q * signs, logr

    monkeypatch.setattr(ops, "lyapunov_step", flipped)
    other = lyapunov_spectrum(m, tok, LSConfig(warmup=2)).spectrum
    assert max(abs(a - b) for a, b in zip(base, other)) < 1e-10


@pytest.mark.parametrize("arch", ["lstm", "rhn"])
def test_top_k_is_prefix_of_full(arch):
    m = _model(arch, False).eval()
    N = m.state_size("h")
    tok = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(6))
    cfg = LSConfig(warmup=2)
    # column by column, the first k columns of the QR sequence do not depend on the others
    full = run_spectrum(L.stepper(m, cfg), m.init_state(2), tok, N, N, cfg, torch.float64)
    part = run_spectrum(L.stepper(m, cfg), m.init_state(2), tok, N, 5, cfg, torch.float64)
    torch.testing.assert_close(full[:5], part, atol=1e-10, rtol=0)
    # and after a long run those columns carry the 5 largest exponents
    long_tok = torch.randint(0, 50, (2, 400), generator=torch.Generator().manual_seed(6))
    top = lyapunov_spectrum(m, long_tok, LSConfig(warmup=2, k=5)).spectrum
    all_ = lyapunov_spectrum(m, long_tok, LSConfig(warmup=2)).spectrum
    assert max(abs(a - b) for a, b in zip(all_[:5], top)) < 0.02


class RandomMatrices:
    """i.i.d. Gaussian matrices: J and J^T products have the same spectrum in distribution."""

    def __init__(self, N, seed):
        self.N, self.g = N, torch.Generator().manual_seed(seed)

    def advance(self, state, tok):
        return state

    def tangent(self, state, tok, B):
        J = torch.randn(B.size(0), self.N, self.N, generator=self.g, dtype=torch.float64) / math.sqrt(self.N)
        return state, (J.transpose(1, 2) if self.propagate == "JT" else J) @ B


def test_random_products_J_and_JT_agree():
    N, steps = 6, 3000
    lj = _exponents(RandomMatrices(N, 1), N, steps, propagate="J", K=2)
    lt = _exponents(RandomMatrices(N, 2), N, steps, propagate="JT", K=2)
    # statistical error ~ O(1/sqrt(steps * K)) per exponent
    assert (lj - lt).abs().max() < 0.05
    # and both match the exact Gaussian result: lambda_i = (log(2/N) + digamma((N - i + 1) / 2)) / 2
    exact = torch.tensor([0.5 * (math.log(2 / N) + torch.special.digamma(torch.tensor((N - i) / 2)).item())
                          for i in range(N)], dtype=torch.float64)
    assert (lj - exact).abs().max() < 0.05


def test_reorthonormalizing_every_m_steps_matches_m1():
    m = _model("lstm", True, scale=1.0)
    tok = torch.randint(0, 50, (2, 20), generator=torch.Generator().manual_seed(7))
    a = lyapunov_spectrum(m, tok, LSConfig(warmup=2)).spectrum
    b = lyapunov_spectrum(m, tok, LSConfig(warmup=2, reorth_every=3)).spectrum
    # in float64 the top exponents survive 3 un-normalized steps
    assert max(abs(x - y) for x, y in zip(a[:10], b[:10])) < 1e-6


def test_sample_windows():
    ids = torch.arange(100)
    w = sample_windows(ids, 3, 20)
    assert w.tolist()[1] == list(range(20, 40))
    a, b = sample_windows(ids, 3, 20, seed=1), sample_windows(ids, 3, 20, seed=1)
    assert torch.equal(a, b)
    with pytest.raises(ConfigError):
        sample_windows(ids, 6, 20)


def test_log_base_2_and_stats():
    m = _model("rhn", True)
    tok = torch.randint(0, 50, (2, 10), generator=torch.Generator().manual_seed(8))
    e = lyapunov_spectrum(m, tok, LSConfig(warmup=2))
    two = lyapunov_spectrum(m, tok, LSConfig(warmup=2, log_base="2"))
    assert two.max == pytest.approx(e.max / math.log(2))
    s = torch.tensor(e.spectrum)
    assert e.mean == pytest.approx(float(s.mean())) and e.var == pytest.approx(float(s.var(unbiased=False)))
    assert e.spectrum == sorted(e.spectrum, reverse=True)


def test_bad_options():
    with pytest.raises(ConfigError):
        LSConfig(state="c")
    m = _model("rhn", False)
    with pytest.raises(ConfigError):
        lyapunov_spectrum(m, torch.zeros(1, 5, dtype=torch.long), LSConfig(state="hc"))
    with pytest.raises(ConfigError):
        lyapunov_spectrum(m, torch.zeros(1, 5, dtype=torch.long), LSConfig(k=99))


def test_cholqr2_spectrum_matches_householder():
    m = _model("lstm", True)
    tok = torch.randint(0, 50, (2, 14), generator=torch.Generator().manual_seed(9))
    a = lyapunov_spectrum(m, tok, LSConfig(warmup=2, k=6)).spectrum
    b = lyapunov_spectrum(m, tok, LSConfig(warmup=2, k=6, qr="cholqr2")).spectrum
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-8


def test_collapsed_layer_gives_finite_floor_exponents():
    """A layer whose weights are all pruned annihilates its directions: log|R_ii| is floored
    at log(tiny) instead of -inf, so the spectrum stays finite (and is not 'diverged')."""
    m = _model("lstm", True, torch.float32)
    m.masks["rnn.weight_ih_l1"] = torch.zeros_like(m.masks["rnn.weight_ih_l1"])
    m.masks["rnn.weight_hh_l1"] = torch.zeros_like(m.masks["rnn.weight_hh_l1"])
    tok = torch.randint(0, 50, (2, 10), generator=torch.Generator().manual_seed(10))
    spec = lyapunov_spectrum(m, tok, LSConfig(warmup=2)).spectrum
    assert all(math.isfinite(v) for v in spec)
    floor = math.log(torch.finfo(torch.float32).tiny)
    assert sum(1 for v in spec if v == pytest.approx(floor)) == 12  # the second layer's 12 units


# ----------------------------------------------------------------------------- the adaptive interval
def test_the_adaptive_interval_follows_the_spread_and_the_dtype():
    from lshx.lyapunov.qr import AUTO_MAX, GROWTH, next_interval, resolvable_nats

    f64, f32 = torch.float64, torch.float32
    assert resolvable_nats(f32) == pytest.approx(0.5 * math.log(2 ** 23))
    # one step whose columns grew log 1 .. log e^-2: spread 2 nats a step
    logr = torch.tensor([[0.0, -1.0, -2.0]], dtype=f64)
    assert GROWTH == 4 and next_interval(logr, 1, f64) == 4  # at most 4-fold, whatever the spread allows
    assert next_interval(logr * 4, 4, f64) == min(16, int(resolvable_nats(f64) // 2))
    assert next_interval(logr * 4, 4, f32) == int(resolvable_nats(f32) // 2)  # 7 nats / 2 = 3
    assert next_interval(torch.tensor([[0.0, -30.0]], dtype=f64), 1, f64) == 1  # too wide for any m > 1
    # a column at the floor (a direction already annihilated) does not shrink the interval
    dead = math.log(torch.finfo(f64).tiny)
    assert next_interval(torch.tensor([[0.0, -1.0, dead]], dtype=f64), 1, f64) == 4
    # the worst sample decides; no spread at all: as long as allowed
    assert next_interval(torch.tensor([[0.0, -0.1], [0.0, -20.0]], dtype=f64), 1, f64) == 1
    assert next_interval(torch.zeros(1, 3, dtype=f64), 8, f64) == min(16, AUTO_MAX)


def test_auto_takes_fewer_qrs_where_the_spectrum_allows_and_gives_the_same_exponents():
    A = torch.diag(torch.tensor([0.9, 0.8, 0.5, 0.3], dtype=torch.float64))
    torch.manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))
    A = Q @ A @ Q.T
    like = torch.zeros((), dtype=torch.float64)
    stepper = LinearMap(A)
    stepper.propagate = "J"
    adv = lambda s, t: stepper.advance(s, None)  # noqa: E731
    tan = lambda s, t, B: stepper.tangent(s, None, B)  # noqa: E731
    one = run(adv, tan, torch.zeros(1, 4, dtype=torch.float64), 1, 300, 4, 4, like, reorth_every=1)
    auto = run(adv, tan, torch.zeros(1, 4, dtype=torch.float64), 1, 300, 4, 4, like, reorth_every="auto")
    assert one.qrs == 300 and auto.qrs < 40  # spread 1.1 nats a step: intervals of 16
    torch.testing.assert_close(auto.per_sample(), one.per_sample(), atol=1e-12, rtol=0)


def test_the_adaptive_interval_keeps_every_column_above_underflow():
    from lshx.lyapunov.qr import magnitude_nats, next_interval

    f32 = torch.float32
    # one column (no spread) decaying 7 nats a step: at most magnitude / 7 steps, not 16
    logr = torch.tensor([[-7.0]], dtype=f32)
    assert next_interval(logr * 4, 4, f32) == int(magnitude_nats(f32) // 7) == 6
    assert magnitude_nats(f32) == pytest.approx(0.5 * -math.log(torch.finfo(f32).tiny))


def test_an_interval_is_checked_after_the_fact():
    from lshx.lyapunov.qr import alive_columns, interval_held, resolvable_nats

    f64 = torch.float64
    ok = torch.tensor([[0.0, -5.0]], dtype=f64)
    alive = alive_columns(ok)
    assert interval_held(ok, alive, f64)
    assert not interval_held(torch.tensor([[0.0, -1.3 * resolvable_nats(f64)]], dtype=f64), alive, f64)
    assert not interval_held(torch.tensor([[0.0, float("nan")]], dtype=f64), alive, f64)
    underflowed = torch.tensor([[0.0, math.log(torch.finfo(f64).tiny)]], dtype=f64)
    assert not interval_held(underflowed, alive, f64)  # alive before, at the floor now
    assert interval_held(underflowed, alive_columns(underflowed), f64)  # already annihilated: nothing lost


def test_auto_equals_every_step_where_columns_would_underflow():
    """A uniformly contracting tanh RNN (every exponent near -7 nats a step, no spread): in
    float32 long intervals underflowed every column; the magnitude guard keeps auto exact."""
    torch.manual_seed(0)
    rnn = torch.nn.RNN(4, 8, batch_first=True)
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(torch.eye(8) * 1e-3 + 1e-5 * torch.randn(8, 8))
    x = torch.rand(2, 120, 4)
    for k in (1, 8):
        one = lyapunov_spectrum_module(rnn, x, k=k, reorth_every=1)
        auto = lyapunov_spectrum_module(rnn, x, k=k, reorth_every="auto")
        torch.testing.assert_close(auto, one, atol=1e-4, rtol=0)


def test_auto_redoes_an_interval_whose_spread_grew_inside_it():
    """A linear map whose spread jumps from 0 to 12 nats a step at step 31, in the middle of
    a 16-step interval: the closing QR shows the loss, the interval is redone step by step."""
    torch.manual_seed(0)
    N, T, calm = 4, 100, 31
    mats = []
    for t in range(T):
        O, _ = torch.linalg.qr(torch.randn(N, N, dtype=torch.float64))
        d = torch.ones(N, dtype=torch.float64) if t < calm else torch.exp(-12.0 * torch.arange(N, dtype=torch.float64))
        mats.append(torch.diag(d) @ O)
    x = torch.stack(mats).reshape(1, T, N * N)
    step = lambda h, xt: xt.view(N, N) @ h  # noqa: E731
    h0 = torch.zeros(N, dtype=torch.float64)
    one = lyapunov_spectrum_fn(step, h0, x, reorth_every=1)
    auto = lyapunov_spectrum_fn(step, h0, x, reorth_every="auto")
    assert float(one[-1]) < -23  # (what was lost before: auto read -18.7)
    torch.testing.assert_close(auto, one, atol=1e-9, rtol=0)


def test_the_reference_honours_the_tangent_dtype():
    from lshx.models import LSTMLM

    torch.manual_seed(0)
    m = LSTMLM(20, emb_size=6, hidden_size=5, num_layers=2)
    tok = torch.randint(0, 20, (2, 15))
    r32 = lyapunov_spectrum(m, tok, LSConfig(impl="reference", steps=5, warmup=3)).spectrum
    r64 = lyapunov_spectrum(m, tok, LSConfig(impl="reference", steps=5, warmup=3, tangent_dtype="float64")).spectrum
    f64 = lyapunov_spectrum(m, tok, LSConfig(impl="fast", steps=5, warmup=3, tangent_dtype="float64")).spectrum
    assert r32 != r64
    assert max(abs(a - b) for a, b in zip(r64, f64)) < 1e-6


def test_the_spectrum_adds_over_windows_before_it_divides():
    """The (k,) spectrum is sum over windows and steps of log|R_ii| / (K x steps), in that order:
    every stored spectrum (the committed tables) was computed so, and float32 rounds the other
    order differently in the last bit (seen on a retrained GS-24 run: 154 of 400 exponents)."""
    from lshx.lyapunov.loop import Exponents

    torch.manual_seed(3)
    sums = torch.randn(2, 400) * 150 - 200
    res = Exponents(sums, 35, 35)
    assert torch.equal(res.mean(), sums.sum(0) / (2 * 35))
    assert torch.equal(res.per_sample(), sums / 35)
    assert not torch.equal(res.mean(), res.per_sample().mean(0))  # (why the order is pinned)
