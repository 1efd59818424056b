"""lshx.ops.masked: masked_linear and masked_weight against the pure-torch references, opcheck,
gradcheck."""
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
