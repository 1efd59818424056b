"""lshx.ops: native kernels against the pure-torch references, opcheck, gradcheck."""
import math

import pytest
import torch

from lshx import ops

pytestmark = pytest.mark.skipif(not ops.HAS_EXTENSION, reason="lshx._C is not built")


def _inputs(dtype=torch.float64, batch=(3, 4), din=7, dout=5, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*batch, din, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(dout, din, generator=g, dtype=dtype, requires_grad=True)
    m = torch.rand(dout, din, generator=g) < 0.4
    b = torch.randn(dout, generator=g, dtype=dtype, requires_grad=True) if bias else None
    return x, w, m, b


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_masked_linear_opcheck(bias, dtype):
    x, w, m, b = _inputs(dtype, bias=bias)
    torch.library.opcheck(torch.ops.lshx.masked_linear.default, (x, w, m, b))


def test_masked_linear_forward_equals_zeroed_dense():
    x, w, m, b = _inputs()
    y = ops.masked_linear(x, w, m, b)
    expected = x @ (w * m).t() + b
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-12)


def test_masked_linear_gradcheck():
    x, w, m, b = _inputs()
    # The weight gradient is dense by design, so gradcheck runs on x and b only and the
    # dense weight gradient is checked separately against the analytic one below.
    torch.autograd.gradcheck(lambda x_, b_: ops.masked_linear(x_, w.detach(), m, b_), (x, b))


def test_weight_gradient_is_dense():
    x, w, m, b = _inputs()
    ops.masked_linear(x, w, m, b).sum().backward()
    g2 = torch.ones(12, 5, dtype=torch.float64)
    torch.testing.assert_close(w.grad, g2.t() @ x.detach().reshape(12, 7))
    assert (w.grad[~m] != 0).any(), "the weight gradient must not be masked"


def test_native_equals_reference_backward():
    x, w, m, b = _inputs()
    x2, w2, b2 = (t.detach().clone().requires_grad_() for t in (x, w, b))
    ops.masked_linear(x, w, m, b).pow(2).sum().backward()
    ops.masked_linear_ref(x2, w2, m, b2).pow(2).sum().backward()
    for a, r in ((x, x2), (w, w2), (b, b2)):
        torch.testing.assert_close(a.grad, r.grad)


def test_masked_weight_straight_through():
    w = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    m = torch.rand(4, 3) < 0.5
    we = ops.masked_weight(w, m)
    torch.testing.assert_close(we, w.detach() * m)
    (we * 2).sum().backward()
    torch.testing.assert_close(w.grad, torch.full_like(w, 2.0))


def test_masked_linear_bad_shapes():
    w, m = torch.randn(4, 5), torch.ones(4, 5, dtype=torch.bool)
    with pytest.raises(RuntimeError, match="features"):  # the op (training path)
        ops.masked_linear(torch.randn(2, 3, requires_grad=True), w, m)
    with pytest.raises(RuntimeError):  # the cached inference path
        ops.masked_linear(torch.randn(2, 3), w, m)


@pytest.mark.parametrize("G,with_diag", [(4, False), (2, True)])
def test_row_combine_against_reference(G, with_diag):
    g = torch.Generator().manual_seed(1)
    K, H = 3, 6
    M = H if with_diag else 9
    w = torch.randn(G * H, M, generator=g, dtype=torch.float64)
    coef = torch.randn(K, G, H, generator=g, dtype=torch.float64)
    diag = torch.randn(K, H, generator=g, dtype=torch.float64) if with_diag else None
    out = ops.row_combine(w, coef, diag)
    # independent check: explicit sum_g diag(coef_g) @ W_g
    expected = sum(torch.diag_embed(coef[:, gi]) @ w[gi * H:(gi + 1) * H] for gi in range(G))
    if with_diag:
        expected = expected + torch.diag_embed(diag)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out, ops.row_combine_ref(w, coef, diag))
    torch.library.opcheck(torch.ops.lshx.row_combine.default, (w, coef, diag if with_diag else w.new_empty(0)))


