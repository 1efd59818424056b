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


def test_lyapunov_spectrum_cuda_matches_cpu():
    from lshx.lyapunov import LSConfig, lyapunov_spectrum
    from lshx.models import LSTMLM

    torch.manual_seed(0)
    m = LSTMLM(50, 16, 16, 2, dropout=0.0)
    tok = torch.randint(0, 50, (2, 15))
    cpu = lyapunov_spectrum(m, tok, LSConfig(warmup=3)).spectrum
    gpu = lyapunov_spectrum(m.cuda(), tok, LSConfig(warmup=3)).spectrum
    assert max(abs(a - b) for a, b in zip(cpu, gpu)) < 1e-3
