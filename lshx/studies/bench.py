"""Kernel benchmarks: lshx against the reference measured in the same run, correctness first."""
from __future__ import annotations

import time
from typing import Callable, List

import torch
from torch.utils import benchmark

from lshx import ops
from lshx.lyapunov import LSConfig, _FastLSTM, _Reference, qr_function
from lshx.models import LSTMLM


def _time_ms(fn: Callable[[], object], min_run_time: float = 1.0) -> float:
    fn()  # warm up
    t0 = time.perf_counter()
    fn()
    once = time.perf_counter() - t0
    if once > min_run_time:  # slow cases: one more run is enough
        t0 = time.perf_counter()
        fn()
        return 1000 * min(once, time.perf_counter() - t0)
    m = benchmark.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time)
    return 1000 * m.median


def ls_step_case(hidden: int, layers: int, k: int | None = None, samples: int = 2, density: float = 0.33,
                 reference: bool = True, seed: int = 0, device: str = "cpu", qr: str = "householder") -> dict:
    """ms per sample-step of the fast Lyapunov step against the autograd reference and the floor."""
    from lshx.sparse.config import DSTConfig
    from lshx.sparse.masking import Masking

    torch.manual_seed(seed)
    model = LSTMLM(100, hidden, hidden, layers, dropout=0.0)
    if density < 1:
        Masking(model, DSTConfig(density=density), 1, seed=seed)
    model.eval().to(device)
    N = layers * hidden
    k = k or N
    cfg = LSConfig(samples=samples, k=k)
    fast = _FastLSTM(model, cfg)
    tok = torch.randint(0, 100, (samples,), device=device)
    with torch.no_grad():
        state = model.step(tok, model.init_state(samples))[0]  # a non-trivial state
    B = torch.linalg.qr(torch.randn(samples, N, k, device=device))[0].contiguous()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    qr_fn = qr_function(qr)

    def run_fast():
        with torch.no_grad():
            _, jb = fast.tangent(state, tok, B)
            out = qr_fn(jb)
            sync()
            return out

    out = {"name": f"ls-step H={hidden} L={layers} k={k} K={samples} qr={qr}", "hidden": hidden,
           "layers": layers, "k": k, "samples": samples, "density": density, "device": device, "qr": qr}
    with torch.no_grad():  # the QR in use against torch.linalg.qr on this step's J.B
        jb = fast.tangent(state, tok, B)[1]
        got = qr_fn(jb)[1]
        want = torch.linalg.qr(jb)[1].diagonal(dim1=-2, dim2=-1).abs().clamp_min(1e-30).log()
        qr_err = float((got - want).abs().max())
        out["qr_max_abs_err"] = qr_err
        if qr_err > 1e-2:
            raise AssertionError(f"qr={qr}: log|diag R| differs from torch.linalg.qr by {qr_err:.2e}")
    if reference:  # correctness before timing
        ref = _Reference(model, cfg)
        _, jb_ref = ref.tangent(state, tok, B)
        _, jb_fast = fast.tangent(state, tok, B)
        err = float((jb_ref - jb_fast).abs().max() / jb_ref.abs().max())
        out["max_rel_err"] = err
        if err > 1e-4:
            raise AssertionError(f"fast J.B differs from the reference by {err:.2e}")

        def run_ref():
            _, jb = ref.tangent(state, tok, B)
            return torch.linalg.qr(jb.detach())

        def run_ref_jb():
            return ref.tangent(state, tok, B)

        out["ref_ms"] = _time_ms(run_ref) / samples
        out["ref_jb_ms"] = _time_ms(run_ref_jb) / samples

    def run_fast_jb():
        with torch.no_grad():
            out = fast.tangent(state, tok, B)
            sync()
            return out

    out["lshx_ms"] = _time_ms(run_fast) / samples
    out["lshx_jb_ms"] = _time_ms(run_fast_jb) / samples
    if reference:
        out["ratio"] = out["ref_ms"] / out["lshx_ms"]
        out["jb_ratio"] = out["ref_jb_ms"] / out["lshx_jb_ms"]
    # floor: the same GEMMs and QR, measured alone in this run
    H = hidden
    blocks = torch.randn(samples, H, H, device=device)
    rhs = torch.randn(samples, H, k, device=device)
    gemm_ms = _time_ms(lambda: (torch.bmm(blocks, rhs), sync()))
    qr_in = torch.randn(samples, N, k, device=device)
    qr_ms = _time_ms(lambda: (torch.linalg.qr(qr_in), sync()))
    n_gemm = 2 * layers - 1
    gemm_flop = 2.0 * H * H * k * samples
    qr_flop = (2.0 * N * k * k - 2.0 * k ** 3 / 3) * samples
    out["floor_ms"] = (n_gemm * gemm_ms + qr_ms) / samples
    out["sgemm_gflops"] = gemm_flop / gemm_ms / 1e6
    out["geqrf_gflops"] = qr_flop / qr_ms / 1e6
    flop = n_gemm * 2.0 * H * H * k + (2.0 * N * k * k - 2.0 * k ** 3 / 3)
    out["gflop_per_step"] = flop / 1e9
    out["lshx_gflops"] = flop / out["lshx_ms"] / 1e6
    out["vs_floor"] = out["lshx_ms"] / out["floor_ms"]
    return out


