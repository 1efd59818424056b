"""lshx.ops.lyapunov: row_combine and the batched QRs against the references and torch.linalg,
opcheck."""
import math

import pytest
import torch

from lshx import ops

pytestmark = pytest.mark.skipif(not ops.HAS_EXTENSION, reason="lshx._C is not built")


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
