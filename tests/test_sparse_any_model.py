"""DST on a user's nn.Module (lshx.sparse.any_model): name filters, biases never masked, and
Masking's exactness guarantees on a model that is not one of lshx's."""
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lshx
from lshx.errors import ConfigError
from lshx.sparse.any_model import ModuleMasks, maskable, sparsify
from lshx.sparse.config import DEATHS, INITS, REDISTRIBUTIONS, DSTConfig
from lshx.sparse.densities import layer_counts

V, C = 30, 5


class Tagger(nn.Module):
    """Embedding, a 1-D convolution (a 3-D weight), a 2-layer GRU, LayerNorm, a linear head."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, 8)
        self.conv = nn.Conv1d(8, 8, 3, padding=1)
        self.gru = nn.GRU(8, 12, num_layers=2)
        self.norm = nn.LayerNorm(12)
        self.head = nn.Linear(12, C)

    def forward(self, ids):  # (T, B) -> (T, B, C)
        x = self.conv(self.emb(ids).permute(1, 2, 0)).permute(2, 0, 1)
        y, _ = self.gru(x)
        return self.head(self.norm(y))


WEIGHTS = ["emb.weight", "conv.weight", "gru.weight_ih_l0", "gru.weight_hh_l0", "gru.weight_ih_l1",
           "gru.weight_hh_l1", "head.weight"]


def test_name_filters_and_biases_never():
    m = Tagger()
    assert maskable(m) == WEIGHTS
    assert maskable(m, include="gru.*") == WEIGHTS[2:6]
    assert maskable(m, include=["gru.weight_hh_*", "head.*"]) == ["gru.weight_hh_l0", "gru.weight_hh_l1",
                                                                   "head.weight"]
    assert maskable(m, exclude=["emb.*", "conv.*"]) == WEIGHTS[2:]
    assert maskable(m, include=lambda n: n.endswith("_l1")) == ["gru.weight_ih_l1", "gru.weight_hh_l1"]
    assert maskable(m, include="*bias*") == [] and maskable(m, include="norm.*") == []
    with pytest.raises(ConfigError, match="selects no maskable parameter"):
        ModuleMasks(m, include="*bias*")
    mm = ModuleMasks(m, include="gru.*")
    with pytest.raises(KeyError, match="not selected"):
        mm.set_masks({"gru.bias_hh_l0": torch.ones(36, dtype=torch.bool)})
    with pytest.raises(KeyError, match="unknown"):
        mm.set_masks({"nope": torch.ones(3, dtype=torch.bool)})


def _check_exact(model, masking, opt, per_tensor_target, total_target, biases):
    params = dict(model.named_parameters())
    counts = masking.nonzeros()
    if per_tensor_target is not None:
        assert counts == per_tensor_target
    assert sum(counts.values()) == total_target
    for n, mk in masking.masks.items():
        p = params[n]
        assert torch.isfinite(p).all()
        assert (p[~mk] == 0).all(), f"{n}: weight nonzero outside its mask"
        if p.grad is not None:
            assert (p.grad[~mk] == 0).all(), f"{n}: gradient nonzero outside its mask"
        for buf in opt.state.get(p, {}).values():
            if torch.is_tensor(buf) and buf.shape == p.shape:
                assert (buf[~mk] == 0).all(), f"{n}: optimizer buffer nonzero outside its mask"
    # biases and the norm's parameters are never masked; the GRU's (random, nonzero at
    # init) stay dense (others may hold exact zeros: LayerNorm's bias starts at 0)
    for n in biases:
        assert n not in masking.masks
        if n.startswith("gru."):
            assert (params[n] != 0).all()
    assert masking.model.exact_masked() == set(masking.masks)


def _step(model, opt, masking, gen):
    ids = torch.randint(0, V, (7, 4), generator=gen)
    tags = torch.randint(0, C, (7, 4), generator=gen)
    opt.zero_grad()
    F.cross_entropy(model(ids).reshape(-1, C), tags.reshape(-1)).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    masking.step(opt)


@pytest.mark.parametrize("init,death,redist", list(itertools.product(INITS, DEATHS, REDISTRIBUTIONS)))
def test_counts_and_zeros_exact(init, death, redist):
    torch.manual_seed(0)
    model = Tagger()
    biases = [n for n, p in model.named_parameters() if p.dim() == 1]
    cfg = DSTConfig(density=0.3, init=init, death=death, redistribution=redist, death_rate=0.6, threshold=0.05)
    masking = sparsify(model, cfg, total_steps=12, seed=3)
    assert set(masking.masks) == set(WEIGHTS)
    initial = masking.nonzeros()
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters() if n in WEIGHTS}
    assert initial == layer_counts(shapes, 0.3, init)
    total = sum(initial.values())
    # threshold death regrows total / L per tensor: only the global count is kept
    per_tensor = initial if (redist == "none" and death not in ("global_magnitude", "threshold")) else None
    # per-element state (momentum, Adam's moments) must follow the masks too
    opts = [torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-4),
            torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)]
    gen = torch.Generator().manual_seed(0)
    for update in range(4):
        opt = opts[update // 2]
        for _ in range(3):
            _step(model, opt, masking, gen)
            _check_exact(model, masking, opt, per_tensor, total, biases)
        masking.update_topology(opt)
        _check_exact(model, masking, opt, per_tensor, total, biases)


def test_module_itself_unchanged_and_topology_moves():
    torch.manual_seed(0)
    model = Tagger()
    keys = list(model.state_dict())
    masking = sparsify(model, density=0.25, death="SET", update_every=2, total_steps=8)
    assert isinstance(masking.model, ModuleMasks) and masking.model.module is model
    assert list(model.state_dict()) == keys  # masks live beside the module, not in its state_dict
    before = {n: m.clone() for n, m in masking.masks.items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    gen = torch.Generator().manual_seed(1)
    updates = 0
    for _ in range(4):
        ids = torch.randint(0, V, (7, 4), generator=gen)
        opt.zero_grad()
        F.cross_entropy(model(ids).reshape(-1, C), torch.randint(0, C, (28,), generator=gen)).backward()
        updates += masking.step(opt)  # update_every = 2: a topology update every second step
    assert updates == 2 and masking.updates_done == 2
    assert any((before[n] != masking.masks[n]).any() for n in before)
    # the same seed gives the same masks
    torch.manual_seed(0)
    again = sparsify(Tagger(), density=0.25, death="SET", update_every=2, total_steps=8)
    assert all(torch.equal(again.masks[n], before[n]) for n in before)
    with pytest.raises(ConfigError, match="not both"):
        sparsify(Tagger(), DSTConfig(), density=0.5)


def test_dtype_change_after_sparsify_keeps_masks_exact():
    torch.manual_seed(0)
    model = Tagger()
    masking = sparsify(model, density=0.3, total_steps=4, include="gru.*")
    model.double()  # parameters change dtype in place: the masks (bool) still apply
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    gen = torch.Generator().manual_seed(2)
    total = sum(masking.nonzeros().values())
    for _ in range(2):
        _step(model, opt, masking, gen)
        assert model.gru.weight_hh_l0.dtype == torch.float64
        _check_exact(model, masking, opt, None, total, [])
    masking.update_topology(opt)
    _check_exact(model, masking, opt, None, total, [])
    assert (model.emb.weight != 0).all()  # outside the filter: dense


def test_spectrum_of_a_sparsified_gru():
    """lshx.lyapunov_spectrum reads the module's (masked-in-place) weights."""
    torch.manual_seed(0)
    model = Tagger().double()
    sparsify(model, density=0.3, include="gru.*", total_steps=1)
    x = torch.randn(9, 2, 8, dtype=torch.float64)
    lam = lshx.lyapunov_spectrum(model.gru, x, warmup=2)
    dense = Tagger().double()
    dense.load_state_dict(model.state_dict())
    assert torch.allclose(lam, lshx.lyapunov_spectrum(dense.gru, x, warmup=2))
    assert lam.shape == (24,) and torch.isfinite(lam).all()
