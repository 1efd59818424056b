"""lshx.ops.rhn: the RHN recurrence op against its plain-torch reference, opcheck, gradcheck."""
import pytest
import torch

from lshx import ops

pytestmark = pytest.mark.skipif(not ops.HAS_EXTENSION, reason="lshx._C is not built")


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
    monkeypatch.setattr(ops.native, "HAS_EXTENSION", False)  # what use_native() reads
    monkeypatch.setattr(ops.native, "_warned", True)
    fallback = ops.rhn_recurrence(xp, s0, ws, bs, m)
    assert fallback[0].grad_fn.name() != native[0].grad_fn.name()  # the reference loop ran, not the op
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
