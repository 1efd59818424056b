"""Kernel benchmarks: lshx against the reference measured in the same run, correctness first."""
from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch.utils import benchmark

from lshx import ops


def _calibrate(fn: Callable[[], object], target_s: float) -> int:
    """How many calls make one timed sample of about target_s (after a warm-up call)."""
    fn()
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-6)
    return max(1, int(target_s / once))


def interleaved(fns: Dict[str, Callable[[], object]], repeats: int = 7, target_s: Optional[float] = 0.05,
                sync: Callable[[], object] = lambda: None) -> Dict[str, dict]:
    """Times every case round-robin (A B C A B C ...: a load spike on a shared machine lands on
    one round, not on one case), `repeats` rounds of samples of about target_s each (None: one
    call per sample, after one warm-up call); per case ms per call: the median, the quartiles
    and the extremes over the rounds."""
    if target_s is None:
        for fn in fns.values():
            fn()
        inner = {name: 1 for name in fns}
    else:
        inner = {name: _calibrate(fn, target_s) for name, fn in fns.items()}
    sync()
    samples: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(inner[name]):
                fn()
            sync()
            samples[name].append(1000 * (time.perf_counter() - t0) / inner[name])
    out = {}
    for name, xs in samples.items():
        q = torch.tensor(xs, dtype=torch.float64).quantile(torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
        out[name] = {"median_ms": float(q[1]), "q1_ms": float(q[0]), "q3_ms": float(q[2]), "min_ms": min(xs),
                     "max_ms": max(xs), "rounds": len(xs), "calls_per_round": inner[name]}
    return out


def ratio_spread(ref: dict, new: dict) -> Tuple[float, float, float]:
    """ref / new from the medians, with the range the quartiles allow (ref q1 / new q3 .. ref q3 / new q1)."""
    return ref["median_ms"] / new["median_ms"], ref["q1_ms"] / new["q3_ms"], ref["q3_ms"] / new["q1_ms"]


def time_ms(fn: Callable[[], object], min_run_time: float = 1.0) -> float:
    """One case alone (the floor's GEMMs and QR): the median of torch.utils.benchmark's runs."""
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


def recurrence_case(hidden: int, batch: int, steps: int, density: float, device: str = "cpu",
                    seed: int = 0, repeats: int = 7) -> dict:
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
        t = interleaved({"ref": lambda: ops.lstm_recurrence_ref(xp, h0, c0, wm),
                         "lshx": lambda: ops.lstm_recurrence(xp, h0, c0, w, m)}, repeats=repeats, sync=sync)
    return {"name": f"recurrence H={H} B={batch} T={steps} d={density:g}", **_pair(t["ref"], t["lshx"]),
            "max_abs_err": err, "device": device}


def _pair(ref: dict, new: dict) -> dict:
    """ref_ms, lshx_ms (medians), their quartiles and ratio = ref / lshx with its quartile range."""
    r, lo, hi = ratio_spread(ref, new)
    return {"ref_ms": ref["median_ms"], "ref_q": (ref["q1_ms"], ref["q3_ms"]), "lshx_ms": new["median_ms"],
            "lshx_q": (new["q1_ms"], new["q3_ms"]), "ratio": r, "ratio_lo": lo, "ratio_hi": hi}


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
                train: bool = False, path: str = "auto", repeats: int = 7) -> dict:
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
    t = interleaved({"ref": run_ref, "lshx": run_lshx}, repeats=repeats)
    kind = "fwd+bwd" if train else "inference"
    return {"name": f"matmul {kind} {out_f}x{in_f} B={batch} d={density:g}", **_pair(t["ref"], t["lshx"]),
            "path": path, "max_rel_err": err, "device": device}


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


def _selfish_runner(cfg, corpus, seed: int) -> Callable[[int], None]:
    """run(n): n training batches of SelfishLSTMLM: plain SGD with clipping of the dense
    gradient, then the masks re-applied to the weights after each step, in place (mul_ keeps
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
    names = [n for n, p in model.named_parameters() if p.dim() == 2]
    params = dict(model.named_parameters())
    counts = layer_counts({n: tuple(params[n].shape) for n in names}, cfg.dst.density, cfg.dst.init)
    gen = torch.Generator().manual_seed(seed)
    masks = {params[n]: random_mask(params[n].shape, counts[n], gen).to(cfg.device, params[n].dtype) for n in names}
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

    return run


def _trainer_runner(cfg, corpus, fused: bool) -> Callable[[int], None]:
    """run(n): n training batches of lshx's Trainer (fused recurrence, or the per-step loop)."""
    from lshx.train import Trainer

    tr = Trainer(cfg, corpus=corpus, quiet=True, progress=False)
    if hasattr(tr.model.rnn, "fused"):
        tr.model.rnn.fused = fused

    def run(n: int) -> None:
        tr.cfg.max_batches = n
        tr.train_epoch()

    return run


def train_epoch_case(task: str, preset: str, density: float, batches: int, seed: int = 0,
                     device: str = "cpu", repeats: int = 5) -> dict:
    """ms per training batch, on the same batches of PTB-16%: `dense_ms` the model without
    masks; `lshx_ms` lshx's sparse training (the fused recurrence); `loop_ms` the same through
    the per-step reference loop; for ptb-lstm also `selfish_ms`, Selfish-RNN's way (a dense
    torch.nn.LSTM whose weights are re-masked after each step). The cases run round-robin,
    `repeats` rounds of `batches` batches each; medians with their quartiles. ratio =
    selfish_ms / lshx_ms (ptb-lstm) or loop_ms / lshx_ms (ptb-rhn, which has no Selfish-style
    counterpart here), with the range the quartiles allow."""
    from lshx.data import load_corpus
    from lshx.train import TrainConfig

    corpus = load_corpus(None)

    def config(d: float):
        return TrainConfig.from_preset(task, preset, epochs=2, max_batches=batches, seed=seed,
                                       eval_max_batches=1, device=device, dst={"density": d})

    runners = {"dense": _trainer_runner(config(1.0), corpus, fused=True)}
    if task == "ptb-lstm":
        runners["selfish"] = _selfish_runner(config(density), corpus, seed)
    runners["lshx"] = _trainer_runner(config(density), corpus, fused=True)
    runners["loop"] = _trainer_runner(config(density), corpus, fused=False)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    t = interleaved({name: (lambda run=run: run(batches)) for name, run in runners.items()}, repeats=repeats,
                    target_s=None, sync=sync)
    per = {name: {k: v / batches for k, v in r.items() if k.endswith("_ms")} for name, r in t.items()}
    out = {"name": f"train {task} {preset} d={density:g} ({batches} batches x {repeats} rounds)", "device": device}
    for name, r in per.items():
        out[f"{name}_ms"] = r["median_ms"]
        out[f"{name}_q"] = (r["q1_ms"], r["q3_ms"])
    out["loop_over_lshx"], out["loop_over_lshx_lo"], out["loop_over_lshx_hi"] = ratio_spread(per["loop"], per["lshx"])
    ref = per["selfish"] if task == "ptb-lstm" else per["loop"]
    out["ratio"], out["ratio_lo"], out["ratio_hi"] = ratio_spread(ref, per["lshx"])
    return out
