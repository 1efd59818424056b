"""CUDA kernels against the CPU path (skipped without a GPU or a CUDA build)."""
import pytest
import torch

from lshx import ops

cuda_ok = torch.cuda.is_available() and ops.HAS_EXTENSION and ops.cuda_version() > 0
pytestmark = pytest.mark.skipif(not cuda_ok, reason="needs a GPU and lshx._C built with CUDA (FORCE_CUDA=1)")


def test_masked_linear_cuda_matches_cpu():
    x, w = torch.randn(7, 30), torch.randn(40, 30)
    m, b = torch.rand(40, 30) < 0.3, torch.randn(40)
    ref = ops.masked_linear(x, w, m, b)
    got = ops.masked_linear(x.cuda(), w.cuda(), m.cuda(), b.cuda()).cpu()
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    torch.library.opcheck(torch.ops.lshx.masked_linear.default, (x.cuda(), w.cuda(), m.cuda(), b.cuda()))


def test_row_combine_and_step_cuda_match_cpu():
    w, coef, diag = torch.randn(4 * 16, 16), torch.randn(3, 4, 16), torch.randn(3, 16)
    torch.testing.assert_close(ops.row_combine(w.cuda(), coef.cuda()).cpu(), ops.row_combine(w, coef),
                               atol=1e-4, rtol=1e-4)
    w2, c2 = torch.randn(2 * 16, 16), torch.randn(3, 2, 16)
    torch.testing.assert_close(ops.row_combine(w2.cuda(), c2.cuda(), diag.cuda()).cpu(),
                               ops.row_combine(w2, c2, diag), atol=1e-4, rtol=1e-4)
    a = torch.randn(3, 20, 8)
    _, lr = ops.lyapunov_step(a.cuda())
    torch.testing.assert_close(lr.cpu(), ops.lyapunov_step(a)[1], atol=1e-4, rtol=1e-4)
    _, lc = ops.cholqr2(a.cuda())
    torch.testing.assert_close(lc.cpu(), ops.lyapunov_step(a)[1], atol=1e-3, rtol=1e-3)


def test_csr_linear_cuda_matches_cpu():
    w, m, x, b = torch.randn(50, 30), torch.rand(50, 30) < 0.1, torch.randn(6, 30), torch.randn(50)
    s = ops.csr_structure(m)
    val = w.flatten()[s.gather]
    got = torch.ops.lshx.csr_linear(x.cuda(), s.crow.cuda(), s.col.cuda(), val.cuda(), b.cuda()).cpu()
    torch.testing.assert_close(got, x @ (w * m).t() + b, atol=1e-4, rtol=1e-4)
    torch.library.opcheck(torch.ops.lshx.csr_linear.default,
                          (x.cuda(), s.crow.cuda(), s.col.cuda(), val.cuda(), b.cuda()))


def test_lyapunov_spectrum_cuda_matches_cpu():
    from lshx.lyapunov import LSConfig, lyapunov_spectrum
    from lshx.models import LSTMLM

    torch.manual_seed(0)
    m = LSTMLM(50, 16, 16, 2, dropout=0.0)
    tok = torch.randint(0, 50, (2, 15))
    cpu = lyapunov_spectrum(m, tok, LSConfig(warmup=3)).spectrum
    gpu = lyapunov_spectrum(m.cuda(), tok, LSConfig(warmup=3)).spectrum
    assert max(abs(a - b) for a, b in zip(cpu, gpu)) < 1e-3


@pytest.mark.parametrize("batch", [1, 20, 70])  # one warp, a partial warp, several warps of batch lanes
def test_csr_linear_backward_cuda_matches_cpu(batch):
    w = torch.randn(50, 30, requires_grad=True)
    m = torch.rand(50, 30) < 0.2
    m[7] = False  # an empty row
    x = torch.randn(batch, 30, requires_grad=True)
    gy = torch.randn(batch, 50)
    gx, gw = torch.autograd.grad(ops.csr_linear(x, w, m), (x, w), gy)
    wc = w.detach().cuda().requires_grad_()
    xc = x.detach().cuda().requires_grad_()
    gxc, gwc = torch.autograd.grad(ops.csr_linear(xc, wc, m.cuda()), (xc, wc), gy.cuda())
    torch.testing.assert_close(gxc.cpu(), gx, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gwc.cpu(), gw, atol=1e-4, rtol=1e-4)
    s = ops.csr_structure(m.cuda())
    val = wc.detach().flatten()[s.gather]
    torch.library.opcheck(torch.ops.lshx.csr_linear_backward.default,
                          (gy.cuda(), xc.detach(), s.crow, s.col, val, *s.transposed()))


@pytest.mark.parametrize("shape", [(3, 20, 8), (2, 64, 64), (4, 300, 40)])
def test_householder_qr_cuda_matches_cpu(shape):
    a = torch.randn(*shape)
    q, logr = ops.householder_qr(a.cuda())
    torch.testing.assert_close(logr.cpu(), ops.lyapunov_step(a.double())[1].float(), atol=1e-3, rtol=1e-3)
    k = shape[2]
    eye = torch.eye(k).expand(shape[0], k, k)
    torch.testing.assert_close((q.transpose(1, 2) @ q).cpu(), eye, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close((q @ (q.transpose(1, 2) @ a.cuda())).cpu(), a, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("H,batch", [(7, 3), (300, 20)])  # fewer units than SMs; several units per block
def test_lstm_recurrence_cuda_matches_cpu(H, batch):
    torch.manual_seed(0)
    T = 9
    w = torch.randn(4 * H, H) / H ** 0.5
    m = torch.rand(4 * H, H) < 0.33
    xp, h0, c0 = torch.randn(T, batch, 4 * H), torch.randn(batch, H), torch.randn(batch, H)
    want = ops.lstm_recurrence(xp, h0, c0, w, m)
    got = ops.lstm_recurrence(xp.cuda(), h0.cuda(), c0.cuda(), w.cuda(), m.cuda())
    for a, b in zip(got, want):
        torch.testing.assert_close(a.cpu(), b, atol=1e-4, rtol=1e-4)
