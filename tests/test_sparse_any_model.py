"""DST on a user's nn.Module (lshx.sparse.any_model): name filters, biases never masked, and
Masking's exactness guarantees on a model that is not one of lshx's."""
import itertools

import pytest
from lshx.sparse.masking import ELEMENTWISE
import torch
import torch.nn.functional as F
from torch import nn

import lshx
import lshx.models.masks
import lshx.sparse.masking
from lshx.errors import ConfigError
from lshx.sparse.any_model import ModuleMasks, maskable, sparsify
from lshx.sparse.config import DEATHS, INITS, REDISTRIBUTIONS, DSTConfig

# fresh modules throughout: the warning for trained weights is tested on its own below
pytestmark = pytest.mark.filterwarnings("ignore:sparsify zeroed")
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
        if p.grad is not None and type(opt) not in ELEMENTWISE:  # (elementwise: the dense gradient is left)
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


def _gru_step(W, L, H):
    """nn.GRU's step in torch ops with the weights W (name -> tensor), for lyapunov_spectrum_fn."""
    def step(h, x):
        hs, inp, out = h.view(L, H), x, []
        for l in range(L):
            gx = F.linear(inp, W[f"weight_ih_l{l}"], W[f"bias_ih_l{l}"])
            gh = F.linear(hs[l], W[f"weight_hh_l{l}"], W[f"bias_hh_l{l}"])
            (xr, xz, xn), (hr, hz, hn) = gx.chunk(3), gh.chunk(3)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            inp = (1 - z) * torch.tanh(xn + r * hn) + z * hs[l]
            out.append(inp)
        return torch.cat(out)
    return step


def test_spectrum_of_a_sparsified_gru():
    """lshx.lyapunov_spectrum of the sparsified nn.GRU is the spectrum of the GRU whose
    weights are the dense ones times the masks (computed by the step-function path, from a
    copy taken before sparsify), and differs from the dense GRU's."""
    torch.manual_seed(0)
    model = Tagger().double()
    with torch.no_grad():
        for p in model.gru.parameters():
            p.mul_(3.0)  # a spectrum the masks visibly change
    dense = {n: p.detach().clone() for n, p in model.gru.named_parameters()}
    masking = sparsify(model, density=0.3, include="gru.*", total_steps=1)
    masked = {n: w * masking.masks[f"gru.{n}"] if f"gru.{n}" in masking.masks else w for n, w in dense.items()}
    assert all(f"gru.{n}" in masking.masks for n in dense if n.startswith("weight"))
    x = torch.randn(2, 9, 8, dtype=torch.float64)  # (K, T, D)
    lam = lshx.lyapunov_spectrum(model.gru, x.transpose(0, 1), warmup=2)
    h0 = torch.zeros(24, dtype=torch.float64)
    ref = lshx.lyapunov_spectrum_fn(_gru_step(masked, 2, 12), h0, x, warmup=2)
    assert lam.shape == (24,) and torch.isfinite(lam).all()
    assert torch.allclose(lam, ref, atol=1e-10)
    full = lshx.lyapunov_spectrum_fn(_gru_step(dense, 2, 12), h0, x, warmup=2)
    assert (lam - full).abs().max() > 1e-3  # the masks matter


def _train_some(model, masking, dtype=torch.float32, device="cpu", steps=3):
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    gen = torch.Generator().manual_seed(2)
    for _ in range(steps):
        ids = torch.randint(0, V, (7, 4), generator=gen).to(device)
        tags = torch.randint(0, C, (7, 4), generator=gen).to(device)
        opt.zero_grad()
        F.cross_entropy(model(ids).reshape(-1, C), tags.reshape(-1)).backward()
        masking.step(opt)
    return opt


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_module_to_cuda_after_sparsify():
    """sparsify on the CPU, then module.cuda(): steps and topology updates keep the masks
    exact on the GPU (the masks follow the weights at the top of step/update_topology)."""
    torch.manual_seed(0)
    model = Tagger()
    masking = sparsify(model, density=0.3, death="magnitude", total_steps=8, seed=1)
    total = sum(masking.nonzeros().values())
    model.cuda()
    opt = _train_some(model, masking, device="cuda")
    assert all(m.is_cuda for m in masking.masks.values())
    _check_exact(model, masking, opt, None, total, [])
    masking.update_topology(opt)
    _check_exact(model, masking, opt, None, total, [])
    _train_some(model, masking, device="cuda", steps=1)
    _check_exact(model, masking, opt, None, total, [])


