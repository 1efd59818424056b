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
    from lshx.lyapunov import LSConfig, model_spectrum as lyapunov_spectrum
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


# ----------------------------------------------------------------------------- cases of shared/reviews/cuda.md
two_gpus = pytest.mark.skipif(not (cuda_ok and torch.cuda.device_count() > 1), reason="needs two GPUs")


def test_lstm_recurrence_cuda_zero_steps_returns_the_initial_state():
    H, B = 16, 3
    w, m = torch.randn(4 * H, H).cuda(), (torch.rand(4 * H, H) < 0.3).cuda()
    h0, c0 = torch.randn(B, H).cuda(), torch.randn(B, H).cuda()
    out, h, c = ops.lstm_recurrence(torch.empty(0, B, 4 * H).cuda(), h0, c0, w, m)
    assert out.shape == (0, B, H)
    torch.testing.assert_close(h, h0, rtol=0, atol=0)
    torch.testing.assert_close(c, c0, rtol=0, atol=0)


# density 0.33 at H = 1500: the weights of a block fit in shared memory (~188 KB); 0.5 does
# not (the global-memory path); B = 350 puts several batch rows on each warp
@pytest.mark.parametrize("H,batch,density", [(1500, 20, 0.33), (1500, 20, 0.5), (1500, 350, 0.33)])
def test_lstm_recurrence_cuda_paper_size(H, batch, density):
    torch.manual_seed(0)
    T = 5
    w = torch.randn(4 * H, H) / H ** 0.5
    m = torch.rand(4 * H, H) < density
    xp, h0, c0 = torch.randn(T, batch, 4 * H), torch.randn(batch, H), torch.randn(batch, H)
    want = ops.lstm_recurrence_ref(xp.double(), h0.double(), c0.double(), (w * m).double())
    got = ops.lstm_recurrence(xp.cuda(), h0.cuda(), c0.cuda(), w.cuda(), m.cuda())
    for a, b in zip(got, want):
        torch.testing.assert_close(a.cpu().double(), b, atol=1e-4, rtol=1e-4)


def test_lstm_recurrence_cuda_checks_shapes_and_devices():
    H, B, T = 8, 2, 3
    m = torch.rand(4 * H, H) < 0.5
    s = ops.csr_structure(m.cuda())
    val = torch.randn(s.col.numel()).cuda()
    xp, h0, c0 = torch.randn(T, B, 4 * H).cuda(), torch.randn(B, H).cuda(), torch.randn(B, H).cuda()
    with pytest.raises(RuntimeError, match="h0 and c0"):
        torch.ops.lshx.lstm_recurrence(xp, h0[:1], c0, s.crow, s.col, val)
    with pytest.raises(RuntimeError, match="is on cpu"):
        torch.ops.lshx.lstm_recurrence(xp, h0, c0, s.crow.cpu(), s.col, val)


def test_row_combine_cuda_rectangular_and_large():
    w, coef = torch.randn(4 * 16, 24), torch.randn(3, 4, 16)  # M != H: the w_ih blocks
    torch.testing.assert_close(ops.row_combine(w.cuda(), coef.cuda()).cpu(), ops.row_combine(w, coef),
                               atol=1e-4, rtol=1e-4)
    w, coef = torch.randn(2 * 1500, 3000), torch.randn(4, 2, 1500)  # K*H*M = 18M > 65535 * 256
    torch.testing.assert_close(ops.row_combine(w.cuda(), coef.cuda()).cpu(), ops.row_combine(w, coef),
                               atol=1e-4, rtol=1e-4)
    with pytest.raises(RuntimeError, match="diag"):
        torch.ops.lshx.row_combine(torch.randn(32, 16).cuda(), torch.randn(3, 2, 16).cuda(),
                                   torch.randn(2, 16).cuda())


def test_lyapunov_step_cuda_refuses_k_above_n():
    with pytest.raises(RuntimeError, match="k must not exceed N"):
        torch.ops.lshx.lyapunov_step(torch.randn(2, 4, 6).cuda())


