"""lshx.lyapunov_spectrum / lyapunov_spectrum_fn: every torch cell against autograd (float64),
known exponents, the analytic path against the torch.func path, errors."""
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lshx
from lshx.errors import ConfigError
from lshx.lyapunov import lyapunov_spectrum, lyapunov_spectrum_fn, state_size

D64 = torch.float64


def _module(kind, layers=2, batch_first=False, hidden=5, inp=3, scale=1.5, seed=0, bias=True):
    torch.manual_seed(seed)
    cls = {"lstm": nn.LSTM, "gru": nn.GRU, "tanh": nn.RNN, "relu": nn.RNN}[kind]
    kw = {"nonlinearity": kind} if kind in ("tanh", "relu") else {}
    m = cls(inp, hidden, layers, batch_first=batch_first, bias=bias, **kw).to(D64)
    with torch.no_grad():  # larger weights: a richer, partly expanding spectrum
        for name, p in m.named_parameters():
            p.mul_(scale)
            if kind == "relu" and name.startswith("bias_ih"):
                p.add_(2.0)  # fewer dead units
    return m


def _inputs(m, K=3, T=12, seed=1):
    x = torch.randn(K, T, m.input_size, dtype=D64, generator=torch.Generator().manual_seed(seed))
    return x if m.batch_first else x.transpose(0, 1)


def _h0(m, K, seed=2):
    g = torch.Generator().manual_seed(seed)
    h = 0.5 * torch.randn(m.num_layers, K, m.hidden_size, dtype=D64, generator=g)
    if isinstance(m, nn.LSTM):
        return h, 0.5 * torch.randn(m.num_layers, K, m.hidden_size, dtype=D64, generator=g)
    return h


def _module_step(m, state_kind):
    """(flatten, unflatten-and-step) for one sequence through the module's own forward."""
    L, H = m.num_layers, m.hidden_size

    def step(x, st):  # x (D,), st: (L, H) or ((L, H), (L, H)); unbatched module call
        return m(x.view(1, -1), st)[1]

    if not isinstance(m, nn.LSTM):
        return (lambda st: st.reshape(-1)), (lambda v, x, st: step(x, v.view(L, H)).reshape(-1)), step
    if state_kind == "h":
        return (lambda st: st[0].reshape(-1)), (lambda v, x, st: step(x, (v.view(L, H), st[1]))[0].reshape(-1)), step

    def flat(st):
        return torch.stack([st[0], st[1]], 1).reshape(-1)  # [h_0, c_0, h_1, c_1, ...]

    def fn(v, x, st):
        vv = v.view(L, 2, H)
        h, c = step(x, (vv[:, 0], vv[:, 1]))
        return torch.stack([h, c], 1).reshape(-1)
    return flat, fn, step


def _reference(m, inputs, h0, warmup, k, state_kind):
    """Eq. 1 with the autograd Jacobian of the module's forward and torch.linalg.qr: (K, k)."""
    x = inputs if m.batch_first else inputs.transpose(0, 1)
    K, T = x.shape[:2]
    flat, fn, step = _module_step(m, state_kind)
    N = state_size(m, state_kind)
    out = []
    for s in range(K):
        st = tuple(t[:, s] for t in h0) if isinstance(h0, tuple) else h0[:, s]
        B, acc = torch.eye(N, k, dtype=D64), torch.zeros(k, dtype=D64)
        for t in range(T):
            if t >= warmup:
                J = torch.autograd.functional.jacobian(lambda v: fn(v, x[s, t], st), flat(st))
                B, R = torch.linalg.qr(J @ B)
                acc += R.diagonal().abs().log()
            with torch.no_grad():
                st = step(x[s, t], st)
        out.append(acc / (T - warmup))
    return torch.stack(out)


CELLS = [("lstm", "h"), ("lstm", "hc"), ("gru", "h"), ("tanh", "h"), ("relu", "h")]