def test_masks_follow_the_weights_device_at_each_step(monkeypatch):
    """The CPU half of the device check. ModuleMasks.sync brings the masks to the weights'
    device (module.to(meta) here); Masking calls it before the gradients are masked (step)
    and before a topology update reads the masks: masks left on a stale device (meta, with a
    sync that restores them, a stand-in for CPU masks of a module moved to CUDA) are synced
    before any use."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    masking = sparsify(model, density=0.3, total_steps=4)
    model.to("meta")
    assert all(m.device.type == "cpu" for m in masking.masks.values())
    masking.model.sync()
    assert all(m.device.type == "meta" for m in masking.masks.values())

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    masking = sparsify(model, density=0.3, total_steps=4)
    adapter, good = masking.model, dict(masking.masks)
    calls, seen = [], []

    def stale():
        adapter.masks = {n: m.to("meta") for n, m in good.items()}

    def sync():
        calls.append("sync")
        adapter.set_masks(good)
    adapter.sync = sync

    def spy(m, dtype):  # every use of a mask by Masking and its MaskTable goes through mask_as
        seen.append(m.device.type)
        return real(m, dtype)
    real = lshx.sparse.masking.mask_as
    monkeypatch.setattr(lshx.sparse.masking, "mask_as", spy)
    monkeypatch.setattr(lshx.models.masks, "mask_as", spy)  # (the weights: MaskTable.apply_)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    F.cross_entropy(model(torch.randn(5, 6)), torch.randint(0, 3, (5,))).backward()
    stale()
    masking.step(opt)
    assert calls and seen and set(seen) == {"cpu"}
    _check_exact(model, masking, opt, None, sum(int(m.sum()) for m in good.values()), [])
    stale()
    calls.clear()
    masking.update_topology(opt)
    assert calls and all(m.device.type == "cpu" for m in masking.masks.values())


def test_parameters_replaced_by_a_conversion():
    """torch.__future__.set_overwrite_module_params_on_conversion(True): .double() replaces
    the Parameter objects; Masking looks them up by name at each step, so the new ones'
    gradients and momenta stay zero outside the masks."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    masking = sparsify(model, density=0.3, total_steps=10, death="magnitude")
    old = torch.__future__.get_overwrite_module_params_on_conversion()
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:
        model.double()
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(old)
    total = sum(masking.nonzeros().values())
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(torch.randn(5, 6, dtype=torch.float64)), torch.randint(0, 3, (5,))).backward()
        masking.step(opt)
        _check_exact(model, masking, opt, None, total, [])
    masking.update_topology(opt)
    _check_exact(model, masking, opt, None, total, [])
    assert masking.params["0.weight"] is model[0].weight


def test_frozen_parameters_are_not_masked_by_default():
    torch.manual_seed(0)
    model = Tagger()
    model.emb.weight.requires_grad_(False)  # a frozen (pretrained) embedding
    assert "emb.weight" not in maskable(model) and maskable(model) == WEIGHTS[1:]
    assert maskable(model, include_frozen=True) == WEIGHTS
    masking = sparsify(model, density=0.3, total_steps=2)
    assert "emb.weight" not in masking.masks and (model.emb.weight != 0).all()
    assert "emb.weight" in sparsify(Tagger(), density=0.3, include_frozen=True).masks


def test_a_filter_that_selects_nothing_names_the_parameters():
    """The message lists the module's parameters (it printed its own f-string source before)."""
    with pytest.raises(ConfigError) as err:
        sparsify(nn.GRU(4, 8), include="gru.*", total_steps=10)
    msg = str(err.value)
    assert "weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0" in msg and "{" not in msg


# ----------------------------------------------------------------------------- mistakes refused (issue 25)
def _gru():
    torch.manual_seed(0)
    return nn.GRU(6, 10)


def _loss(m):
    out, _ = m(torch.randn(5, 3, 6, generator=torch.Generator().manual_seed(1)))
    return out.pow(2).mean()


