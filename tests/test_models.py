"""Models: nn.LSTM equivalence, state_dict keys, masking semantics, RHN shapes."""
import pytest
import torch
from torch import nn

from lshx.models import LSTMLM, RHNLM, build_model


def test_lstm_equals_torch_lstm():
    torch.manual_seed(0)
    ours = LSTMLM(30, emb_size=6, hidden_size=5, num_layers=2, dropout=0.0)
    ref = nn.LSTM(6, 5, 2)
    ref.load_state_dict({k[4:]: v for k, v in ours.state_dict().items() if k.startswith("rnn.")})
    x = torch.randn(7, 3, 6)
    h0 = torch.randn(2, 3, 5)
    c0 = torch.randn(2, 3, 5)
    ours.eval()
    out, (h, c) = ours.rnn(x, (h0, c0), {})
    rout, (rh, rc) = ref(x, (h0, c0))
    torch.testing.assert_close(out, rout, atol=1e-5, rtol=0)
    torch.testing.assert_close(h, rh, atol=1e-5, rtol=0)
    torch.testing.assert_close(c, rc, atol=1e-5, rtol=0)


def test_lstm_state_dict_keys():
    m = LSTMLM(30, 6, 5, 2)
    assert list(m.state_dict()) == [
        "encoder.weight",
        "rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0",
        "rnn.weight_ih_l1", "rnn.weight_hh_l1", "rnn.bias_ih_l1", "rnn.bias_hh_l1",
        "decoder.weight", "decoder.bias",
    ]
    assert m.maskable_names() == ["encoder.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l0",
                                  "rnn.weight_ih_l1", "rnn.weight_hh_l1", "decoder.weight"]


def test_masks_equal_zeroed_weights():
    """A masked model computes what the dense model with those weights zeroed computes."""
    torch.manual_seed(1)
    for m in (LSTMLM(30, 6, 5, 2, dropout=0.0), RHNLM(30, 6, 3, 0, 0, 0, 0)):
        m.eval()
        masks = {n: torch.rand_like(p) < 0.5 for n, p in m.named_parameters() if n in m.maskable_names()}
        zeroed = build_model({**m.model_args})
        zeroed.load_state_dict(m.state_dict())
        zeroed.eval()
        with torch.no_grad():
            for n, p in zeroed.named_parameters():
                if n in masks:
                    p.mul_(masks[n])
        m.set_masks(masks)
        ids = torch.randint(0, 30, (4, 2))
        torch.testing.assert_close(m(ids)[0], zeroed(ids)[0])


def test_step_matches_forward():
    torch.manual_seed(2)
    for m in (LSTMLM(30, 6, 5, 2, dropout=0.0), RHNLM(30, 6, 3, 0, 0, 0, 0)):
        m.eval()
        ids = torch.randint(0, 30, (5, 3))
        logits, _ = m(ids)
        state = m.init_state(3)
        for t in range(5):
            state, _ = m.step(ids[t], state)
        last = state[0][-1] if isinstance(state, tuple) else state
        torch.testing.assert_close(m.decode(last) if isinstance(m, LSTMLM) else
                                   torch.nn.functional.linear(last, m.encoder.weight, m.decoder_bias), logits[-1])


def test_rhn_tied_and_keys():
    m = RHNLM(40, hidden_size=8, depth=2)
    assert "decoder.weight" not in m.state_dict()
    assert list(m.state_dict()) == ["decoder_bias", "encoder.weight", "rnn.weight_ih", "rnn.bias_ih",
                                    "rnn.weight_hh_l0", "rnn.bias_hh_l0", "rnn.weight_hh_l1", "rnn.bias_hh_l1"]
    assert m.maskable_names() == ["encoder.weight", "rnn.weight_ih", "rnn.weight_hh_l0", "rnn.weight_hh_l1"]
    m.train()
    logits, s = m(torch.randint(0, 40, (6, 3)))
    assert logits.shape == (6, 3, 40) and s.shape == (3, 8)


def test_rhn_biases_as_selfish_rnn():
    """Selfish-RNN's HighwayBlock: the first micro-step adds the input Linear's bias and R's
    bias; every bias has nn.Linear's default init U(-1/sqrt(fan_in), 1/sqrt(fan_in)), no -2
    transform-gate bias."""
    torch.manual_seed(0)
    H, E = 50, 30
    rnn = RHNLM(40, hidden_size=H, depth=2).rnn
    big = type(rnn)(E, H, 2)
    for b, fan_in in ((big.bias_ih, E), (big.bias_hh_l0, H), (big.bias_hh_l1, H)):
        assert b.shape == (2 * H,)
        assert b.abs().max() <= fan_in ** -0.5 and b.abs().max() > 0.8 * fan_in ** -0.5
        assert b[H:].mean().abs() < 0.1  # no negative gate bias
    assert big.weight_ih.abs().max() <= E ** -0.5 and big.weight_ih.abs().max() > 0.9 * E ** -0.5
    # the first micro-step: tanh/sigmoid of W x + b_W + R s + b_R
    x, s = torch.randn(3, 1, E), torch.randn(1, H)
    out, _ = big(x[:1], s, {})
    pre = x[0] @ big.weight_ih.T + big.bias_ih + s @ big.weight_hh_l0.T + big.bias_hh_l0
    h, t = torch.tanh(pre[:, :H]), torch.sigmoid(pre[:, H:])
    s1 = h * t + s * (1 - t)
    pre = s1 @ big.weight_hh_l1.T + big.bias_hh_l1
    h, t = torch.tanh(pre[:, :H]), torch.sigmoid(pre[:, H:])
    torch.testing.assert_close(out[0], h * t + s1 * (1 - t))


