"""lshx.ops.csr: the CSR path against the dense masked map, opcheck, gradcheck."""
import pytest
import torch

from lshx import ops

pytestmark = pytest.mark.skipif(not ops.HAS_EXTENSION, reason="lshx._C is not built")


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
    monkeypatch.setattr(ops.csr, "CSR_MIN_NUMEL", 0)  # use_csr reads it there
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
