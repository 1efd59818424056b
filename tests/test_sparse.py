"""The DST engine: exact nonzero counts, zeros where masked (weights, grads, buffers), SET, ER."""
import itertools
import math

import pytest
from lshx.sparse.masking import ELEMENTWISE
import torch
import torch.nn.functional as F

from lshx.errors import ConfigError
from lshx.models import LSTMLM, RHNLM
from lshx.optim import SparseASGD
from lshx.sparse import death as D
from lshx.sparse.config import DEATHS, INITS, REDISTRIBUTIONS, DSTConfig
from lshx.sparse.densities import allocate, layer_counts
from lshx.sparse.masking import Masking

V = 40


def _models():
    return {"lstm": lambda: LSTMLM(V, 8, 8, 2, dropout=0.1), "rhn": lambda: RHNLM(V, 8, 2, 0.1, 0.05, 0.1, 0.05)}


def _check_exact(model, masking, opt, per_tensor_target, total_target):
    params = dict(model.named_parameters())
    counts = masking.nonzeros()
    if per_tensor_target is not None:
        assert counts == per_tensor_target
    assert sum(counts.values()) == total_target
    for n, m in model.masks.items():
        p = params[n]
        assert torch.isfinite(p).all()
        assert (p[~m] == 0).all(), f"{n}: weight nonzero outside its mask"
        if p.grad is not None and type(opt) not in ELEMENTWISE:  # (elementwise: the dense gradient is left)
            assert (p.grad[~m] == 0).all(), f"{n}: gradient nonzero outside its mask"
        for buf in opt.state.get(p, {}).values():
            if torch.is_tensor(buf) and buf.shape == p.shape:
                assert (buf[~m] == 0).all(), f"{n}: optimizer buffer nonzero outside its mask"


def _step(model, opt, masking, gen):
    ids = torch.randint(0, V, (6, 4), generator=gen)
    model.train()
    opt.zero_grad()
    logits, _ = model(ids[:-1])
    F.cross_entropy(logits.reshape(-1, V), ids[1:].reshape(-1)).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
    masking.step(opt)