@pytest.mark.parametrize("kind,state", CELLS)
@pytest.mark.parametrize("layers,batch_first", [(1, False), (3, True)])
def test_module_equals_autograd(kind, state, layers, batch_first):
    m = _module(kind, layers, batch_first)
    x, h0 = _inputs(m), _h0(m, 3)
    N = state_size(m, state)
    # relu: a dead unit zeroes a row of J, so with k = N one R_ii is 0 in exact arithmetic
    # and its column is rounding noise; k below the live units keeps every column defined
    for k in ((3, 2) if kind == "relu" else (N, 4)):
        ref = _reference(m, x, h0, 3, k, state)
        per = lyapunov_spectrum(m, x, h0=h0, warmup=3, k=k, state=state, per_sample=True)
        assert per.shape == (3, k) and per.dtype == D64
        ref_sorted = torch.sort(ref, -1, descending=True).values
        assert torch.allclose(per, ref_sorted, atol=1e-10)
        mean = lyapunov_spectrum(m, x, h0=h0, warmup=3, k=k, state=state)
        assert mean.shape == (k,)
        assert torch.allclose(mean, torch.sort(ref.mean(0), descending=True).values, atol=1e-10)


def test_no_bias_and_zero_state_default():
    m = _module("gru", 2, bias=False)
    x = _inputs(m)
    ref = _reference(m, x, torch.zeros(2, 3, 5, dtype=D64), 0, 10, "h")
    got = lyapunov_spectrum(m, x, per_sample=True)
    assert torch.allclose(got, torch.sort(ref, -1, descending=True).values, atol=1e-10)


def test_unbatched_input_is_one_sequence():
    m = _module("lstm", 2)
    x = _inputs(m, K=1)  # (T, 1, D)
    h0 = _h0(m, 1)
    batched = lyapunov_spectrum(m, x, h0=h0, warmup=2, per_sample=True)
    single = lyapunov_spectrum(m, x[:, 0], h0=(h0[0][:, 0], h0[1][:, 0]), warmup=2, per_sample=True)
    assert single.shape == (1, 10) and torch.allclose(batched, single, atol=1e-12)


def _torch_step(m):
    """The module's step in plain torch ops (torch.func cannot vmap nn.LSTM/GRU/RNN's fused
    kernels): step(x, h_layers, c_layers) -> (h_layers, c_layers), the torch.nn formulas."""
    P = dict(m.named_parameters())

    def step(x, hs, cs=None):
        nh, nc, inp = [], [], x
        for l in range(m.num_layers):
            gx = F.linear(inp, P[f"weight_ih_l{l}"], P[f"bias_ih_l{l}"])
            gh = F.linear(hs[l], P[f"weight_hh_l{l}"], P[f"bias_hh_l{l}"])
            if isinstance(m, nn.LSTM):
                i, f, g, o = (gx + gh).chunk(4)
                c = torch.sigmoid(f) * cs[l] + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                nc.append(c)
            elif isinstance(m, nn.GRU):
                (xr, xz, xn), (hr, hz, hn) = gx.chunk(3), gh.chunk(3)
                r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
                h = (1 - z) * torch.tanh(xn + r * hn) + z * hs[l]
            else:
                h = torch.tanh(gx + gh) if m.nonlinearity == "tanh" else torch.relu(gx + gh)
            nh.append(h)
            inp = h
        return torch.stack(nh), (torch.stack(nc) if nc else None)
    return step