def test_without_total_steps_the_death_rate_stays_constant():
    m = _gru()
    masking = sparsify(m, density=0.3, death_rate=0.5, mask_init="random")
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    _loss(m).backward()
    masking.step(opt)
    assert masking.death_rate() == 0.5  # (it was 0.005 after one step of a default total of 1)
    ramp = sparsify(_gru(), density=0.3, death_rate=0.5, total_steps=4, mask_init="random")
    ramp.steps = 2
    assert ramp.death_rate() == pytest.approx(0.005 + 0.5 * (0.5 - 0.005))
    with pytest.raises(ConfigError, match="total_steps"):
        sparsify(_gru(), density=0.3, total_steps=0)


def test_a_module_sparsified_twice_is_refused():
    m = _gru()
    sparsify(m, density=0.5, mask_init="random")
    with pytest.raises(ConfigError, match="sparsified already"):
        sparsify(m, density=0.5, mask_init="random")


def test_trained_weights_are_warned_about_and_magnitude_keeps_the_largest():
    m = _gru()
    with pytest.warns(UserWarning, match=r"zeroed \d+ nonzero weights.*mask_init='magnitude'"):
        sparsify(m, density=0.3)
    trained = _gru()
    w = trained.weight_hh_l0.detach().clone()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit choice is silent
        masking = sparsify(trained, density=0.3, mask_init="magnitude")
    kept = masking.masks["weight_hh_l0"]
    assert w.abs()[kept].min() >= w.abs()[~kept].max()  # the largest survive, the smallest are masked
    assert torch.equal(trained.weight_hh_l0.detach()[kept], w[kept])


@pytest.mark.parametrize("include", [["0.*", "l.*"], "gru.*"])
def test_an_include_pattern_that_matches_nothing_is_refused(include):
    with pytest.raises(ConfigError, match="match.* no parameter; parameters: weight_ih_l0"):
        sparsify(_gru(), include=include, density=0.3, mask_init="random")
    # one good pattern does not excuse a bad one
    with pytest.raises(ConfigError, match="'l.\\*' matches no parameter"):
        sparsify(_gru(), include=["weight_*", "l.*"], density=0.3, mask_init="random")


def test_a_density_given_as_text_is_a_config_error():
    with pytest.raises(ConfigError, match="density must be a finite number"):
        sparsify(_gru(), density="0.3")


def test_update_topology_before_any_step_is_refused():
    masking = sparsify(_gru(), density=0.3, total_steps=10, mask_init="random")
    with pytest.raises(ConfigError, match="before any step"):
        masking.update_topology()


def _exact(masking):
    params = dict(masking.model.named_parameters())
    for n, mk in masking.masks.items():
        assert not params[n].detach()[~mk].any(), n


def test_a_closure_optimizer_steps_with_masked_gradients():
    m = _gru()
    masking = sparsify(m, density=0.3, total_steps=10, mask_init="random")
    opt = torch.optim.LBFGS(m.parameters(), lr=0.5, max_iter=4)

    def closure():
        opt.zero_grad()
        loss = _loss(m)
        loss.backward()
        return loss

    before = _loss(m).item()
    masking.step(opt, closure=closure)
    _exact(masking)
    assert _loss(m).item() < before


def test_a_grad_scaler_steps_on_unscaled_gradients():
    """The same step with and without a GradScaler: the scaler's gradients are 1024 times
    larger until it unscales them (stepping on them moved weights by hundreds)."""
    a, b = _gru(), _gru()
    ma = sparsify(a, density=0.3, total_steps=10, seed=4, mask_init="random")
    mb = sparsify(b, density=0.3, total_steps=10, seed=4, mask_init="random")
    oa, ob = torch.optim.SGD(a.parameters(), lr=0.5), torch.optim.SGD(b.parameters(), lr=0.5)
    _loss(a).backward()
    ma.step(oa)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(_loss(b)).backward()
    mb.step(ob, scaler=scaler)
    scaler.update()
    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.allclose(pa, pb, atol=1e-6), n
    _exact(mb)
    with pytest.raises(ConfigError, match="closure or a GradScaler"):
        mb.step(ob, closure=lambda: 0, scaler=scaler)