def test_apply_mask_cuda_agrees_with_cpu_on_nan_and_large_n():
    n = 4100  # n * n = 16.81M weights: more than one pass of the grid-stride loop
    torch.manual_seed(0)
    w, m = torch.randn(n, n), torch.rand(n, n) < 0.3
    w[3, :7] = float("nan")
    m[3, :5] = False  # masked NaNs stay NaN (w * mask), as on the CPU
    x = torch.eye(n)  # y = (W * M)^T exactly: one product by 1.0 per output
    want = ops.masked_linear(x, w, m)
    got = ops.masked_linear(x.cuda(), w.cuda(), m.cuda()).cpu()
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
    assert torch.isnan(got[:, 3]).all()
    with pytest.raises(RuntimeError, match="is on cpu"):
        torch.ops.lshx.masked_linear(x[:2].cuda(), w.cuda(), m, None)


def _householder_float_floor_ref(a):
    """log|R_jj| from a float64 LAPACK QR, floored where float32 floors (FLT_MIN)."""
    _, r = torch.linalg.qr(a.double())
    return r.diagonal(dim1=-2, dim2=-1).abs().clamp_min(torch.finfo(torch.float32).tiny).log()


@pytest.mark.parametrize("shape", [(2, 400, 300), (200, 24, 8)])  # k > 256 threads; K > 132 SMs
def test_householder_qr_cuda_large_k_and_many_samples(shape):
    torch.manual_seed(0)
    a = torch.randn(*shape)
    q, logr = ops.householder_qr(a.cuda())
    torch.testing.assert_close(logr.cpu().double(), _householder_float_floor_ref(a), atol=2e-3, rtol=1e-3)
    q_cpu, logr_cpu = ops.householder_qr(a)  # the same algorithm on the CPU: close, not only equivalent
    torch.testing.assert_close(q.cpu(), q_cpu, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(logr.cpu(), logr_cpu, atol=1e-4, rtol=1e-4)


def test_householder_qr_cuda_zero_rank_deficient_and_scaled_columns():
    torch.manual_seed(0)
    a = torch.randn(3, 40, 6)
    a[0, :, 2] = 0  # a zero column: floored at log(FLT_MIN)
    a[1, :, 3] = 2 * a[1, :, 1]  # rank deficient: R_33 ~ 0
    a[2, :, 1] *= 1e-25  # squares underflow in float: the norm is summed in double
    a[2, :, 4] *= 1e25  # squares overflow in float
    _, logr = ops.householder_qr(a.cuda())
    logr, ref = logr.cpu().double(), _householder_float_floor_ref(a)
    floor = torch.finfo(torch.float32).tiny
    assert logr[0, 2].item() == pytest.approx(torch.tensor(floor).log().item())
    assert logr[1, 3].item() < -10
    torch.testing.assert_close(logr[2], ref[2], atol=1e-3, rtol=1e-4)  # -57 and +58, not -87 or inf
    keep = torch.ones_like(logr, dtype=torch.bool)
    keep[0, 2] = False
    keep[1, 3:] = False  # after a rank-deficient column the reflector is built from roundoff: ill-posed
    torch.testing.assert_close(logr[keep], ref[keep], atol=1e-3, rtol=1e-3)


def test_csr_linear_cuda_3d_empty_int32_and_side_stream():
    torch.manual_seed(0)
    w, m, b = torch.randn(50, 30), torch.rand(50, 30) < 0.2, torch.randn(50)
    x = torch.randn(4, 5, 30)
    s = ops.csr_structure(m)
    val = w.flatten()[s.gather]
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        got = torch.ops.lshx.csr_linear(x.cuda(), s.crow.cuda(), s.col.int().cuda(), val.cuda(), b.cuda())
    stream.synchronize()
    torch.testing.assert_close(got.cpu(), x @ (w * m).t() + b, atol=1e-4, rtol=1e-4)
    empty = ops.csr_structure(torch.zeros(50, 30, dtype=torch.bool))
    got = torch.ops.lshx.csr_linear(x.cuda(), empty.crow.cuda(), empty.col.cuda(), torch.empty(0).cuda(), b.cuda())
    torch.testing.assert_close(got.cpu(), b.expand(4, 5, 50))
    with pytest.raises(RuntimeError, match="bias"):
        torch.ops.lshx.csr_linear(x.cuda(), s.crow.cuda(), s.col.cuda(), val.cuda(), b[:3].cuda())
    with pytest.raises(RuntimeError, match="lengths differ"):
        torch.ops.lshx.csr_linear(x.cuda(), s.crow.cuda(), s.col.cuda(), val[:-1].cuda(), b.cuda())


@two_gpus
def test_ops_run_on_the_second_gpu():
    dev = torch.device("cuda:1")
    w, m, x = torch.randn(50, 30), torch.rand(50, 30) < 0.2, torch.randn(6, 30)
    got = ops.csr_linear(x.to(dev), w.to(dev), m.to(dev))
    assert got.device == dev
    torch.testing.assert_close(got.cpu(), x @ (w * m).t(), atol=1e-4, rtol=1e-4)
    H = 12
    wr, mr = torch.randn(4 * H, H), torch.rand(4 * H, H) < 0.5
    xp, h0, c0 = torch.randn(4, 2, 4 * H), torch.randn(2, H), torch.randn(2, H)
    got = ops.lstm_recurrence(xp.to(dev), h0.to(dev), c0.to(dev), wr.to(dev), mr.to(dev))
    for a, b in zip(got, ops.lstm_recurrence(xp, h0, c0, wr, mr)):
        torch.testing.assert_close(a.cpu(), b, atol=1e-4, rtol=1e-4)


def test_fused_lstm_training_on_cuda_matches_the_loop():
    from lshx.models import LSTMLM

    torch.manual_seed(0)
    model = LSTMLM(60, 24, 24, 2, dropout=0.0).cuda()
    masks = {n: (torch.rand(p.shape) < 0.4).cuda() for n, p in model.named_parameters() if p.dim() == 2}
    model.set_masks(masks)
    model.apply_masks_()
    ids = torch.randint(0, 60, (9, 4)).cuda()
    grads = []
    for fused in (True, False):
        model.rnn.fused = fused
        model.zero_grad()
        logits, _ = model(ids)
        logits.square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], atol=1e-5, rtol=1e-4)