def test_lyapunov_step_matches_linalg_qr():
    a = torch.randn(2, 8, 5, dtype=torch.float64)
    q, logr = ops.lyapunov_step(a)
    _, r = torch.linalg.qr(a)
    torch.testing.assert_close(logr, r.diagonal(dim1=-2, dim2=-1).abs().log())
    torch.testing.assert_close(q.transpose(1, 2) @ q, torch.eye(5, dtype=torch.float64).expand(2, 5, 5))
    torch.library.opcheck(torch.ops.lshx.lyapunov_step.default, (a,))


def test_cuda_version_on_cpu_build():
    assert isinstance(ops.cuda_version(), int)
    if not torch.cuda.is_available():
        assert ops.cuda_version() in (-1,) or ops.cuda_version() > 0


@pytest.mark.parametrize("density", [0.05, 0.3])
def test_csr_linear_against_dense(density):
    g = torch.Generator().manual_seed(2)
    w = torch.randn(40, 30, generator=g, dtype=torch.float64)
    m = torch.rand(40, 30, generator=g) < density
    m[3] = False  # an empty row
    x = torch.randn(2, 5, 30, generator=g, dtype=torch.float64)
    b = torch.randn(40, generator=g, dtype=torch.float64)
    s = ops.csr_structure(m)
    assert s.crow[-1] == int(m.sum()) and s.crow[4] == s.crow[3]
    y = ops.csr_linear(x, w, m, b)
    torch.testing.assert_close(y, x @ (w * m).t() + b)
    val = w.flatten()[s.gather]
    torch.library.opcheck(torch.ops.lshx.csr_linear.default, (x, s.crow, s.col, val, b))


def test_csr_structure_is_cached_per_mask_object():
    m = torch.rand(8, 8) < 0.5
    assert ops.csr_structure(m) is ops.csr_structure(m)
    m2 = m.clone()
    assert ops.csr_structure(m2) is not ops.csr_structure(m)
    m2[0, 0] = not bool(m2[0, 0])  # in-place change: rebuilt
    assert ops.csr_structure(m2).crow[-1] == int(m2.sum())


def test_masked_linear_picks_csr_for_sparse_inference(monkeypatch):
    monkeypatch.setattr(ops, "CSR_MIN_NUMEL", 0)
    w = torch.randn(30, 20)
    m = torch.zeros(30, 20, dtype=torch.bool)
    m.view(-1)[torch.randperm(600, generator=torch.Generator().manual_seed(0))[:45]] = True  # density 0.075
    x = torch.randn(4, 20)
    assert ops.use_csr(x, w, m)
    with torch.no_grad():
        torch.testing.assert_close(ops.masked_linear(x, w, m), x @ (w * m).t())
    assert not ops.use_csr(x, w.requires_grad_(), m)  # training: off unless CSR_TRAIN_MAX_DENSITY allows it


@pytest.mark.parametrize("batch", [1, 7, 20, 40])  # padded batch widths 8, 8, 24, 40 (> one 32-lane chunk)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_csr_linear_batch_widths(batch, dtype):
    g = torch.Generator().manual_seed(batch)
    w = torch.randn(50, 37, generator=g, dtype=dtype)
    m = torch.rand(50, 37, generator=g) < 0.2
    x = torch.randn(batch, 37, generator=g, dtype=dtype)
    with torch.no_grad():
        torch.testing.assert_close(ops.csr_linear(x, w, m), x @ (w * m).t())


def test_csr_transposed_structure():
    m = torch.rand(13, 9) < 0.4
    m[:, 2] = False  # an empty column: an empty row of W^T
    w = torch.randn(13, 9, dtype=torch.float64)
    s = ops.csr_structure(m)
    tcrow, tcol, tperm = s.transposed()
    val = w.flatten()[s.gather]
    wt = torch.sparse_csr_tensor(tcrow, tcol, val[tperm], (9, 13)).to_dense()
    torch.testing.assert_close(wt, (w * m).t())