@pytest.mark.parametrize("kind", ["gru", "tanh", "relu", "lstm"])
def test_module_path_equals_step_function_path(kind):
    """The analytic path against torch.func (jacrev + vmap) on the same cell in plain torch."""
    m = _module(kind, 2, batch_first=True)
    x, h0 = _inputs(m, K=2, T=10), _h0(m, 2)
    L, H = m.num_layers, m.hidden_size
    ts = _torch_step(m)
    if kind == "lstm":
        def step_hc(v, xt):
            vv = v.view(L, 2, H)
            h, c = ts(xt, vv[:, 0], vv[:, 1])
            return torch.stack([h, c], 1).reshape(-1)

        v0 = torch.stack([h0[0], h0[1]], 2).permute(1, 0, 2, 3).reshape(2, -1)
        fn = lyapunov_spectrum_fn(step_hc, v0, x, warmup=2, per_sample=True)
        fast = lyapunov_spectrum(m, x, h0=h0, warmup=2, state="hc", per_sample=True)
        assert torch.allclose(fn, fast, atol=1e-10)

        def step_h(h, xt, c):  # c advances but is held fixed in the Jacobian: state="h"
            hn, cn = ts(xt, h.view(L, H), c)
            return hn.reshape(-1), cn

        fn = lyapunov_spectrum_fn(step_h, h0[0].transpose(0, 1).reshape(2, -1), x, aux0=h0[1].transpose(0, 1),
                                  warmup=2, per_sample=True)
        fast = lyapunov_spectrum(m, x, h0=h0, warmup=2, state="h", per_sample=True)
        assert torch.allclose(fn, fast, atol=1e-10)
    else:
        def step(h, xt):
            return ts(xt, h.view(L, H))[0].reshape(-1)

        k = 3 if kind == "relu" else None  # relu: see test_module_equals_autograd
        fn = lyapunov_spectrum_fn(step, h0.transpose(0, 1).reshape(2, -1), x, warmup=2, k=k, per_sample=True)
        fast = lyapunov_spectrum(m, x, h0=h0, warmup=2, k=k, per_sample=True)
        assert torch.allclose(fn, fast, atol=1e-10)


# ----------------------------------------------------------------------------- known answers
def _orthogonal(n, seed=0):
    return torch.linalg.qr(torch.randn(n, n, dtype=D64, generator=torch.Generator().manual_seed(seed)))[0]


def _exact(Q, mu, T):
    """Exponents of T steps of J = Q diag(mu) Q^T from B^0 = I, exactly: with |mu| sorted
    descending and Q^T = L U (LU without pivoting), the QR of J^T is Q M . diag(mu)^T U with
    M -> I as (mu_i / mu_j)^T, so lambda_i = log|mu_i| + log|U_ii| / T (U_ii from the
    ratios of the leading principal minors of Q^T)."""
    order = torch.argsort(mu.abs(), descending=True)
    A = Q[:, order].T
    minors = torch.stack([torch.linalg.det(A[:i, :i]) for i in range(1, len(mu) + 1)])
    U = minors / torch.cat([minors.new_ones(1), minors[:-1]])
    return mu[order].abs().log() + U.abs().log() / T


def test_linear_map_exact():
    """h <- W h, W = P diag(s) P^T with P a signed permutation: log s to rounding."""
    s = [1.3, 0.9, -0.5, 0.2, 0.05]
    P = torch.eye(5, dtype=D64)[[3, 0, 4, 1, 2]] * torch.tensor([1, -1, 1, 1, -1], dtype=D64)
    W = P @ torch.diag(torch.tensor(s, dtype=D64)) @ P.T
    lam = lyapunov_spectrum_fn(lambda h, x: W @ h, torch.ones(5, dtype=D64), torch.zeros(2, 7, dtype=D64))
    expect = torch.sort(torch.tensor(s, dtype=D64).abs().log(), descending=True).values
    assert torch.allclose(lam, expect, atol=1e-12)
    # an upper-triangular map with B^0 = I: log|diag A| after any number of steps
    A = torch.triu(torch.randn(5, 5, dtype=D64, generator=torch.Generator().manual_seed(3)))
    A.diagonal().copy_(torch.tensor(s, dtype=D64))
    lam = lyapunov_spectrum_fn(lambda h, x: A @ h, torch.ones(5, dtype=D64), torch.zeros(1, 3, dtype=D64))
    assert torch.allclose(lam, expect, atol=1e-12)


def test_linear_map_symmetric():
    """W = Q diag(s) Q^T, Q random orthogonal: log|s| plus the exact 1/T transient of B^0 = I."""
    s = torch.tensor([1.2, 0.8, -0.6, 0.3], dtype=D64)
    Q = _orthogonal(4)
    W = Q @ torch.diag(s) @ Q.T
    T = 200
    lam = lyapunov_spectrum_fn(lambda h, x: W @ h, torch.ones(4, dtype=D64), torch.zeros(1, T, dtype=D64))
    assert torch.allclose(lam, _exact(Q, s, T), atol=1e-10)
    assert torch.allclose(lam, torch.sort(s.abs().log(), descending=True).values, atol=5 / T)