def test_fused_lstm_weights_are_flat_for_cudnn_and_train_without_copies():
    """After .cuda() each layer's four parameters share one buffer in cuDNN's layout, so cuDNN
    warns of no per-call copy; the numbers are those of the CPU model."""
    import warnings

    from lshx.models import LSTMLM

    torch.manual_seed(0)
    cpu = LSTMLM(60, 24, 24, 2, dropout=0.0)
    model = LSTMLM(60, 24, 24, 2, dropout=0.0)
    model.load_state_dict(cpu.state_dict())
    model = model.cuda()
    for k in range(2):
        ws = model.rnn.layer_weights(k)
        assert len({w.untyped_storage().data_ptr() for w in ws}) == 1, f"layer {k} is not flat"
    masks = {n: torch.rand(p.shape) < 0.4 for n, p in cpu.named_parameters() if p.dim() == 2}
    for m in (cpu, model):
        m.set_masks({n: v.to(next(m.parameters()).device) for n, v in masks.items()})
        m.apply_masks_()
    ids = torch.randint(0, 60, (9, 4))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*contiguous chunk.*")
        logits, _ = model(ids.cuda())
        logits.square().mean().backward()
    ref, _ = cpu(ids)
    ref.square().mean().backward()
    torch.testing.assert_close(logits.cpu(), ref, atol=1e-4, rtol=1e-4)
    for (n, p), (_, q) in zip(model.named_parameters(), cpu.named_parameters()):
        torch.testing.assert_close(p.grad.cpu(), q.grad, atol=1e-4, rtol=1e-3, msg=n)


