"""Training: smoke runs, checkpoints (atomic, weights_only), resume, divergence, SNT-ASGD."""
import math
import os
import pickle

import pytest
import torch
import torch.nn.functional as F

from lshx.checkpoint import REQUIRED, load_checkpoint, save_atomic
from lshx.errors import CheckpointError, ConfigError, WriteError
from lshx.optim import SparseASGD
from lshx.train import TrainConfig, Trainer, train


def _cfg(tiny_data, **kw):
    return TrainConfig.from_preset("ptb-lstm", "smoke", data=tiny_data, **kw)


def test_smoke_training_and_checkpoint(tiny_data, tmp_path):
    res = train(_cfg(tiny_data, epochs=2), tmp_path / "run", quiet=True)
    assert len(res["val_ppl"]) == 2 and all(v > 1 for v in res["val_ppl"])
    assert res["test_ppl"] > 1 and not res["diverged"]
    assert res["density"] == pytest.approx(0.33, abs=1e-4)
    ckpt = load_checkpoint(res["checkpoint"])
    assert all(k in ckpt for k in REQUIRED)
    assert ckpt["epoch"] == res["best_epoch"]
    assert set(ckpt["masks"]) == {"encoder.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.weight_ih_l1",
                                  "rnn.weight_hh_l1", "decoder.weight"}
    assert ckpt["config"]["dst"]["density"] == 0.33
    assert not [f for f in os.listdir(tmp_path / "run") if f.endswith(".tmp")]


@pytest.mark.parametrize("task,death", [("ptb-lstm", "magnitude"), ("ptb-rhn", "magnitude"),
                                        ("ptb-lstm", "threshold")])