@pytest.mark.parametrize("kind", ["tanh", "gru", "lstm"])
def test_cells_at_the_zero_fixed_point(kind):
    """Zero biases, inputs and h0 keep every cell at h = 0 (and c = 0), where J is known:
    tanh RNN: W_hh; GRU (r = z = 1/2, n = 0): I/2 + W_hn/4; LSTM, c held fixed: W_hg/4.
    With W = Q diag(s) Q^T the exponents are exact (see _exact)."""
    H, T = 4, 200
    s = torch.tensor([0.9, 0.7, -0.4, 0.1], dtype=D64)
    Q = _orthogonal(H, seed=5)
    m = _module(kind, 1, hidden=H)
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.zero_() if "bias" in name else None
        block = {"tanh": 0, "gru": 2, "lstm": 2}[kind]
        m.weight_hh_l0[block * H:(block + 1) * H] = Q @ torch.diag(s) @ Q.T
    lam = lyapunov_spectrum(m, torch.zeros(T, 2, 3, dtype=D64))
    mu = {"tanh": s, "gru": 0.5 + 0.25 * s, "lstm": 0.25 * s}[kind]
    assert torch.allclose(lam, _exact(Q, mu, T), atol=1e-10)


def test_contracting_map_known_exponents():
    """A contracting tanh RNN under a constant input settles at a fixed point h*; there the
    exponents are log|eig(diag(1 - h*^2) W_hh)| (the one Jacobian every step)."""
    m = _module("tanh", 1, hidden=4, scale=0.6, seed=7)
    x = torch.full((1, 3), 0.3, dtype=D64)
    h = torch.zeros(1, 4, dtype=D64)
    with torch.no_grad():
        for _ in range(500):
            h = m(x, h)[1]
        J = torch.diag(1 - h[0] ** 2) @ m.weight_hh_l0
    assert torch.linalg.matrix_norm(J, 2) < 1  # contracting
    T, W = 4000, 300
    lam = lyapunov_spectrum(m, x.expand(W + T, 3).unsqueeze(1), warmup=W)
    expect = torch.sort(torch.linalg.eigvals(J).abs().log(), descending=True).values
    assert torch.allclose(lam, expect, atol=20 / T)


# ----------------------------------------------------------------------------- options, errors
def test_qr_methods_and_float32():
    m = _module("gru", 2)
    x = _inputs(m)
    base = lyapunov_spectrum(m, x, warmup=2)
    for qr in ("cholqr2", "batched"):
        assert torch.allclose(lyapunov_spectrum(m, x, warmup=2, qr=qr), base, atol=1e-8)
    m32 = _module("gru", 2).float()
    got = lyapunov_spectrum(m32, x.float(), warmup=2)
    assert got.dtype == torch.float32 and torch.allclose(got.double(), base, atol=1e-4)


def test_first_k_columns():
    m = _module("lstm", 2)
    x = _inputs(m)
    full = lyapunov_spectrum(m, x, per_sample=True, state="hc")
    assert lyapunov_spectrum(m, x, per_sample=True, state="hc", k=3).shape == (3, 3)
    assert full.shape == (3, 20)


def test_errors():
    x = torch.zeros(4, 2, 3)
    with pytest.raises(ConfigError, match="bidirectional"):
        lyapunov_spectrum(nn.GRU(3, 4, bidirectional=True), x)
    with pytest.raises(ConfigError, match="proj_size"):
        lyapunov_spectrum(nn.LSTM(3, 4, proj_size=2), x)
    with pytest.raises(ConfigError, match="LSTM"):
        lyapunov_spectrum(nn.GRU(3, 4), x, state="hc")
    with pytest.raises(ConfigError, match="lyapunov_spectrum_fn"):
        lyapunov_spectrum(nn.Linear(3, 4), x)
    with pytest.raises(ConfigError, match="k must be"):
        lyapunov_spectrum(nn.RNN(3, 4), x, k=5)
    with pytest.raises(ConfigError, match="warm-up"):
        lyapunov_spectrum(nn.RNN(3, 4), x, warmup=4)
    with pytest.raises(ConfigError, match="h0 has shape"):
        lyapunov_spectrum(nn.RNN(3, 4), x, h0=torch.zeros(1, 3, 4))
    with pytest.raises(ConfigError, match="tuple"):
        lyapunov_spectrum(nn.LSTM(3, 4), x, h0=torch.zeros(1, 2, 4))
    with pytest.raises(ConfigError, match="features"):
        lyapunov_spectrum(nn.RNN(5, 4), x)
    with pytest.raises(ConfigError, match="unknown qr"):
        lyapunov_spectrum(nn.RNN(3, 4), x, qr="gram")
    with pytest.raises(ConfigError, match="h0 must be"):
        lyapunov_spectrum_fn(lambda h, x: h, torch.zeros(3, 2), torch.zeros(2, 5))