def test_cuda_dropout_stream_survives_a_resume(tmp_path):
    """Epochs 1+2 in one trainer equal epoch 1, checkpoint, a new trainer, epoch 2: the CUDA
    generator (dropout) is saved and restored with the CPU one."""
    from conftest import DATA
    from lshx.checkpoint import load_checkpoint
    from lshx.train import TrainConfig, Trainer

    cfg = TrainConfig.from_preset("ptb-lstm", "smoke", data=DATA, epochs=2, device="cuda")
    one = Trainer(cfg, quiet=True, progress=False)
    one.run_epoch()
    one.save(tmp_path / "last.pt")
    want = one.run_epoch()["val_ppl"]
    two = Trainer(cfg, quiet=True, progress=False)
    torch.cuda.manual_seed(12345)  # whatever the generator holds now must not matter
    two.restore(load_checkpoint(tmp_path / "last.pt"))
    assert two.run_epoch()["val_ppl"] == want


def _rhn_leaves(T, B, H, D, drop, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    xp = torch.randn(T, B, 2 * H, generator=g)
    s0 = torch.randn(B, H, generator=g)
    ws = [torch.randn(2 * H, H, generator=g) / H ** 0.5 for _ in range(D)]
    bs = [torch.randn(2 * H, generator=g) for _ in range(D)]
    m = (torch.rand(B, H, generator=g) < 0.7).float() / 0.7 if drop else None
    leaves = [t.to(device).requires_grad_(True) for t in [xp, s0, *ws, *bs]]
    return leaves, (m.to(device) if drop else None)


@pytest.mark.parametrize("drop", [False, True])
@pytest.mark.parametrize("T,B,H,D", [(6, 5, 40, 1), (5, 3, 300, 3)])  # one block of threads; several
def test_rhn_recurrence_cuda_matches_cpu(T, B, H, D, drop):
    """Forward (out, s_T, the saved states and gates) and backward (every input's gradient) of
    the CUDA op against the CPU op, float32."""
    outs = {}
    for dev in ("cpu", "cuda"):
        leaves, m = _rhn_leaves(T, B, H, D, drop, dev)
        xp, s0, ws, bs = leaves[0], leaves[1], leaves[2:2 + D], leaves[2 + D:]
        out, s, states, gates = torch.ops.lshx.rhn_recurrence(xp, s0, ws, bs, m)
        g = torch.Generator().manual_seed(1)
        go, gs = torch.randn(out.shape, generator=g).to(dev), torch.randn(s.shape, generator=g).to(dev)
        grads = torch.autograd.grad((out * go).sum() + (s * gs).sum(), leaves)
        outs[dev] = [t.detach().cpu() for t in (out, s, states, gates, *grads)]
    for a, b in zip(outs["cuda"], outs["cpu"]):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_rhn_recurrence_cuda_opcheck():
    leaves, m = _rhn_leaves(4, 3, 16, 2, True, "cuda")
    xp, s0, ws, bs = leaves[0], leaves[1], leaves[2:4], leaves[4:]
    torch.library.opcheck(torch.ops.lshx.rhn_recurrence.default, (xp, s0, ws, bs, m))
    with torch.no_grad():
        out, s, states, gates = torch.ops.lshx.rhn_recurrence(xp, s0, ws, bs, m)
    torch.library.opcheck(torch.ops.lshx.rhn_recurrence_backward.default,
                          (torch.randn_like(out), torch.randn_like(s), [w.detach() for w in ws], m, states, gates))


def test_fused_rhn_training_on_cuda_matches_the_loop():
    from lshx.models import RHNLM

    torch.manual_seed(0)
    model = RHNLM(60, hidden_size=32, depth=3, dropout_hidden=0.3).cuda()
    masks = {n: (torch.rand(p.shape) < 0.5).cuda() for n, p in model.named_parameters() if p.dim() == 2}
    model.set_masks(masks)
    model.apply_masks_()
    model.train()
    ids = torch.randint(0, 60, (9, 4)).cuda()
    grads = []
    for fused in (True, False):
        model.rnn.fused = fused
        model.zero_grad()
        torch.manual_seed(3)  # the same dropout masks in both paths
        logits, _ = model(ids)
        logits.square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], atol=1e-5, rtol=1e-4)