def test_resume_gives_the_same_run(tiny_data, tmp_path, task, death, monkeypatch):
    # threshold: the adapted threshold is part of the DST state, so the resumed run matches
    cfg3 = TrainConfig.from_preset(task, "smoke", data=tiny_data, epochs=3, max_batches=6, dst={"death": death})
    full = train(cfg3, tmp_path / "a", quiet=True)
    real = Trainer.run_epoch
    calls = {"n": 0}

    def crash_after_first(self, *a, **k):  # a crash (Ctrl-C) in the middle of epoch 2
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(Trainer, "run_epoch", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        train(cfg3, tmp_path / "b", quiet=True)
    monkeypatch.setattr(Trainer, "run_epoch", real)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["epoch"] == 1
    resumed = train(cfg3, tmp_path / "b", resume=True, quiet=True)
    assert resumed["val_ppl"] == pytest.approx(full["val_ppl"], rel=1e-9)
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert all(torch.equal(a["masks"][n], b["masks"][n]) for n in a["masks"])


def test_resume_refuses_other_config(tiny_data, tmp_path):
    train(_cfg(tiny_data, epochs=1, max_batches=3), tmp_path / "r", quiet=True)
    with pytest.raises(ConfigError):
        train(_cfg(tiny_data, epochs=2, max_batches=3, lr=1.0), tmp_path / "r", resume=True, quiet=True)


def test_divergence_is_reported(tiny_data):
    tr = Trainer(_cfg(tiny_data, epochs=2, max_batches=3), quiet=True, progress=False)
    with torch.no_grad():
        tr.model.decoder.bias.fill_(float("nan"))
    r = tr.run_epoch()
    assert r["diverged"] and tr.diverged


def test_save_atomic_keeps_old_file_on_crash(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_atomic({"a": torch.ones(2)}, path)

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(WriteError, match="cannot write .*c.pt: the write failed .*disk full; rerun with --resume"):
        save_atomic({"a": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert os.listdir(tmp_path) == ["c.pt"]


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_unsafe_or_foreign_checkpoints_are_refused(tmp_path):
    bad = tmp_path / "evil.pt"
    with open(bad, "wb") as f:
        pickle.dump({"x": Evil()}, f)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(bad)
    assert "weights_only" in str(err.value) and "\n" not in str(err.value)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="not an lshx checkpoint"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")


def test_sparse_asgd_averages_iterates():
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    opt = SparseASGD([p], lr=0.5)
    iterates = []
    for g in (torch.tensor([1.0, 0.0]), torch.tensor([2.0, 1.0]), torch.tensor([0.0, 4.0])):
        p.grad = g
        opt.step()
        iterates.append(p.detach().clone())
    expected = torch.stack(iterates).mean(0)
    torch.testing.assert_close(opt.state[p]["ax"], expected)
    with opt.averaged():
        torch.testing.assert_close(p.detach(), expected)
    torch.testing.assert_close(p.detach(), iterates[-1])


def test_asgd_switch_on_nonmonotone_validation(tiny_data):
    tr = Trainer(_cfg(tiny_data, epochs=3, max_batches=2, nonmono=1), quiet=True, progress=False)
    tr.val_losses = [5.0, 4.0]  # the next validation is worse than min of all but the last one
    tr.evaluate_averaged = lambda split="valid": 6.0
    tr.run_epoch()
    assert tr.asgd_active and isinstance(tr.optimizer, SparseASGD)


def test_asgd_trigger_reads_the_losses_before_appending(tiny_data):
    """Selfish-RNN's main.py: switch when len(val_losses) > nonmono and val_loss >
    min(val_losses[:-nonmono]), val_losses not yet holding this epoch's loss. Appending first
    (as lshx did) switches one epoch earlier on a plateau."""
    def switches(history, new, nonmono=1):
        tr = Trainer(_cfg(tiny_data, epochs=5, max_batches=2, nonmono=nonmono), quiet=True, progress=False)
        tr.val_losses = list(history)
        tr.evaluate_averaged = lambda split="valid": new
        tr.run_epoch()
        assert tr.val_losses == list(history) + [new]
        return tr.asgd_active

    assert not switches([5.0, 4.0], 4.5)  # 4.5 > min([5.0]) is False; appending first: 4.5 > min([5, 4])
    assert not switches([5.0], 6.0)  # one earlier loss is not more than nonmono = 1
    assert switches([5.0, 4.0], 6.0)
    assert not switches([5.0, 4.0, 3.0], 4.5, nonmono=2)
    assert switches([5.0, 4.0, 3.0], 5.5, nonmono=2)


def test_no_topology_update_in_the_switch_epoch(tiny_data):
    """Selfish-RNN skips the topology update of the epoch that switches to SNT-ASGD (it updates
    only while the optimizer is SGD, after the switch check), and updates again afterwards."""
    tr = Trainer(_cfg(tiny_data, epochs=5, max_batches=2, nonmono=1), quiet=True, progress=False)
    tr.val_losses = [5.0, 4.0]
    tr.evaluate_averaged = lambda split="valid": 6.0
    before = {n: m.clone() for n, m in tr.model.masks.items()}
    r = tr.run_epoch()
    assert r["asgd"] and r["topology"] is None
    assert tr.masking.updates_done == 0
    assert all(torch.equal(before[n], tr.model.masks[n]) for n in before)
    r = tr.run_epoch()
    assert r["topology"] is not None and tr.masking.updates_done == 1


def test_death_rate_at_epoch_ends_follows_selfish_rnn(tiny_data):
    """The update after epoch e of E uses cos(pi e / E): E = 3, rate 0.5 -> 0.376, 0.129."""
    tr = Trainer(_cfg(tiny_data, epochs=3, max_batches=4, dst={"death_rate": 0.5}), quiet=True, progress=False)
    rates = [tr.run_epoch()["topology"] for _ in range(3)]
    assert rates[2] is None  # no update after the last epoch
    assert [r["death_rate"] for r in rates[:2]] == pytest.approx([0.37625, 0.12875])


@pytest.mark.parametrize("masked", [False, True])
def test_clipping_reads_the_dense_gradient_by_default(tiny_data, monkeypatch, masked):
    """Selfish-RNN clips the dense gradient (weights outside the masks included) and re-masks
    after the step; clip_masked_grad=True masks the gradient before clipping."""
    import lshx.train as T

    kw = {"clip_masked_grad": True} if masked else {}  # the default is to clip the dense gradient
    tr = Trainer(_cfg(tiny_data, epochs=1, max_batches=3, **kw), quiet=True, progress=False)
    params = dict(tr.model.named_parameters())
    outside = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def spy(parameters, max_norm, *a, **k):
        outside.append(sum(float(params[n].grad[~m].abs().sum()) for n, m in tr.model.masks.items()))
        return real_clip(parameters, max_norm, *a, **k)

    monkeypatch.setattr(T.torch.nn.utils, "clip_grad_norm_", spy)
    tr.train_epoch()
    assert len(outside) == 3
    assert all((v == 0) if masked else (v > 0) for v in outside)
    for n, m in tr.model.masks.items():  # either way no weight lives outside the masks after a step
        assert (params[n][~m] == 0).all()
        # (the gradient: masked before clipping with clip_masked_grad; otherwise SGD is
        # elementwise and the dense gradient is left, Masking.ELEMENTWISE)
        assert (params[n].grad[~m] == 0).all() == masked
    assert tr.model.exact_masked() == set(tr.model.masks)


def test_clip_on_dense_gradient_matches_selfish_rnn_step(tiny_data):
    """One SGD step as Selfish-RNN takes it (clip the dense gradient, step every weight, zero
    those outside the mask) gives the active weights what lshx's step gives them."""
    # clip 0.02: binds on both the dense (0.13 here) and the masked gradient
    tr = Trainer(_cfg(tiny_data, epochs=1, max_batches=1, clip=0.02), quiet=True, progress=False)
    ref = {n: p.detach().clone() for n, p in tr.model.named_parameters()}
    torch.manual_seed(7)
    tr.train_epoch()
    got = {n: p.detach().clone() for n, p in tr.model.named_parameters()}
    # the reference: the same batch and dropout draws, on a copy, in Selfish-RNN's order
    import torch.nn.functional as F
    from lshx.data import bptt_windows
    from lshx.models import build_model

    model = build_model(tr.model.model_args)
    model.load_state_dict(ref)
    model.set_masks(tr.model.masks)
    model.train()
    x, y = next(iter(bptt_windows(tr.train_data, tr.cfg.bptt, 1)))
    torch.manual_seed(7)
    logits, _ = model(x, model.init_state(tr.cfg.batch_size))
    F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1)).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), tr.cfg.clip)
    torch.optim.SGD(model.parameters(), lr=tr.cfg.lr, weight_decay=tr.cfg.wdecay).step()
    model.apply_masks_()
    want = {n: p.detach() for n, p in model.named_parameters()}
    for n in want:
        torch.testing.assert_close(got[n] - ref[n], want[n] - ref[n], atol=1e-7, rtol=1e-3)
    # the whole step, not only its largest entries: masking before clipping makes it ~2x longer here
    step_got = torch.cat([(got[n] - ref[n]).flatten() for n in want]).norm()
    step_want = torch.cat([(want[n] - ref[n]).flatten() for n in want]).norm()
    assert float(step_got / step_want) == pytest.approx(1.0, abs=1e-3)