def test_lazy_exports_and_cheap_import():
    assert lshx.lyapunov_spectrum is lyapunov_spectrum and lshx.lyapunov_spectrum_fn is lyapunov_spectrum_fn
    code = "import sys, lshx; print(any(m in sys.modules for m in ('torch', 'optuna', 'hyperopt')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    with pytest.raises(AttributeError):
        lshx.no_such_thing  # noqa: B018


# ----------------------------------------------------------------------------- reparametrized weights
def _plain_copy(m, weights):
    """A plain module of m's kind whose parameters are `weights` (name -> tensor)."""
    kw = {"nonlinearity": m.nonlinearity} if isinstance(m, nn.RNN) else {}
    c = type(m)(m.input_size, m.hidden_size, m.num_layers, bias=m.bias, batch_first=m.batch_first, **kw).to(D64)
    with torch.no_grad():
        for n, p in c.named_parameters():
            p.copy_(weights[n])
    return c


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_pruned_and_parametrized_weights(kind):
    """torch.nn.utils.prune / parametrize / weight_norm: the spectrum reads the effective
    weight (getattr), not the parameter of that name (there is none: weight_orig,
    parametrizations.*.original)."""
    import torch.nn.utils.prune as prune
    from torch.nn.utils import parametrize

    m = _module(kind, 2)
    x, h0 = _inputs(m), _h0(m, 3)
    prune.l1_unstructured(m, "weight_hh_l0", amount=0.5)
    prune.random_unstructured(m, "weight_ih_l1", amount=0.3)
    names = [n for n, _ in _module(kind, 2).named_parameters()]
    eff = {n: getattr(m, n).detach().clone() for n in names}
    assert (eff["weight_hh_l0"] == 0).float().mean() >= 0.5
    got = lyapunov_spectrum(m, x, h0=h0, warmup=2)
    assert torch.allclose(got, lyapunov_spectrum(_plain_copy(m, eff), x, h0=h0, warmup=2), atol=1e-12)
    assert not torch.allclose(got, lyapunov_spectrum(_module(kind, 2), x, h0=h0, warmup=2), atol=1e-6)

    class Half(nn.Module):
        def forward(self, w):
            return 0.5 * w

    m = _module(kind, 2)
    parametrize.register_parametrization(m, "weight_hh_l1", Half())
    m = nn.utils.parametrizations.weight_norm(m, "weight_ih_l0")
    eff = {n: getattr(m, n).detach().clone() for n in names}
    assert torch.allclose(eff["weight_hh_l1"], 0.5 * _module(kind, 2).weight_hh_l1)
    got = lyapunov_spectrum(m, x, h0=h0, warmup=2)
    assert torch.allclose(got, lyapunov_spectrum(_plain_copy(m, eff), x, h0=h0, warmup=2), atol=1e-12)


# ----------------------------------------------------------------------------- aux0, dtypes
def _aux_step(W):
    def step(h, x, c):
        c = 0.5 * c + x.sum()
        return torch.tanh(W @ h + c), c
    return step