@pytest.mark.parametrize("density", [0.05, 0.3])
def test_csr_linear_backward_against_autograd(density):
    """The CSR training path: grad_x equals autograd's on the dense masked weight; the
    weight gradient equals autograd's, masked (zero off the mask); the bias gradient too."""
    g = torch.Generator().manual_seed(5)
    m = torch.rand(40, 30, generator=g) < density
    m[0] = False
    w = torch.randn(40, 30, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(40, generator=g, dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, 4, 30, generator=g, dtype=torch.float64, requires_grad=True)
    ops.csr_linear(x, w, m, b).pow(2).sum().backward()
    got = (x.grad, w.grad, b.grad)
    x.grad = w.grad = b.grad = None
    torch.nn.functional.linear(x, w * m, b).pow(2).sum().backward()
    torch.testing.assert_close(got[0], x.grad)
    torch.testing.assert_close(got[1], w.grad * m)
    torch.testing.assert_close(got[2], b.grad)
    s = ops.csr_structure(m)
    val = w.detach().flatten()[s.gather]
    grad = torch.randn(3, 4, 40, dtype=torch.float64)
    ref = ops.csr_linear_backward_ref(grad, x.detach(), s.crow, s.col, val, 40)
    out = torch.ops.lshx.csr_linear_backward(grad, x.detach(), s.crow, s.col, val, *s.transposed())
    torch.testing.assert_close(out[0], ref[0])
    torch.testing.assert_close(out[1], ref[1])
    torch.library.opcheck(torch.ops.lshx.csr_linear_backward.default,
                          (grad, x.detach(), s.crow, s.col, val, *s.transposed()))


def test_csr_linear_gradcheck():
    m = torch.rand(6, 5) < 0.5
    w = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    # gradcheck of x only: the weight gradient is masked by design (zero off the mask)
    assert torch.autograd.gradcheck(lambda x: ops.csr_linear(x, w, m), (x,))


@pytest.mark.parametrize("k", [3, 8])
def test_cholqr2_matches_householder(k):
    a = torch.randn(3, 8, k, dtype=torch.float64)
    q, logr = ops.cholqr2(a)
    _, ref = ops.lyapunov_step(a)
    torch.testing.assert_close(logr, ref)
    torch.testing.assert_close(q.transpose(1, 2) @ q, torch.eye(k, dtype=torch.float64).expand(3, k, k))
    torch.testing.assert_close(q @ (q.transpose(1, 2) @ a), a)


def test_cholqr2_falls_back_when_ill_conditioned():
    a = torch.randn(2, 10, 4, dtype=torch.float32)
    a[:, :, 3] = a[:, :, 2] * (1 + 1e-7)  # numerically rank deficient: the Gram matrix is singular
    q, logr = ops.cholqr2(a)
    _, ref = ops.lyapunov_step(a)
    torch.testing.assert_close(logr[:, :3], ref[:, :3])


def test_inference_cache_follows_in_place_updates():
    w = torch.randn(6, 5)
    m = torch.rand(6, 5) < 0.5
    x = torch.randn(3, 5)
    with torch.no_grad():
        a = ops.masked_linear(x, w, m)
        w.mul_(2)  # an optimizer step: the version counter moves, the cache is rebuilt
        b = ops.masked_linear(x, w, m)
        torch.testing.assert_close(b, 2 * a)
        m[0] = ~m[0]  # an in-place topology change
        torch.testing.assert_close(ops.masked_linear(x, w, m), x @ (w * m).t())


@pytest.mark.parametrize("shape", [(3, 8, 8), (2, 12, 5), (1, 1, 1)])
def test_householder_qr_against_torch(shape):
    """lshx's batched Householder (the CUDA kernel's algorithm) against torch.linalg.qr:
    the same |R_jj|, an orthonormal Q and Q R = A."""
    a = torch.randn(*shape, dtype=torch.float64)
    q, logr = ops.householder_qr(a)
    _, r = torch.linalg.qr(a)
    torch.testing.assert_close(logr, r.diagonal(dim1=-2, dim2=-1).abs().log())
    k = shape[2]
    torch.testing.assert_close(q.transpose(1, 2) @ q, torch.eye(k, dtype=torch.float64).expand(shape[0], k, k))
    torch.testing.assert_close(q @ (q.transpose(1, 2) @ a), a)
    torch.library.opcheck(torch.ops.lshx.householder_qr.default, (a,))


def test_householder_qr_known_answer_and_zero_column():
    # columns e1 * 3 and (4, 0, 0)... : R = [[3, 4], [0, 0]] -> |R_11| = 0 floored, never -inf
    a = torch.tensor([[[3.0, 4.0], [0.0, 0.0], [0.0, 0.0]]], dtype=torch.float64)
    q, logr = ops.householder_qr(a)
    assert logr[0, 0].item() == pytest.approx(math.log(3.0))
    assert logr[0, 1].item() == pytest.approx(math.log(torch.finfo(torch.float64).tiny))
    # a diagonal matrix: |R_jj| are its entries
    d = torch.diag(torch.tensor([2.0, -0.5, 7.0])).unsqueeze(0)
    torch.testing.assert_close(ops.householder_qr(d)[1], torch.tensor([[2.0, 0.5, 7.0]]).log())


@pytest.mark.parametrize("density", [0.1, 0.5])
def test_lstm_recurrence_against_nn_lstm(density):
    """The persistent kernel's algorithm (CPU op) against torch.nn.LSTM on the masked weights."""
    torch.manual_seed(0)
    T, B, I, H = 6, 3, 5, 7
    lstm = torch.nn.LSTM(I, H, dtype=torch.float64)
    m = torch.rand(4 * H, H) < density
    with torch.no_grad():
        lstm.weight_hh_l0.mul_(m)
    x = torch.randn(T, B, I, dtype=torch.float64)
    h0, c0 = torch.randn(1, B, H, dtype=torch.float64), torch.randn(1, B, H, dtype=torch.float64)
    with torch.no_grad():
        want, (hT, cT) = lstm(x, (h0, c0))
        xp = x @ lstm.weight_ih_l0.t() + lstm.bias_ih_l0 + lstm.bias_hh_l0
        out, h, c = ops.lstm_recurrence(xp, h0[0], c0[0], lstm.weight_hh_l0, m)
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(h, hT[0])
    torch.testing.assert_close(c, cT[0])
    s = ops.csr_structure(m)
    val = lstm.weight_hh_l0.detach().flatten()[s.gather]
    torch.library.opcheck(torch.ops.lshx.lstm_recurrence.default, (xp, h0[0], c0[0], s.crow, s.col, val))


def test_lstm_model_persistent_path_matches(monkeypatch):
    """The model's inference through lstm_recurrence equals its per-step recurrence."""
    from lshx.models.lstm import LSTMLM

    torch.manual_seed(1)
    model = LSTMLM(30, 8, 8, 2, dropout=0.0).eval()
    masks = {f"weight_hh_l{k}": torch.rand(32, 8) < 0.3 for k in range(2)}
    x = torch.randn(5, 2, 8)
    state = model.init_state(2)
    with torch.no_grad():
        want, (hw, cw) = model.rnn(x, state, masks)
        monkeypatch.setattr(ops, "use_sparse_recurrence", lambda *a: True)
        got, (hg, cg) = model.rnn(x, state, masks)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(hg, hw)
    torch.testing.assert_close(cg, cw)


def test_sparse_recurrence_is_chosen_where_measured_faster():
    """CPU: only large W_hh (>= CSR_MIN_NUMEL) at density <= RECURRENCE_CPU_MAX_DENSITY, and
    never when a gradient is needed, of W_hh or of an input."""
    big = torch.empty(4 * 600, 600)  # 1.44M weights
    sparse = torch.zeros(big.shape, dtype=torch.bool)
    sparse.view(-1)[:int(0.05 * big.numel())] = True
    dense_ish = torch.ones(big.shape, dtype=torch.bool)
    assert ops.use_sparse_recurrence(big, sparse)
    assert not ops.use_sparse_recurrence(big.clone().requires_grad_(), sparse)
    assert not ops.use_sparse_recurrence(big, sparse, torch.zeros(3, requires_grad=True))
    assert not ops.use_sparse_recurrence(big, dense_ish)
    assert not ops.use_sparse_recurrence(big, None)
    small = torch.empty(4 * 200, 200)
    assert not ops.use_sparse_recurrence(small, torch.zeros(small.shape, dtype=torch.bool))


# ----------------------------------------------------------------------------- RHN recurrence
def _rhn_inputs(T=4, B=3, H=5, D=3, dtype=torch.float64, drop=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    xp = torch.randn(T, B, 2 * H, generator=g, dtype=dtype, requires_grad=True)
    s0 = torch.randn(B, H, generator=g, dtype=dtype, requires_grad=True)
    ws = [(torch.randn(2 * H, H, generator=g, dtype=dtype) / H ** 0.5).requires_grad_(True) for _ in range(D)]
    bs = [torch.randn(2 * H, generator=g, dtype=dtype, requires_grad=True) for _ in range(D)]
    m = ((torch.rand(B, H, generator=g) < 0.7).to(dtype) / 0.7) if drop else None
    return xp, s0, ws, bs, m


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("drop", [False, True])
@pytest.mark.parametrize("D", [1, 3])
def test_rhn_recurrence_equals_the_reference(dtype, drop, D):
    """The native op (forward and hand-written backward) against the plain-torch loop."""
    xp, s0, ws, bs, m = _rhn_inputs(T=6, B=4, H=7, D=D, dtype=dtype, drop=drop)
    tol = dict(atol=1e-12, rtol=0) if dtype == torch.float64 else dict(atol=1e-5, rtol=1e-5)
    got = ops.rhn_recurrence(xp, s0, ws, bs, m)
    want = ops.rhn_recurrence_ref(xp, s0, ws, bs, m)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **tol)
    g = torch.Generator().manual_seed(3)
    go, gs = torch.randn(got[0].shape, generator=g, dtype=dtype), torch.randn(got[1].shape, generator=g, dtype=dtype)
    params = [xp, s0, *ws, *bs]
    ga = torch.autograd.grad((got[0] * go).sum() + (got[1] * gs).sum(), params)
    gb = torch.autograd.grad((want[0] * go).sum() + (want[1] * gs).sum(), params)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("drop", [False, True])
def test_rhn_recurrence_gradcheck(drop):
    xp, s0, ws, bs, m = _rhn_inputs(T=3, B=2, H=3, D=2, drop=drop)
    D = len(ws)
    assert torch.autograd.gradcheck(lambda *p: ops.rhn_recurrence(p[0], p[1], p[2:2 + D], p[2 + D:], m),
                                    (xp, s0, *ws, *bs))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("drop", [False, True])
def test_rhn_recurrence_opcheck(dtype, drop):
    xp, s0, ws, bs, m = _rhn_inputs(dtype=dtype, drop=drop)
    torch.library.opcheck(torch.ops.lshx.rhn_recurrence.default, (xp, s0, ws, bs, m))
    with torch.no_grad():
        out, s, states, gates = torch.ops.lshx.rhn_recurrence(xp, s0, ws, bs, m)
    go, gs = torch.randn_like(out), torch.randn_like(s)
    torch.library.opcheck(torch.ops.lshx.rhn_recurrence_backward.default,
                          (go, gs, [w.detach() for w in ws], m, states, gates))


def test_rhn_recurrence_saves_the_micro_step_activations():
    """states[d, t] is the state entering micro-step d of step t, gates[d, t] its [tanh, sigmoid]."""
    xp, s0, ws, bs, m = _rhn_inputs(T=3, B=2, H=4, D=2)
    with torch.no_grad():
        out, s, states, gates = torch.ops.lshx.rhn_recurrence(xp, s0, ws, bs, m)
        sp = s0
        for t in range(3):
            for d in range(2):
                torch.testing.assert_close(states[d, t], sp)
                pre = (sp * m) @ ws[d].t() + bs[d] + (xp[t] if d == 0 else 0)
                torch.testing.assert_close(gates[d, t], torch.cat([pre[:, :4].tanh(), pre[:, 4:].sigmoid()], 1))
                h, g = gates[d, t, :, :4], gates[d, t, :, 4:]
                sp = h * g + sp * (1 - g)
            torch.testing.assert_close(out[t], sp)
    torch.testing.assert_close(s, sp)


def test_rhn_recurrence_zero_steps_and_bad_shapes():
    xp, s0, ws, bs, m = _rhn_inputs(T=0)
    out, s = ops.rhn_recurrence(xp, s0, ws, bs, m)
    assert out.shape == (0, 3, 5)
    torch.testing.assert_close(s, s0)
    gs = torch.autograd.grad(s.sum(), s0)[0]
    torch.testing.assert_close(gs, torch.ones_like(s0))
    xp, s0, ws, bs, m = _rhn_inputs()
    with pytest.raises(RuntimeError, match="2H"):
        torch.ops.lshx.rhn_recurrence(xp[..., :-1], s0, ws, bs, m)
    with pytest.raises(RuntimeError, match="biases"):
        torch.ops.lshx.rhn_recurrence(xp, s0, ws, bs[:-1], m)
    with pytest.raises(RuntimeError, match="drop"):
        torch.ops.lshx.rhn_recurrence(xp, s0, ws, bs, m[:, :-1])
    with pytest.raises(RuntimeError, match="dtypes"):
        torch.ops.lshx.rhn_recurrence(xp, s0.float(), ws, bs, m)


def test_rhn_recurrence_fallback_equals_the_native_op(monkeypatch):
    """Without the extension ops.rhn_recurrence is the reference loop: same values, same grads."""
    xp, s0, ws, bs, m = _rhn_inputs(T=5, B=2, H=6, D=2)
    native = ops.rhn_recurrence(xp, s0, ws, bs, m)
    gn = torch.autograd.grad(native[0].sum() + native[1].square().sum(), [xp, s0, *ws, *bs])
    monkeypatch.setattr(ops, "HAS_EXTENSION", False)
    monkeypatch.setattr(ops, "_warned", True)
    fallback = ops.rhn_recurrence(xp, s0, ws, bs, m)
    gf = torch.autograd.grad(fallback[0].sum() + fallback[1].square().sum(), [xp, s0, *ws, *bs])
    for a, b in zip(native + gn, fallback + gf):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_rhn_recurrence_restores_the_thread_counts():
    """Small recurrences run on the calling thread (OpenMP's and MKL's per-thread counts set to
    1 inside the op); both counts are back afterwards, forward and backward."""
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        before = torch.__config__.parallel_info()
        assert "mkl_get_max_threads() : 2" in before or "mkl_get_max_threads" not in before
        xp, s0, ws, bs, m = _rhn_inputs()
        out, s = ops.rhn_recurrence(xp, s0, ws, bs, m)
        (out.sum() + s.sum()).backward()
        assert torch.get_num_threads() == 2
        assert torch.__config__.parallel_info() == before
    finally:
        torch.set_num_threads(old)