def test_rhn_one_hidden_dropout_mask_for_all_micro_steps(monkeypatch):
    """Selfish-RNN's RecurrentHighway draws one hidden-dropout mask per sequence, shared by
    every micro-step and timestep (lshx drew one per micro-step)."""
    from lshx.models.rhn import RHN

    seen = []
    original = RHN.micro_step

    def spy(self, d, s, xp_t, masks, drop=None, weights=None):
        seen.append(drop)
        return original(self, d, s, xp_t, masks, drop, weights)

    monkeypatch.setattr(RHN, "micro_step", spy)
    m = RHNLM(40, hidden_size=16, depth=4, dropout_hidden=0.5)
    m.rnn.fused = False  # the per-step loop (the reference path) calls micro_step
    m.train()
    m(torch.randint(0, 40, (3, 5)))
    assert len(seen) == 12 and seen[0] is not None
    assert all(torch.equal(d, seen[0]) for d in seen)
    assert (seen[0] == 0).any() and (seen[0] != 0).any()


def test_build_model_roundtrip():
    m = LSTMLM(30, 6, 5, 2)
    assert build_model(m.model_args).model_args == m.model_args


def _masked_lstm(dtype=torch.float64, dropout=0.3, apply=True):
    torch.manual_seed(0)
    model = LSTMLM(40, 12, 10, 2, dropout=dropout).to(dtype)
    gen = torch.Generator().manual_seed(1)
    model.set_masks({n: torch.rand(p.shape, generator=gen) < 0.4 for n, p in model.named_parameters()
                     if p.dim() == 2})
    if apply:
        model.apply_masks_()
    return model


def _loss_and_grads(model, ids, fused, seed=5):
    model.rnn.fused = fused
    model.zero_grad()
    torch.manual_seed(seed)  # the same dropout masks for both paths
    logits, (h, c) = model(ids)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 40), ids.roll(-1, 0).reshape(-1)) + h.sum() + c.sum()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_fused_lstm_training_equals_the_per_step_loop_float64():
    model = _masked_lstm()
    model.train()
    ids = torch.randint(0, 40, (11, 3))
    loss_f, grads_f = _loss_and_grads(model, ids, fused=True)
    loss_l, grads_l = _loss_and_grads(model, ids, fused=False)
    torch.testing.assert_close(loss_f, loss_l, atol=1e-5, rtol=0)
    for n in grads_l:
        torch.testing.assert_close(grads_f[n], grads_l[n], atol=1e-5, rtol=0)


def _assert_fused_forward_matches_loop(model):
    model.eval()
    ids = torch.randint(0, 40, (7, 2))
    model.rnn.fused = True
    fused, _ = model(ids)
    model.rnn.fused = False
    loop, _ = model(ids)
    torch.testing.assert_close(fused, loop, atol=1e-10, rtol=0)


def test_fused_lstm_masks_weights_not_known_to_be_exact():
    model = _masked_lstm(apply=False)  # masks set, weights still nonzero outside them
    assert model.exact_masked() == set()
    _assert_fused_forward_matches_loop(model)
    model.apply_masks_()
    assert model.exact_masked() == set(model.masks)
    with torch.no_grad():
        model.rnn.weight_hh_l0.add_(1.0)  # a write after the masks were applied
    assert "rnn.weight_hh_l0" not in model.exact_masked()


def test_exactness_is_lost_by_an_in_place_mask_edit_or_a_swapped_parameter():
    """exact() must not vouch for a weight after its mask was edited in place (same object,
    new version) or after the parameter itself was replaced (load_state_dict(assign=True))."""
    model = _masked_lstm()
    assert model.exact_masked() == set(model.masks)
    name = "rnn.weight_hh_l0"
    on = model.masks[name].nonzero()[0]
    model.masks[name][on[0], on[1]] = False  # in place: the weight there is no longer zero off the mask
    assert name not in model.exact_masked()
    model.apply_masks_()
    assert name in model.exact_masked()
    dense = {n: torch.randn_like(p) for n, p in model.state_dict().items()}
    model.load_state_dict(dense, assign=True)
    assert model.exact_masked() == set()
    _assert_fused_forward_matches_loop(model)


def test_masks_follow_the_model_to_another_dtype_or_device():
    model = _masked_lstm(dtype=torch.float32)
    before = {n: m.clone() for n, m in model.masks.items()}
    model.to(torch.float64)
    assert all(torch.equal(model.masks[n], before[n]) for n in before)
    if torch.cuda.is_available():
        model.cuda()
        assert all(m.device.type == "cuda" for m in model.masks.values())


@pytest.mark.parametrize("task", ["ptb-lstm", "ptb-rhn"])
def test_exact_weights_used_as_they_are_train_bit_for_bit_the_same(task, tiny_data):
    """The embedding, the decoder and the recurrent weights known to be zero off their masks
    skip the masking multiply: the same weights and losses, to the bit, as masking them again."""
    from lshx.train import TrainConfig, Trainer

    def run(shortcut):
        cfg = TrainConfig.from_preset(task, "smoke", data=tiny_data, epochs=2, max_batches=4, dst={"density": 0.33})
        tr = Trainer(cfg, quiet=True, progress=False)
        if not shortcut:
            tr.model.exact_masked = lambda: set()
        tr.run_epoch()
        return {n: p.detach().clone() for n, p in tr.model.named_parameters()}, tr.val_losses

    (a, la), (b, lb) = run(True), run(False)
    assert la == lb and all(torch.equal(a[n], b[n]) for n in a)
