"""Training: smoke runs, checkpoints (atomic, weights_only), resume, divergence, SNT-ASGD."""
import os
import pickle

import pytest
import torch

from lshx.checkpoint import REQUIRED, load_checkpoint, save_atomic
from lshx.errors import CheckpointError, ConfigError
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


@pytest.mark.parametrize("task", ["ptb-lstm", "ptb-rhn"])
def test_resume_gives_the_same_run(tiny_data, tmp_path, task, monkeypatch):
    cfg3 = TrainConfig.from_preset(task, "smoke", data=tiny_data, epochs=3, max_batches=6)
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
    with pytest.raises(RuntimeError):
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