def recurrence_case(hidden: int, batch: int, steps: int, density: float, device: str = "cpu",
                    seed: int = 0) -> dict:
    """T steps of one sparse LSTM layer in inference: lshx's dense per-step recurrence on the
    masked W_hh (reference; what the model runs in training) against ops.lstm_recurrence
    (CSR W_hh; the persistent kernel on CUDA)."""
    g = torch.Generator().manual_seed(seed)
    H = hidden
    w = (torch.randn(4 * H, H, generator=g) / H ** 0.5).to(device)
    m = (torch.rand(4 * H, H, generator=g) < density).to(device)
    xp = torch.randn(steps, batch, 4 * H, generator=g).to(device)
    h0 = torch.randn(batch, H, generator=g).to(device)
    c0 = torch.randn(batch, H, generator=g).to(device)
    wm = w * m
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with torch.no_grad():
        ref = ops.lstm_recurrence_ref(xp, h0, c0, wm)
        got = ops.lstm_recurrence(xp, h0, c0, w, m)
        err = max(float((a - b).abs().max()) for a, b in zip(ref, got))
        if err > 1e-4:
            raise AssertionError(f"lstm_recurrence differs from the reference by {err:.2e}")
        ref_ms = _time_ms(lambda: (ops.lstm_recurrence_ref(xp, h0, c0, wm), sync()), 0.5)
        lshx_ms = _time_ms(lambda: (ops.lstm_recurrence(xp, h0, c0, w, m), sync()), 0.5)
    return {"name": f"recurrence H={H} B={batch} T={steps} d={density:g}", "ref_ms": ref_ms, "lshx_ms": lshx_ms,
            "ratio": ref_ms / lshx_ms, "max_abs_err": err, "device": device}