def test_eval_batch_size_is_selfish_rnns():
    from lshx.presets import get_preset

    for task in ("ptb-lstm", "ptb-rhn"):
        for preset in ("smoke", "small", "paper"):
            assert get_preset(task, preset)["eval_batch_size"] == 20
    assert TrainConfig().eval_batch_size == 20


def test_training_keeps_the_fused_path_contract(tiny_data, tmp_path, monkeypatch):
    """Every training forward finds every masked LSTM weight exactly zero outside its mask
    (so the fused path uses the weights as they are), across topology updates and the ASGD switch."""
    from lshx.models.lstm import StackedLSTM

    seen = []
    original = StackedLSTM._fused_layer

    def spy(self, k, inp, h0, c0, masks, exact):
        if self.training:
            seen.append(set(masks) - set(exact))
        return original(self, k, inp, h0, c0, masks, exact)

    monkeypatch.setattr(StackedLSTM, "_fused_layer", spy)
    train(_cfg(tiny_data, epochs=3), tmp_path / "run", quiet=True)
    assert seen and all(not missing for missing in seen)


class _OpLog:
    """Every aten op run inside the block (TorchDispatchMode): where a GPU would wait for the
    host, and how many launches the masking takes."""

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        log = self.ops = []

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                log.append(func.overloadpacket.__name__)
                return func(*args, **(kwargs or {}))

        self.mode = Mode()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)


def test_a_training_epoch_reads_the_device_once_not_every_batch(tiny_data):
    """No host sync in the step (the loss is summed on the device, checked every CHECK_EVERY
    batches and at the end): 3 batches read one scalar back, not six."""
    from lshx.train import CHECK_EVERY, TrainConfig, Trainer

    cfg = TrainConfig.from_preset("ptb-lstm", "smoke", data=tiny_data, max_batches=3)
    assert 3 < CHECK_EVERY
    tr = Trainer(cfg, quiet=True, progress=False)
    with _OpLog() as log:
        loss = tr.train_epoch()
    assert math.isfinite(loss)
    assert log.ops.count("_local_scalar_dense") + log.ops.count("item") == 1, \
        [o for o in log.ops if o in ("_local_scalar_dense", "item", "is_nonzero")]