def test_aux0_per_sequence_or_shared_from_its_own_shape():
    """aux0 is per sequence when its leading dimension is K, else shared, whatever h0 is;
    each case equals running the sequences one at a time."""
    torch.manual_seed(0)
    H, K = 3, 2
    W = torch.randn(H, H, dtype=D64)
    step = _aux_step(W)
    x = torch.randn(K, 6, 1, dtype=D64)
    h_shared, h_per = torch.full((H,), 0.1, dtype=D64), 0.3 * torch.randn(K, H, dtype=D64)
    a_shared, a_per = torch.randn(H, dtype=D64), torch.randn(K, H, dtype=D64)

    def one_by_one(h0, a0):
        rows = []
        for s in range(K):
            hs = h0 if h0.dim() == 1 else h0[s]
            as_ = a0 if a0.dim() == 1 else a0[s]
            rows.append(lyapunov_spectrum_fn(step, hs, x[s:s + 1], aux0=as_, warmup=1, per_sample=True)[0])
        return torch.stack(rows)

    for h0 in (h_shared, h_per):
        for a0 in (a_shared, a_per):
            got = lyapunov_spectrum_fn(step, h0, x, aux0=a0, warmup=1, per_sample=True)
            assert got.shape == (K, H)
            assert torch.allclose(got, one_by_one(h0, a0), atol=1e-12)


def test_step_function_dtype_and_shape_errors():
    torch.manual_seed(0)
    W = torch.randn(3, 3, dtype=D64)
    x = torch.randn(2, 6, 1, dtype=D64)
    with pytest.raises(ConfigError, match=r"returns torch.float64 for a torch.float32 state"):
        lyapunov_spectrum_fn(lambda h, x: torch.tanh(W @ h.double()), torch.zeros(3), x)
    with pytest.raises(ConfigError, match="floating"):
        lyapunov_spectrum_fn(lambda h, x: h, torch.zeros(3, dtype=torch.long), x)
    with pytest.raises(ConfigError, match=r"next state of shape \(N,\) = \(3,\)"):
        lyapunov_spectrum_fn(lambda h, x: h[:2], torch.zeros(3, dtype=D64), x)
    with pytest.raises(ConfigError, match="aux"):
        lyapunov_spectrum_fn(lambda h, x, c: (h, c[:1]), torch.zeros(3, dtype=D64), x, aux0=torch.zeros(2, 3))
    # float32 everywhere (inputs of another dtype are the step's business): fine
    lam = lyapunov_spectrum_fn(lambda h, x: torch.tanh(W.float() @ h + x.float().sum()), torch.zeros(3), x)
    assert lam.dtype == torch.float32


# ----------------------------------------------------------------------------- layouts and errors (issue 25)
def _tanh_step(N=4, D=3, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    W, U = (torch.randn(N, N, generator=g) / 2).to(dtype), torch.randn(N, D, generator=g).to(dtype)
    return lambda h, x: torch.tanh(W @ h + U @ x)


def test_step_function_layout_is_explicit_and_named_in_errors():
    step = _tanh_step()
    x = torch.randn(40, 2, 3)  # meant as (T, K, D)
    with pytest.raises(ConfigError, match=r"read as K = 40 sequences of T = 2 steps \(batch_first=True; pass "
                                          r"batch_first=False"):
        lyapunov_spectrum_fn(step, torch.zeros(4), x, warmup=10)
    a = lyapunov_spectrum_fn(step, torch.zeros(4), x, warmup=10, batch_first=False)
    b = lyapunov_spectrum_fn(step, torch.zeros(4), x.transpose(0, 1), warmup=10)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_dtype_mismatch_is_a_config_error_with_a_hint():
    step = _tanh_step(dtype=torch.float64)
    with pytest.raises(ConfigError, match=r"h0.double\(\)"):
        lyapunov_spectrum_fn(step, torch.zeros(4), torch.randn(2, 12, 3, dtype=torch.float64), warmup=2)
    assert lyapunov_spectrum_fn(step, torch.zeros(4, dtype=torch.float64),
                                torch.randn(2, 12, 3, dtype=torch.float64), warmup=2).dtype == torch.float64


def test_a_fused_cell_as_step_says_what_to_do():
    cell = torch.nn.LSTMCell(3, 4)

    def step(h, x, c):
        return cell(x, (h, c))

    with pytest.raises(ConfigError, match="fused cells.*torch ops"):
        lyapunov_spectrum_fn(step, torch.zeros(4), torch.randn(2, 12, 3), aux0=torch.zeros(4), warmup=2)
