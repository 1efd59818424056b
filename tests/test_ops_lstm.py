"""lshx.ops.lstm: the sparse LSTM recurrence against torch.nn.LSTM and where it is taken."""
import pytest
import torch

from lshx import ops

pytestmark = pytest.mark.skipif(not ops.HAS_EXTENSION, reason="lshx._C is not built")


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
        calls = []
        # the model calls it through the package (ops.use_sparse_recurrence)
        monkeypatch.setattr(ops, "use_sparse_recurrence", lambda *a: calls.append(a) or True)
        got, (hg, cg) = model.rnn(x, state, masks)
    assert calls, "the patched use_sparse_recurrence was not called"
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
