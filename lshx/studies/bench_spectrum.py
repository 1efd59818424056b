"""Benchmarks of the spectrum: `lshx bench ls-step` (lshx's counted steps against the authors'
algorithm and the floor) and `lshx bench spectrum-lib` (lshx.lyapunov_spectrum against a naive
vmap(jacrev) + QR loop), each variant checked against the float64 result before it is timed."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

from lshx.errors import ConfigError
from lshx.models import LSTMLM
from lshx.studies.bench import time_ms, interleaved, ratio_spread


def _ls_model(hidden: int, layers: int, density: float, seed: int, device: str, checkpoint: Optional[str]):
    """A trained checkpoint (its spectrum has a trained model's spread), or a random LSTM at the
    density (the paper's size has no trained checkpoint here)."""
    from lshx.sparse.config import DSTConfig
    from lshx.sparse.masking import Masking

    if checkpoint:
        from lshx.train import load_model

        model, _ = load_model(checkpoint)
        if not isinstance(model, LSTMLM):
            raise ConfigError(f"{checkpoint}: bench ls-step times an LSTM checkpoint")
    else:
        torch.manual_seed(seed)
        model = LSTMLM(100, hidden, hidden, layers, dropout=0.0)
        if density < 1:
            Masking(model, DSTConfig(density=density), 1, seed=seed)
    return model.eval().to(device)


def ls_step_case(hidden: int, layers: int, k: Optional[int] = None, samples: int = 2, density: float = 0.33,
                 seed: int = 0, device: str = "cpu", variants: Sequence[Tuple] = (("householder", 1),),
                 steps: int = 10, checkpoint: Optional[str] = None, authors: bool = True, repeats: int = 5) -> dict:
    """ms per sample-step of Eq. 1's counted steps (the state's advance, J.B and the QR at its
    interval, amortized), for each (qr, reorth_every) variant, against the authors' algorithm
    (lshx.lyapunov.authors: dense diag_embed Jacobian blocks, J^T Q, torch.linalg.qr every step)
    and the floor (lshx's GEMMs and one Householder QR, timed alone), all in one run, the cases
    interleaved. Correctness first: every variant's exponents against the float64 per-step
    Householder reference on the same windows (max |delta| over the top half and over all)."""
    from lshx.lyapunov.authors import AuthorsLSTMStep
    from lshx.lyapunov.config import LSConfig
    from lshx.lyapunov.models import measure

    model = _ls_model(hidden, layers, density, seed, device, checkpoint)
    H, L = model.hidden_size, model.num_layers
    N = L * H
    k = k or N
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, model.vocab_size, (samples, steps), generator=g).to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    out = {"name": f"ls-step H={H} L={L} k={k} K={samples} T={steps}" + (" (trained)" if checkpoint else ""),
           "hidden": H, "layers": L, "k": k, "samples": samples, "steps": steps, "device": device,
           "checkpoint": checkpoint, "threads": torch.get_num_threads()}
    with torch.no_grad():  # the reference: float64, Householder every step
        ref = measure(model.double(), tokens, LSConfig(samples=samples, steps=steps, warmup=0, k=k)).mean()
        ref = torch.sort(ref, descending=True).values
        model.float()
    half = max(1, k // 2)
    fns, cases = {}, []
    for variant in variants:
        qr, m = variant[:2]
        tangent = variant[2] if len(variant) > 2 else None
        cfg = LSConfig(samples=samples, steps=steps, warmup=0, k=k, qr=qr, reorth_every=m, tangent_dtype=tangent)
        with torch.no_grad():
            res = measure(model, tokens, cfg)
        lam, qrs = torch.sort(res.mean().double(), descending=True).values, res.qrs
        err = (lam - ref).abs()
        name = f"lshx qr={qr} m={m}" + (f" tangent={tangent}" if tangent else "")
        cases.append({"case": name, "qr": qr, "reorth_every": m, "tangent_dtype": tangent, "qrs": qrs, "top_half_err": float(err[:half].max()),
                      "max_err": float(err.max())})

        def run(cfg=cfg):
            with torch.no_grad():
                measure(model, tokens, cfg)
        fns[name] = run
    if authors:  # its exponents are lshx's with J^T propagation: checked before it is timed
        step = AuthorsLSTMStep(model)
        with torch.no_grad():
            state, Q = model.init_state(samples), torch.eye(N, k, device=device).expand(samples, N, k).contiguous()
            acc = torch.zeros(samples, k, device=device, dtype=torch.float64)
            for t in range(steps):
                state, Q, logr = step.step(tokens[:, t], state, Q)
                acc += logr.double()
            theirs = torch.sort((acc / steps).mean(0), descending=True).values
            jt = measure(model.double(), tokens, LSConfig(samples=samples, steps=steps, warmup=0, k=k,
                                                          propagate="JT")).mean()
            model.float()
            jt = torch.sort(jt, descending=True).values
        out["authors_err"] = float((theirs - jt).abs()[:half].max())
        if out["authors_err"] > 1e-3:
            raise AssertionError(f"the authors' algorithm differs from lshx's J^T propagation by "
                                 f"{out['authors_err']:.2e} over the top half")

        def run_authors():
            with torch.no_grad():
                state = model.init_state(samples)
                Q = torch.eye(N, k, device=device).expand(samples, N, k).contiguous()
                for t in range(steps):
                    state, Q, _ = step.step(tokens[:, t], state, Q)
        fns["authors"] = run_authors
    # the floor: lshx's GEMMs (2L - 1 blocks of H x H x k) and one Householder QR per step, alone
    blocks = torch.randn(samples, H, H, device=device)
    rhs = torch.randn(samples, H, k, device=device)
    qr_in = torch.randn(samples, N, k, device=device)
    gemm_ms = time_ms(lambda: (torch.bmm(blocks, rhs), sync()), 0.3)
    qr_ms = time_ms(lambda: (torch.linalg.qr(qr_in), sync()), 0.3)
    timed = interleaved(fns, repeats=repeats, target_s=0.2, sync=sync)
    per = samples * steps
    for c in cases:
        t = timed[c["case"]]
        c.update({k2: v / per for k2, v in t.items() if k2.endswith("_ms")})
    out["cases"] = cases
    out["floor_ms"] = ((2 * L - 1) * gemm_ms + qr_ms) / samples
    out["geqrf_gflops"] = (2.0 * N * k * k - 2.0 * k ** 3 / 3) * samples / qr_ms / 1e6
    out["sgemm_gflops"] = 2.0 * H * H * k * samples / gemm_ms / 1e6
    if authors:
        a = {k2: v / per for k2, v in timed["authors"].items() if k2.endswith("_ms")}
        out["authors"] = a
        for c in cases:
            r, lo, hi = ratio_spread(a, c)
            c.update({"vs_authors": r, "vs_authors_lo": lo, "vs_authors_hi": hi})
    for c in cases:
        c["vs_floor"] = c["median_ms"] / out["floor_ms"]
    return out


def library_spectrum_case(hidden: int = 512, samples: int = 2, steps: int = 10, seed: int = 0,
                          variants: Sequence[Tuple] = (("householder", 1),), repeats: int = 3) -> dict:
    """lshx.lyapunov_spectrum on a 1-layer nn.GRU (k = N) against what a new user would write:
    the Jacobian of the GRU cell by vmap(jacrev), B <- J B and torch.linalg.qr at every step,
    per sample-step, after checking that both give the same exponents (float64 reference)."""
    from lshx.lyapunov import lyapunov_spectrum

    torch.manual_seed(seed)
    gru = torch.nn.GRU(16, hidden)
    x = torch.randn(steps, samples, 16)
    cell = torch.nn.GRUCell(16, hidden)
    with torch.no_grad():
        for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, n).copy_(getattr(gru, f"{n}_l0"))
    W = {n: getattr(cell, n).detach() for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}

    def step(h, xt):  # the GRU cell in torch ops (torch.func cannot vmap nn.GRUCell's fused kernel)
        gi, gh = W["weight_ih"] @ xt + W["bias_ih"], W["weight_hh"] @ h + W["bias_hh"]
        r = torch.sigmoid(gi[:hidden] + gh[:hidden])
        z = torch.sigmoid(gi[hidden:2 * hidden] + gh[hidden:2 * hidden])
        n = torch.tanh(gi[2 * hidden:] + r * gh[2 * hidden:])
        return (1 - z) * n + z * h

    jac = torch.func.vmap(torch.func.jacrev(step))
    fwd = torch.func.vmap(step)

    def naive():
        h = torch.zeros(samples, hidden)
        B = torch.eye(hidden).expand(samples, hidden, hidden)
        acc = torch.zeros(samples, hidden)
        for t in range(steps):
            J = jac(h, x[t])
            h = fwd(h, x[t])
            q, r = torch.linalg.qr(J @ B)
            B = q
            acc += r.diagonal(dim1=1, dim2=2).abs().log()
        return torch.sort((acc / steps).mean(0), descending=True).values

    with torch.no_grad():
        mine = lyapunov_spectrum(gru, x)
        theirs = naive()
        ref = lyapunov_spectrum(gru.double(), x.double())
        gru.float()
    out = {"name": f"library spectrum nn.GRU H={hidden} K={samples} T={steps} k=N", "threads": torch.get_num_threads(),
           "naive_err": float((theirs.double() - ref).abs().max()), "lshx_err": float((mine.double() - ref).abs().max())}
    fns = {"naive": naive}
    cases = []
    for variant in variants:
        qr, m = variant[:2]
        name = f"lshx qr={qr} m={m}"
        with torch.no_grad():
            got = lyapunov_spectrum(gru, x, qr=qr, reorth_every=m)
        cases.append({"case": name, "top_half_err": float((got.double() - ref).abs()[: hidden // 2].max())})
        fns[name] = lambda qr=qr, m=m: lyapunov_spectrum(gru, x, qr=qr, reorth_every=m)
    with torch.no_grad():
        t = interleaved(fns, repeats=repeats, target_s=None)
    per = samples * steps
    out["naive"] = {k: v / per for k, v in t["naive"].items() if k.endswith("_ms")}
    for c in cases:
        c.update({k: v / per for k, v in t[c["case"]].items() if k.endswith("_ms")})
        c["vs_naive"], c["vs_naive_lo"], c["vs_naive_hi"] = ratio_spread(out["naive"], c)
    out["cases"] = cases
    return out
