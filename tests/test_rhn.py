"""The RHN's fused recurrence (ops.rhn_recurrence) against the per-step loop it replaces."""
import pytest
import torch

from lshx import ops
from lshx.models import RHNLM

V = 40


def _rhn(depth, masked=True, apply=True, dtype=torch.float64, hidden=10, seed=0):
    torch.manual_seed(seed)
    model = RHNLM(V, hidden_size=hidden, depth=depth, dropout_output=0.3, dropout_hidden=0.4, dropout_input=0.3,
                  dropout_words=0.2).to(dtype)
    if masked:
        gen = torch.Generator().manual_seed(seed + 1)
        model.set_masks({n: torch.rand(p.shape, generator=gen) < 0.5 for n, p in model.named_parameters()
                         if n in model.maskable_names()})
        if apply:
            model.apply_masks_()
    return model


def _run(model, ids, fused, seed=5):
    """Loss, logits, final state and the gradients of every parameter and of the initial state."""
    model.rnn.fused = fused
    model.zero_grad()
    s0 = (0.3 * torch.randn(ids.size(1), model.hidden_size, generator=torch.Generator().manual_seed(9))).to(
        model.decoder_bias.dtype).requires_grad_(True)
    torch.manual_seed(seed)  # the same dropout masks (word, input, hidden, output) in both paths
    logits, s = model(ids, s0)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), ids.roll(-1, 0).reshape(-1)) + \
        (s * torch.linspace(-1, 1, s.numel(), dtype=s.dtype).view_as(s)).sum()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    grads["s0"] = s0.grad.clone()
    return loss.detach(), logits.detach(), s.detach(), grads


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("masked", [False, True])
def test_fused_rhn_training_equals_the_per_step_loop_float64(depth, masked):
    """Dropout on (hidden: one mask shared by every micro-step, drawn once in Python for both
    paths): the same logits, loss, final state and gradients (every parameter, the state)."""
    model = _rhn(depth, masked)
    model.train()
    ids = torch.randint(0, V, (7, 3), generator=torch.Generator().manual_seed(2))
    got, want = _run(model, ids, fused=True), _run(model, ids, fused=False)
    for a, b in zip(got[:3], want[:3]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert set(got[3]) == set(want[3])
    for n in want[3]:
        torch.testing.assert_close(got[3][n], want[3][n], atol=1e-5, rtol=0, msg=n)
    assert got[3]["s0"].abs().sum() > 0 and got[3]["rnn.weight_hh_l0"].abs().sum() > 0
    # with masks, the recurrent weight gradients are the dense ones (growth reads them), as in the loop
    if masked:
        off = ~model.masks["rnn.weight_hh_l0"]
        assert got[3]["rnn.weight_hh_l0"][off].abs().sum() > 0


def test_fused_rhn_eval_equals_the_loop_and_masks_inexact_weights():
    """Eval (no dropout, no grad), masks set but the weights nonzero off them: the fused path
    masks them first, as the loop does."""
    model = _rhn(2, masked=True, apply=False)
    assert model.exact_masked() == set()
    model.eval()
    ids = torch.randint(0, V, (6, 2))
    with torch.no_grad():
        model.rnn.fused = True
        fused, sf = model(ids)
        model.rnn.fused = False
        loop, sl = model(ids)
    torch.testing.assert_close(fused, loop, atol=1e-10, rtol=0)
    torch.testing.assert_close(sf, sl, atol=1e-10, rtol=0)


def test_fused_rhn_uses_exact_weights_as_they_are(monkeypatch):
    """Weights known to be zero off their masks (MaskedLM.exact_masked) reach the op as the
    parameters themselves; a weight written after apply_masks_ is masked first."""
    seen = []
    original = ops.rhn_recurrence

    def spy(xp, s0, weights, biases, drop=None):
        seen.append((list(weights), drop))
        return original(xp, s0, weights, biases, drop)

    monkeypatch.setattr(ops, "rhn_recurrence", spy)
    model = _rhn(2, masked=True, apply=True)
    model.train()
    model(torch.randint(0, V, (4, 3)))
    weights, drop = seen[-1]
    assert all(w is getattr(model.rnn, f"weight_hh_l{d}") for d, w in enumerate(weights))
    assert drop is not None and drop.shape == (3, model.hidden_size) and (drop == 0).any()
    with torch.no_grad():
        model.rnn.weight_hh_l1.add_(1.0)  # no longer exact
    model(torch.randint(0, V, (4, 3)))
    weights, _ = seen[-1]
    assert weights[0] is model.rnn.weight_hh_l0 and weights[1] is not model.rnn.weight_hh_l1
    torch.testing.assert_close(weights[1], model.rnn.weight_hh_l1 * model.masks["rnn.weight_hh_l1"])


def test_fused_rhn_float32_close_to_the_loop():
    model = _rhn(3, masked=True, dtype=torch.float32, hidden=16)
    model.train()
    ids = torch.randint(0, V, (9, 4))
    got, want = _run(model, ids, fused=True), _run(model, ids, fused=False)
    torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-5)
    for n in want[3]:
        torch.testing.assert_close(got[3][n], want[3][n], atol=1e-5, rtol=1e-4, msg=n)


def test_step_is_unchanged_by_the_fused_path():
    """step() (the Lyapunov code's) still runs micro-step by micro-step and agrees with the
    fused forward."""
    model = _rhn(3, masked=True)
    model.eval()
    ids = torch.randint(0, V, (5, 2))
    with torch.no_grad():
        logits, s = model(ids)
        state = model.init_state(2)
        for t in range(5):
            state, info = model.step(ids[t], state)
    assert len(info) == 3
    torch.testing.assert_close(state, s, atol=1e-12, rtol=0)


def test_fused_rhn_falls_back_where_there_is_no_kernel():
    """bfloat16 (no native kernel) goes through the reference loop instead of failing."""
    model = _rhn(2, masked=False, dtype=torch.bfloat16, hidden=8)
    model.eval()
    ids = torch.randint(0, V, (4, 2))
    with torch.no_grad():
        model.rnn.fused = True
        fused, _ = model(ids)
        model.rnn.fused = False
        loop, _ = model(ids)
    torch.testing.assert_close(fused, loop)
