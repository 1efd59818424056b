"""lshx ls-compute: the Lyapunov spectrum of trained checkpoints."""
from __future__ import annotations

import click

from lshx.cli.options import echo_json
from lshx.lyapunov.config import AUTO, IMPLS, PROPAGATE, QR_METHODS, STATES, TANGENT_DTYPES, WARMUP_MODES


class Reorth(click.ParamType):
    """--reorth-every: an integer m >= 1 or "auto"."""
    name = "m|auto"

    def convert(self, value, param, ctx):
        if value == AUTO or isinstance(value, int):
            return value
        try:
            return int(value)
        except ValueError:
            self.fail(f"expected an integer >= 1 or 'auto', got {value!r}", param, ctx)


@click.command("ls-compute")
@click.argument("checkpoints", nargs=-1, required=True)
@click.option("--data", type=str, default=None, help="Folder with ptb.valid.txt [default: data/ptb].")
@click.option("--samples", type=int, default=2, show_default=True, help="K windows of the validation split.")
@click.option("--steps", type=int, default=35, show_default=True, help="T counted steps per window.")
@click.option("--warmup", type=int, default=10, show_default=True, help="W warm-up steps before them.")
@click.option("--warmup-mode", type=click.Choice(WARMUP_MODES), default="advance", show_default=True,
              help="Warm-up advances the state only, or also propagates and re-orthonormalizes B.")
@click.option("--state", type=click.Choice(STATES), default="h", show_default=True,
              help="h: c held fixed (the authors' choice); hc: the full LSTM state.")
@click.option("--propagate", type=click.Choice(PROPAGATE), default="J", show_default=True,
              help="J: B <- J.B (Eq. 1); JT: B <- J^T.B (the authors' released code).")
@click.option("--log-base", type=click.Choice(["e", "2"]), default="e", show_default=True)
@click.option("--k", "k", type=int, default=None, help="Number of exponents [default: all].")
@click.option("--seed", type=int, default=None, help="Draw windows at random with this seed [default: the first].")
@click.option("--impl", type=click.Choice(IMPLS), default="fast", show_default=True)
@click.option("--reorth-every", type=Reorth(), default=1, show_default=True,
              help="QR every m counted steps, or 'auto': m from the spread of the last QR's exponents and the "
                   "dtype (docs/lyapunov.md gives the accuracy of each).")
@click.option("--qr", type=click.Choice(QR_METHODS), default="householder",
              show_default=True, help="cholqr2: CholeskyQR2, faster for k << N (Householder when "
              "ill-conditioned); batched: lshx's batched Householder kernel (for CUDA).")
@click.option("--tangent-dtype", type=click.Choice(TANGENT_DTYPES), default=None,
              help="J.B and the QR in this dtype [default: the model's]; float64 on a float32 model is "
                   "within 1e-6 of the float64 spectrum, about twice the cost (docs/lyapunov.md).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per checkpoint, one per line.")
def ls_compute_cmd(checkpoints, data, samples, steps, warmup, warmup_mode, state, propagate, log_base, k, seed,
                   impl, reorth_every, qr, tangent_dtype, as_json):
    """Lyapunov spectrum (paper Eq. 1) of each CHECKPOINT on validation windows.

    Example: lshx ls-compute runs/x/best.pt --samples 2 --steps 35 --json
    """
    from lshx.data import Vocab, load_split
    from lshx.lyapunov import LSConfig, model_spectrum, sample_windows
    from lshx.train import load_model

    cfg = LSConfig(samples=samples, steps=steps, warmup=warmup, warmup_mode=warmup_mode, state=state, k=k,
                   log_base=log_base, propagate=propagate, seed=seed, impl=impl, reorth_every=reorth_every, qr=qr,
                   tangent_dtype=tangent_dtype)
    for path in checkpoints:
        model, ckpt = load_model(path)
        ids, _ = load_split(data, "valid", Vocab(list(ckpt["vocab"])))
        tokens = sample_windows(ids, samples, warmup + steps, seed)
        res = model_spectrum(model, tokens, cfg)
        if as_json:
            echo_json({"checkpoint": path, "spectrum": res.spectrum, "max": res.max, "mean": res.mean,
                       "var": res.var, "samples": samples, "steps": steps, "warmup": warmup, "state": state,
                       "propagate": propagate, "k": len(res.spectrum), "log_base": log_base,
                       "tokens": res.tokens, "wall_s": res.wall_s})
        else:
            top = ", ".join(f"{v:.3f}" for v in res.spectrum[:5])
            click.echo(f"{path}: max {res.max:.4f}  mean {res.mean:.4f}  var {res.var:.4f}  "
                       f"(k={len(res.spectrum)}, top: {top}; {res.wall_s:.1f}s)")