def format_table(cases: List[dict], keys: List[str]) -> str:
    rows = [keys] + [[_fmt(c.get(k)) for k in keys] for c in cases]
    widths = [max(len(r[i]) for r in rows) for i in range(len(keys))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in rows)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def matmul_case(out_f: int, in_f: int, batch: int, density: float, device: str = "cpu", seed: int = 0,
                train: bool = False, path: str = "auto") -> dict:
    """Masked linear map: dense GEMM on the masked weight (reference) against
    lshx.ops.masked_linear. Inference by default; with `train`, forward and backward (the
    reference computes the dense weight gradient, as masked_linear's dense path does).
    path: "auto" (what masked_linear picks), "csr" or "dense" (forced)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_f, in_f, generator=g).to(device)
    m = (torch.rand(out_f, in_f, generator=g) < density).to(device)
    x = torch.randn(batch, in_f, generator=g).to(device)
    wm = w * m
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if path == "auto":
        path = "csr" if ops.use_csr(x, w.requires_grad_(train), m) else "dense"
    lshx_fn = ops.csr_linear if path == "csr" else ops.masked_linear_dense
    if train:
        w.requires_grad_(True)
        wm.requires_grad_(True)
        x.requires_grad_(True)
        gy = torch.randn(batch, out_f, generator=g).to(device)
        ref = torch.nn.functional.linear(x, wm)
        gx_ref, = torch.autograd.grad(ref, x, gy)
        got = lshx_fn(x, w, m)
        gx_got, gw_got = torch.autograd.grad(got, (x, w), gy)
        gw_ref = (gy.t() @ x.detach()) * m
        ref, got = ref.detach(), got.detach()
        err = max(float((ref - got).abs().max() / ref.abs().max()),
                  float((gx_ref - gx_got).abs().max() / gx_ref.abs().max()),
                  float(((gw_got * m) - gw_ref).abs().max() / gw_ref.abs().max()))

        def run_ref():
            torch.autograd.grad(torch.nn.functional.linear(x, wm), (x, wm), gy)
            sync()

        def run_lshx():
            torch.autograd.grad(lshx_fn(x, w, m), (x, w), gy)
            sync()
    else:
        with torch.no_grad():
            ref = torch.nn.functional.linear(x, wm)
            got = lshx_fn(x, w, m)
            err = float((ref - got).abs().max() / ref.abs().max())

        def run_ref():
            with torch.no_grad():
                torch.nn.functional.linear(x, wm)
            sync()

        def run_lshx():
            with torch.no_grad():
                lshx_fn(x, w, m)
            sync()
    if err > 1e-4:
        raise AssertionError(f"masked_linear differs from the dense reference by {err:.2e}")
    ref_ms, lshx_ms = _time_ms(run_ref, 0.5), _time_ms(run_lshx, 0.5)
    kind = "fwd+bwd" if train else "inference"
    return {"name": f"matmul {kind} {out_f}x{in_f} B={batch} d={density:g}", "ref_ms": ref_ms,
            "lshx_ms": lshx_ms, "ratio": ref_ms / lshx_ms, "path": path, "max_rel_err": err, "device": device}


class SelfishLSTMLM(torch.nn.Module):
    """Selfish-RNN's model for `bench train-epoch`: one dense torch.nn.LSTM (a single flat
    weight buffer, cuDNN's fast path) between an embedding and a decoder, dropout as lshx's."""

    def __init__(self, vocab: int, emb: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.encoder = torch.nn.Embedding(vocab, emb)
        self.rnn = torch.nn.LSTM(emb, hidden, layers, dropout=dropout)
        self.decoder = torch.nn.Linear(hidden, vocab)
        self.dropout = dropout

    def forward(self, ids, state):
        F = torch.nn.functional
        out, state = self.rnn(F.dropout(self.encoder(ids), self.dropout, self.training), state)
        return self.decoder(F.dropout(out, self.dropout, self.training)), state


def _selfish_batch_ms(cfg, corpus, batches: int, masked: bool, seed: int) -> float:
    """ms per training batch of SelfishLSTMLM: plain SGD with clipping of the dense gradient,
    then (masked) the masks re-applied to the weights after each step, in place (mul_ keeps
    the parameters views of the flat buffer; Selfish-RNN's `.data = .data * mask` would not,
    and cuDNN would copy the weights on every call: this is the stronger baseline)."""
    from lshx.data import batchify, bptt_windows
    from lshx.sparse.densities import layer_counts, random_mask

    F = torch.nn.functional
    torch.manual_seed(seed)
    m = cfg.model
    model = SelfishLSTMLM(len(corpus.vocab), m["emb_size"], m["hidden_size"], m["num_layers"],
                          m["dropout"]).to(cfg.device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, weight_decay=cfg.wdecay)
    masks = {}
    if masked:
        names = [n for n, p in model.named_parameters() if p.dim() == 2]
        params = dict(model.named_parameters())
        counts = layer_counts({n: tuple(params[n].shape) for n in names}, cfg.dst.density, cfg.dst.init)
        gen = torch.Generator().manual_seed(seed)
        masks = {params[n]: random_mask(params[n].shape, counts[n], gen).to(cfg.device, params[n].dtype)
                 for n in names}
    data = batchify(corpus.train, cfg.batch_size).to(cfg.device)

    def run(n: int) -> None:
        model.train()
        state = None
        for x, y in bptt_windows(data, cfg.bptt, n):
            state = None if state is None else tuple(t.detach() for t in state)
            opt.zero_grad(set_to_none=True)
            logits, state = model(x, state)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            opt.step()
            with torch.no_grad():
                for p, mk in masks.items():
                    p.mul_(mk)
            loss.item()  # the trainer reads the loss every batch too

    return _timed_batches(run, batches, cfg.device)


def _timed_batches(run: Callable[[int], object], batches: int, device: str) -> float:
    run(1)  # warm up
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    run(batches)
    if device == "cuda":
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - t0) / batches


def _trainer_batch_ms(cfg, corpus, batches: int, fused: bool) -> float:
    from lshx.train import Trainer

    tr = Trainer(cfg, corpus=corpus, quiet=True, progress=False)
    if hasattr(tr.model.rnn, "fused"):
        tr.model.rnn.fused = fused

    def run(n: int) -> None:
        tr.cfg.max_batches = n
        tr.train_epoch()

    return _timed_batches(run, batches, cfg.device)


def train_epoch_case(task: str, preset: str, density: float, batches: int, seed: int = 0,
                     device: str = "cpu") -> dict:
    """ms per training batch, on the same batches of PTB-16%: `dense_ms` the model without
    masks; `lshx_ms` lshx's sparse training (the fused recurrence); `loop_ms` the same through
    the per-step reference loop; for ptb-lstm also `selfish_ms`, Selfish-RNN's way (a dense
    torch.nn.LSTM whose weights are re-masked after each step). ratio = selfish_ms / lshx_ms
    (ptb-lstm) or loop_ms / lshx_ms (ptb-rhn, which has no Selfish-style counterpart here)."""
    from lshx.data import load_corpus
    from lshx.train import TrainConfig

    corpus = load_corpus(None)

    def config(d: float):
        return TrainConfig.from_preset(task, preset, epochs=2, max_batches=batches, seed=seed,
                                       eval_max_batches=1, device=device, dst={"density": d})

    out = {"name": f"train {task} {preset} d={density:g} ({batches} batches)", "device": device}
    out["dense_ms"] = _trainer_batch_ms(config(1.0), corpus, batches, fused=True)
    if task == "ptb-lstm":
        out["selfish_ms"] = _selfish_batch_ms(config(density), corpus, batches, masked=True, seed=seed)
    out["lshx_ms"] = _trainer_batch_ms(config(density), corpus, batches, fused=True)
    out["loop_ms"] = _trainer_batch_ms(config(density), corpus, batches, fused=False)
    out["loop_over_lshx"] = out["loop_ms"] / out["lshx_ms"]
    out["ratio"] = out["selfish_ms"] / out["lshx_ms"] if task == "ptb-lstm" else out["loop_over_lshx"]
    return out