def test_masking_takes_one_launch_for_every_tensor(tiny_data):
    from lshx.train import TrainConfig, Trainer

    cfg = TrainConfig.from_preset("ptb-lstm", "smoke", data=tiny_data, max_batches=1)
    tr = Trainer(cfg, quiet=True, progress=False)
    tr.train_epoch()  # optimizer state exists
    x, y = next(__import__("lshx.data", fromlist=["bptt_windows"]).bptt_windows(tr.train_data, 5))
    logits, _ = tr.model(x, tr.model.init_state(cfg.batch_size))
    F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1)).backward()
    assert len(tr.masking.masks) >= 4
    with _OpLog() as log:
        tr.masking.step(tr.optimizer)
    # weights (and the optimizer's buffers when it keeps any): one foreach each; SGD is
    # elementwise, so the gradients are not masked (Masking.ELEMENTWISE)
    assert 1 <= log.ops.count("_foreach_mul_") <= 2 and log.ops.count("mul_") == 0


def test_a_diverging_epoch_is_flagged(tiny_data):
    from lshx.train import TrainConfig, Trainer

    cfg = TrainConfig.from_preset("ptb-lstm", "smoke", data=tiny_data, max_batches=3, lr=1e12)
    tr = Trainer(cfg, quiet=True, progress=False)
    losses = [tr.train_epoch() for _ in range(3)]
    assert tr.diverged and math.isnan(losses[-1])


def test_the_epoch_loss_is_the_mean_of_the_batch_losses_and_checked_mid_epoch(tiny_data, monkeypatch):
    """More batches than CHECK_EVERY: the mid-epoch check runs, and the reported loss is the
    token-weighted mean of the per-batch losses, as reading each back would give."""
    import lshx.train as T
    from lshx.train import TrainConfig, Trainer

    monkeypatch.setattr(T, "CHECK_EVERY", 2)
    cfg = TrainConfig.from_preset("ptb-lstm", "smoke", data=tiny_data, max_batches=5)
    tr = Trainer(cfg, quiet=True, progress=False)
    seen = []
    real = T.F.cross_entropy

    def spy(*a, **k):
        out = real(*a, **k)
        seen.append((out.detach(), a[1].numel()))  # (read after the epoch: no sync of the test's own)
        return out

    monkeypatch.setattr(T.F, "cross_entropy", spy)
    with _OpLog() as log:
        loss = tr.train_epoch()
    assert len(seen) == 5
    assert loss == sum(float(v) * n for v, n in seen) / sum(n for _, n in seen)
    assert log.ops.count("_local_scalar_dense") + log.ops.count("item") == 3  # after batches 2, 4 and at the end


def test_a_divergence_stops_the_epoch_before_a_topology_update(tiny_data):
    """update_every > 0: a NaN loss mid-epoch is caught before the update reads the weights,
    not CHECK_EVERY batches later."""
    from lshx.train import TrainConfig, Trainer

    cfg = TrainConfig.from_preset("ptb-lstm", "smoke", data=tiny_data, max_batches=12,
                                  dst={"density": 0.33, "update_every": 3})
    tr = Trainer(cfg, quiet=True, progress=False)
    updates = []
    real = tr.masking.update_topology
    tr.masking.update_topology = lambda *a, **k: updates.append(tr.masking.steps) or real(*a, **k)
    with torch.no_grad():
        tr.model.encoder.weight[:] = float("inf")
    loss = tr.train_epoch()
    assert tr.diverged and math.isnan(loss) and updates == []
    r = tr.run_epoch()
    assert r["diverged"]


def test_a_validation_divergence_updates_no_topology(tiny_data, monkeypatch):
    from lshx.train import TrainConfig, Trainer

    cfg = TrainConfig.from_preset("ptb-lstm", "smoke", data=tiny_data, max_batches=3, epochs=3)
    tr = Trainer(cfg, quiet=True, progress=False)
    monkeypatch.setattr(tr, "evaluate_averaged", lambda split="valid": float("nan"))
    calls = []
    tr.masking.update_topology = lambda *a, **k: calls.append(1)
    r = tr.run_epoch()
    assert r["diverged"] and tr.diverged and calls == []