@pytest.mark.parametrize("arch", ["lstm", "rhn"])
@pytest.mark.parametrize("init,death,redist", list(itertools.product(INITS, DEATHS, REDISTRIBUTIONS)))
def test_counts_and_zeros_exact(arch, init, death, redist):
    torch.manual_seed(0)
    model = _models()[arch]()
    cfg = DSTConfig(density=0.33, init=init, death=death, redistribution=redist, death_rate=0.6, threshold=0.05)
    masking = Masking(model, cfg, total_steps=12, seed=3)
    initial = masking.nonzeros()
    total = sum(initial.values())
    numel = sum(p.numel() for n, p in model.named_parameters() if n in model.masks)
    assert total == round(0.33 * numel)
    # threshold death regrows total / L per tensor (Selfish-RNN): only the global count is kept
    per_tensor = initial if (redist == "none" and death not in ("global_magnitude", "threshold")) else None
    opt = torch.optim.SGD(model.parameters(), lr=5.0, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(0)
    for update in range(4):
        if update == 2:  # the SNT-ASGD switch: averaging buffers must follow the masks too
            opt = SparseASGD(model.parameters(), lr=5.0, weight_decay=1e-4)
        for _ in range(3):
            _step(model, opt, masking, gen)
            _check_exact(model, masking, opt, per_tensor, total)
            assert model.exact_masked() == set(model.masks)  # the fused LSTM path's contract
        stats = masking.update_topology(opt)
        _check_exact(model, masking, opt, per_tensor, total)
        assert model.exact_masked() == set(model.masks)
        assert stats["density"] == pytest.approx(total / numel)


@pytest.mark.parametrize("arch", ["lstm", "rhn"])
def test_same_seed_same_masks(arch):
    def run():
        torch.manual_seed(5)
        model = _models()[arch]()
        masking = Masking(model, DSTConfig(density=0.4, init="ER", death="SET"), 3, seed=11)
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        gen = torch.Generator().manual_seed(1)
        for _ in range(2):
            _step(model, opt, masking, gen)
            masking.update_topology(opt)
        return {n: m.clone() for n, m in model.masks.items()}

    a, b = run(), run()
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


def test_set_removes_closest_to_zero_on_both_sides():
    w = torch.tensor([[-3.0, -0.1, 0.2, 5.0], [-0.05, 0.01, -7.0, 0.3]])
    mask = torch.ones_like(w, dtype=torch.bool)
    # 8 active, rate 0.5: 4 removed, 2 positive (0.01, 0.2) and 2 negative (-0.05, -0.1)
    after = D.set_death(w, mask, 0.5)
    removed = sorted(w[~after].tolist())
    assert removed == pytest.approx([-0.1, -0.05, 0.01, 0.2])
    # not the most negative weights (the defect of some implementations)
    assert after[0, 0] and after[1, 2]


def test_set_original_removes_the_most_negative():
    """Selfish-RNN's SET rule, offered as SET-original: the ceil(n/2) smallest positive and the
    ceil(n/2) MOST negative weights die."""
    w = torch.tensor([[-3.0, -0.1, 0.2, 5.0], [-0.05, 0.01, -7.0, 0.3]])
    mask = torch.ones_like(w, dtype=torch.bool)
    after = D.set_original(w, mask, 0.5)
    assert sorted(w[~after].tolist()) == pytest.approx([-7.0, -3.0, 0.01, 0.2])
    after = D.set_original(w, mask, 0.375)  # n = 3: two on each side
    assert sorted(w[~after].tolist()) == pytest.approx([-7.0, -3.0, 0.01, 0.2])
    assert "SET-original" in DEATHS
    from lshx.search.space import SEARCH_DEATHS
    assert "SET-original" not in SEARCH_DEATHS  # not searched


def test_magnitude_and_global_magnitude():
    w = torch.tensor([[0.5, -0.1, 2.0, 0.0]])
    m = torch.tensor([[True, True, True, False]])
    assert D.magnitude(w, m, 0.34).tolist() == [[True, False, True, False]]  # round(1.02) = 1 removed
    ws = {"a": torch.tensor([[0.1, 0.2]]), "b": torch.tensor([[0.05, 3.0]])}
    ms = {k: torch.ones_like(v, dtype=torch.bool) for k, v in ws.items()}
    out = D.global_magnitude(ws, ms, 0.5)
    assert out["a"].tolist() == [[False, True]] and out["b"].tolist() == [[False, True]]


def test_death_rate_with_update_every_reads_the_step():
    """update_every = N: the update after optimizer step s uses cos(pi s / total_steps)."""
    torch.manual_seed(0)
    model = LSTMLM(V, 8, 8, 2, dropout=0.0)
    masking = Masking(model, DSTConfig(density=0.5, death_rate=0.5, update_every=5), 20)
    rates = []
    real = masking.update_topology
    masking.update_topology = lambda opt=None: rates.append(real(opt)["death_rate"])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        _step(model, opt, masking, gen)
    assert rates == pytest.approx([0.005 + 0.2475 * (1 + math.cos(math.pi * s / 20)) for s in (5, 10)])


def test_threshold_death():
    w = torch.tensor([0.0005, -0.002, 0.5, -0.0001])
    assert D.threshold(w, torch.ones(4, dtype=torch.bool), 1e-3).tolist() == [False, True, True, False]


def _threshold_masking(start, rate=0.5, redistribution="none", seed=0):
    torch.manual_seed(seed)
    model = LSTMLM(V, 8, 8, 2, dropout=0.0)
    cfg = DSTConfig(density=0.5, death="threshold", redistribution=redistribution, death_rate=rate,
                    death_rate_final=rate, threshold=start)
    return model, Masking(model, cfg, 100, seed=1)


def test_threshold_adapts_to_the_death_rate():
    """Selfish-RNN's rule: the threshold starts at 1e-3 and doubles when fewer than 98% of
    rate * nnz died, halves when more than 102% did (lshx kept 1e-3 fixed)."""
    model, masking = _threshold_masking(1e-3)  # weights ~ U(-0.35, 0.35): hardly any below 1e-3
    assert masking.threshold == 1e-3
    nnz = sum(masking.nonzeros().values())
    st = masking.update_topology()
    assert st["removed"] < 0.98 * 0.5 * nnz
    assert st["threshold"] == 1e-3 and masking.threshold == 2e-3 and st["next_threshold"] == 2e-3
    masking.update_topology()
    assert masking.threshold == 4e-3
    _, big = _threshold_masking(10.0)  # every weight dies: too many, halve
    big.update_topology()
    assert big.threshold == 5.0
    # within 2% of rate * nnz: unchanged (half of each tensor's active weights at 0.01, half at 1)
    _, ok = _threshold_masking(0.5)
    with torch.no_grad():
        for n in ok.names:
            active = ok.masks[n].flatten().nonzero().squeeze(1)
            vals = torch.ones(active.numel())
            vals[: active.numel() // 2] = 0.01
            ok.params[n].view(-1)[active] = vals
    nnz = sum(ok.nonzeros().values())
    st = ok.update_topology()
    assert abs(st["removed"] - 0.5 * nnz) <= 0.02 * 0.5 * nnz and ok.threshold == 0.5


def test_threshold_is_checkpointed():
    model, masking = _threshold_masking(1e-3)
    for _ in range(3):
        masking.update_topology()
    state = masking.state_dict()
    assert state["threshold"] == 8e-3
    other_model, other = _threshold_masking(1e-3, seed=1)
    other.load_state_dict(state, masking.masks)
    assert other.threshold == 8e-3


def test_threshold_regrowth_is_split_evenly_with_redistribution_none():
    """Selfish-RNN scores every tensor 1.0 in threshold mode with redistribution none: each of
    the L tensors regrows total_removed / L, whatever it lost (lshx gave back what each lost)."""
    model, masking = _threshold_masking(0.1)
    before = masking.nonzeros()
    w = {n: masking.params[n].detach() for n in masking.names}
    died = {n: int((masking.masks[n] & (w[n].abs() < 0.1)).sum()) for n in masking.names}
    st = masking.update_topology()
    total = sum(died.values())
    assert st["removed"] == total
    L = len(masking.names)
    after = masking.nonzeros()
    grown = {n: after[n] - (before[n] - died[n]) for n in masking.names}
    assert sum(grown.values()) == total
    assert all(abs(g - total / L) < 1 for g in grown.values()), (grown, total / L)
    assert after != before  # tensors that lost more than total / L shrank


def test_er_caps_dense_layers_and_keeps_total_exact():
    shapes = {"tiny": (2, 2), "big": (400, 300), "mid": (50, 60)}
    counts = layer_counts(shapes, 0.3, "ER")
    total = sum(math.prod(s) for s in shapes.values())
    assert sum(counts.values()) == round(0.3 * total)
    assert counts["tiny"] == 4  # would exceed density 1: capped, excess spread over the rest
    assert all(0 <= counts[n] <= math.prod(shapes[n]) for n in shapes)
    d = {n: counts[n] / math.prod(shapes[n]) for n in shapes}
    assert d["mid"] > d["big"]  # ER gives smaller layers higher density


def test_uniform_counts():
    counts = layer_counts({"a": (10, 10), "b": (7, 3)}, 0.33, "uniform")
    assert sum(counts.values()) == round(0.33 * 121)
    assert abs(counts["a"] - 33) <= 1 and abs(counts["b"] - 7) <= 1


def test_allocate_respects_caps_and_total():
    out = allocate(10, {"a": 5.0, "b": 1.0, "c": 0.0}, {"a": 3, "b": 20, "c": 20})
    assert sum(out.values()) == 10 and out["a"] == 3
    with pytest.raises(ValueError):
        allocate(5, {"a": 1.0}, {"a": 4})


def test_death_rate_cosine_decay():
    model = LSTMLM(V, 8, 8, 2)
    masking = Masking(model, DSTConfig(density=0.5, death_rate=0.7), total_steps=40)
    rates = []
    for _ in range(5):
        rates.append(masking.death_rate())
        masking.steps += 10
    assert rates[0] == pytest.approx(0.7) and rates[-1] == pytest.approx(0.005)
    assert rates[2] == pytest.approx(0.005 + 0.5 * 0.695)
    assert all(a > b for a, b in zip(rates, rates[1:]))


def test_death_rate_follows_the_steps_like_selfish_rnn():
    """Selfish-RNN steps its cosine once per batch over epochs x batches: the update after
    epoch e of E uses cos(pi e / E) (E = 3, rate 0.5: 0.376 then 0.129; lshx had 0.5, 0.253)."""
    masking = Masking(LSTMLM(V, 8, 8, 2), DSTConfig(density=0.5, death_rate=0.5), 3 * 7)
    rates = []
    for _ in range(2):
        masking.steps += 7  # one epoch of 7 batches
        rates.append(masking.update_topology()["death_rate"])
    assert rates == pytest.approx([0.005 + 0.495 * 0.75, 0.005 + 0.495 * 0.25])
    assert rates == pytest.approx([0.37625, 0.12875])


def test_biases_never_masked():
    for make in _models().values():
        model = make()
        Masking(model, DSTConfig(density=0.3), 1)
        assert all(model.masks[n].dim() == 2 for n in model.masks)
        assert not any("bias" in n for n in model.masks)
        assert "encoder.weight" in model.masks


@pytest.mark.parametrize("field,value", [("death", "random"), ("init", "erdos"), ("redistribution", "x"),
                                         ("growth", "gradient"), ("density", 1.5), ("death_rate", 1.0)])
def test_config_validation_names_allowed_values(field, value):
    with pytest.raises(ConfigError) as err:
        DSTConfig(**{field: value})
    assert "\n" not in str(err.value)
    if isinstance(value, str):
        assert "allowed" in str(err.value)


def test_config_json_roundtrip():
    cfg = DSTConfig(density=0.2, init="ER", death="SET", redistribution="nonzeros", death_rate=0.7)
    assert DSTConfig.from_dict(__import__("json").loads(cfg.to_json())) == cfg
    with pytest.raises(ConfigError):
        DSTConfig.from_dict({"densty": 0.3})


@pytest.mark.parametrize("make", [
    lambda p: torch.optim.SGD(p, lr=0.5, weight_decay=1e-3),
    lambda p: torch.optim.SGD(p, lr=0.5, momentum=0.9, nesterov=True, weight_decay=1e-3),
    lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-3),
    lambda p: torch.optim.AdamW(p, lr=1e-2, amsgrad=True),
    lambda p: torch.optim.RMSprop(p, lr=1e-2, momentum=0.5),
    lambda p: SparseASGD(p, lr=0.5, weight_decay=1e-3),
], ids=["sgd", "nesterov", "adam", "amsgrad", "rmsprop", "sparse-asgd"])
def test_elementwise_optimizers_need_no_masked_gradients(make):
    """step() skips masking the gradients for ELEMENTWISE optimizers: weights and every
    optimizer buffer come out bit for bit as with the gradients masked first."""
    runs = []
    for skip in (True, False):
        torch.manual_seed(0)
        model = LSTMLM(V, 8, 8, 2, dropout=0.0)
        opt = make(model.parameters())
        assert type(opt) in ELEMENTWISE
        masking = Masking(model, DSTConfig(density=0.4, update_every=3), 12, seed=2)
        if not skip:
            real = masking.step
            masking.step = lambda o, **k: (masking.mask_grads(), real(o, **k))[1]
        gen = torch.Generator().manual_seed(1)
        for _ in range(7):  # two topology updates in between
            _step(model, opt, masking, gen)
        runs.append(({n: p.detach().clone() for n, p in model.named_parameters()},
                     [{k: v.clone() for k, v in opt.state[p].items() if torch.is_tensor(v)} for p in model.parameters()]))
    (wa, sa), (wb, sb) = runs
    assert all(torch.equal(wa[n], wb[n]) for n in wa)
    assert all(a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a) for a, b in zip(sa, sb))
