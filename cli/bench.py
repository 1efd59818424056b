"""lshx bench: kernel benchmarks, each against its reference in the same run."""
from __future__ import annotations

import click

from lshx.cli.options import echo_json
from lshx.lyapunov.config import QR_METHODS


@click.group("bench")
def bench_group():
    """Kernel benchmarks (ratios against the reference measured in the same run)."""


def _variant(ctx, param, value):
    from lshx.lyapunov.config import TANGENT_DTYPES

    out = []
    for v in value:
        parts = v.split("/")
        qr, m = parts[0], parts[1] if len(parts) > 1 else "1"
        tangent = parts[2] if len(parts) > 2 else None
        if tangent is not None and tangent not in TANGENT_DTYPES:
            raise click.BadParameter(f"unknown tangent dtype {tangent!r} in {v!r}; allowed: {', '.join(TANGENT_DTYPES)}")
        if qr not in QR_METHODS:
            raise click.BadParameter(f"unknown qr {qr!r} in {v!r}; allowed: {', '.join(QR_METHODS)}")
        if m != "auto":
            try:
                m = int(m or 1)
            except ValueError:
                raise click.BadParameter(f"expected QR/M (M an integer or auto), got {v!r}") from None
            if m < 1:
                raise click.BadParameter(f"M must be >= 1 in {v!r}")
        out.append((qr, m, tangent) if tangent else (qr, m))
    return out


DEVICE = click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
DENSITIES = click.option("--density", "densities", type=float, multiple=True, default=(0.33, 0.1),
                         show_default=True)
BATCH = click.option("--batch", type=int, default=20, show_default=True)
REPEATS = click.option("--repeats", type=click.IntRange(min=1), default=7, show_default=True,
                       help="Interleaved rounds (cases timed round-robin).")


@bench_group.command("ls-step")
@click.option("--hidden", type=int, default=256, show_default=True)
@click.option("--layers", type=int, default=2, show_default=True)
@click.option("--k", "k", type=int, default=None, help="Exponents [default: N = layers * hidden].")
@click.option("--samples", type=int, default=2, show_default=True)
@click.option("--steps", type=int, default=10, show_default=True, help="Counted steps per timed run.")
@click.option("--density", type=float, default=0.33, show_default=True)
@click.option("--checkpoint", type=click.Path(dir_okay=False, exists=True), default=None,
              help="A trained LSTM checkpoint instead of a random model (its H and L; a trained spread).")
@click.option("--variant", "variants", multiple=True, callback=_variant, metavar="QR/M[/DTYPE]",
              default=("householder/1", "householder/2/float64", "householder/4/float64"), show_default=True,
              help="lshx's QR, re-orthonormalization interval (M an integer or auto) and tangent dtype "
                   "(float32 or float64; default the model's), repeatable.")
@click.option("--no-authors", is_flag=True, help="Skip the authors' algorithm (8 s a step at H = 1500).")
@click.option("--repeats", type=int, default=5, show_default=True, help="Interleaved rounds.")
@DEVICE
@click.option("--json", "as_json", is_flag=True)
def ls_step_cmd(hidden, layers, k, samples, steps, density, checkpoint, variants, no_authors, repeats, device,
                as_json):
    """ms per sample-step of the spectrum's counted steps for each lshx variant, against the
    authors' algorithm and the floor in the same run (cases interleaved; medians with their
    quartiles), after checking each variant against the float64 per-step reference."""
    from lshx.studies.bench_spectrum import ls_step_case

    res = ls_step_case(hidden, layers, k, samples, density, device=device, variants=variants, steps=steps,
                       checkpoint=checkpoint, authors=not no_authors, repeats=repeats)
    if as_json:
        echo_json(res)
        return
    click.echo(f"{res['name']}, {res['threads']} threads; ms per sample-step, median [quartiles] of "
               f"{repeats} interleaved rounds")
    if "authors" in res:
        a = res["authors"]
        click.echo(f"authors' algorithm: {a['median_ms']:.3g} [{a['q1_ms']:.3g}, {a['q3_ms']:.3g}]")
    click.echo(f"floor (lshx's GEMMs + one Householder QR alone): {res['floor_ms']:.3g} (sgemm "
               f"{res['sgemm_gflops']:.0f}, geqrf {res['geqrf_gflops']:.0f} GFLOP/s)")
    rows = [{**c, "ms": f"{c['median_ms']:.3g} [{c['q1_ms']:.3g}, {c['q3_ms']:.3g}]",
             "vs authors": (f"{c['vs_authors']:.2f} [{c['vs_authors_lo']:.2f}, {c['vs_authors_hi']:.2f}]"
                            if "vs_authors" in c else None)} for c in res["cases"]]
    click.echo(format_table(rows, ["case", "ms", "vs authors", "vs_floor", "qrs", "top_half_err", "max_err"]))


def _ms(v, q) -> str:
    return f"{v:.3g} [{q[0]:.3g}, {q[1]:.3g}]"


def _ratio(c: dict, key: str = "ratio") -> str:
    return f"{c[key]:.2f} [{c[key + '_lo']:.2f}, {c[key + '_hi']:.2f}]"


def _echo_pairs(cases, extra):
    rows = [{**c, "ref ms": _ms(c["ref_ms"], c["ref_q"]), "lshx ms": _ms(c["lshx_ms"], c["lshx_q"]),
             "ratio": _ratio(c)} for c in cases]
    click.echo(format_table(rows, ["name", "ref ms", "lshx ms", "ratio", *extra]))
    click.echo("(medians of interleaved rounds [quartiles]; ratio = ref / lshx [the range the quartiles allow])")


def format_table(rows, keys):
    from lshx.studies.bench import format_table as fmt

    return fmt(rows, keys)


@bench_group.command("matmul")
@click.option("--out-features", type=int, default=6000, show_default=True, help="4H of the paper's LSTM.")
@click.option("--in-features", type=int, default=1500, show_default=True)
@BATCH
@DENSITIES
@DEVICE
@click.option("--train", is_flag=True, help="Forward and backward instead of inference.")
@click.option("--path", type=click.Choice(["auto", "csr", "dense"]), default="auto", show_default=True,
              help="lshx's path: what masked_linear picks, or forced.")
@REPEATS
@click.option("--json", "as_json", is_flag=True)
def matmul_cmd(out_features, in_features, batch, densities, device, train, path, repeats, as_json):
    """Masked linear map: dense GEMM on the masked weight against lshx's path."""
    from lshx.studies.bench import matmul_case

    cases = [matmul_case(out_features, in_features, batch, d, device, train=train, path=path, repeats=repeats)
             for d in densities]
    if as_json:
        echo_json({"cases": cases})
    else:
        _echo_pairs(cases, ["path", "max_rel_err"])


@bench_group.command("recurrence")
@click.option("--hidden", type=int, default=1500, show_default=True, help="The paper's LSTM size.")
@BATCH
@click.option("--steps", type=int, default=35, show_default=True)
@DENSITIES
@DEVICE
@REPEATS
@click.option("--json", "as_json", is_flag=True)
def recurrence_cmd(hidden, batch, steps, densities, device, repeats, as_json):
    """One sparse LSTM layer's T steps (inference): the dense per-step recurrence on the masked
    W_hh against lshx.ops.lstm_recurrence (CSR; the persistent kernel on CUDA)."""
    from lshx.studies.bench import recurrence_case

    cases = [recurrence_case(hidden, batch, steps, d, device, repeats=repeats) for d in densities]
    if as_json:
        echo_json({"cases": cases})
    else:
        _echo_pairs(cases, ["max_abs_err"])


@bench_group.command("train-epoch")
@click.argument("task", type=click.Choice(["ptb-lstm", "ptb-rhn"]), default="ptb-lstm")
@click.option("--preset", type=click.Choice(["smoke", "small", "paper"]), default="small", show_default=True)
@click.option("--density", type=float, default=0.33, show_default=True)
@click.option("--batches", type=int, default=20, show_default=True, help="Training batches per case and round.")
@DEVICE
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="Interleaved rounds (each case trains --batches batches per round).")
@click.option("--json", "as_json", is_flag=True)
def train_epoch_cmd(task, preset, density, batches, device, repeats, as_json):
    """ms per training batch on the same batches: dense, Selfish-RNN's way (ptb-lstm), lshx's
    sparse training, and lshx's per-step reference loop, timed round-robin."""
    from lshx.studies.bench import train_epoch_case

    c = train_epoch_case(task, preset, density, batches, device=device, repeats=repeats)
    if as_json:
        echo_json({"cases": [c]})
        return
    names = [n for n in ("dense", "selfish", "lshx", "loop") if f"{n}_ms" in c]
    row = {"name": c["name"], **{f"{n} ms": _ms(c[f"{n}_ms"], c[f"{n}_q"]) for n in names},
           "ratio": _ratio(c), "loop/lshx": _ratio(c, "loop_over_lshx")}
    click.echo(format_table([row], ["name", *[f"{n} ms" for n in names], "ratio", "loop/lshx"]))
    click.echo(f"(ms per batch, medians of {repeats} interleaved rounds [quartiles]; ratio = "
               f"{'selfish' if task == 'ptb-lstm' else 'loop'} / lshx [the range the quartiles allow])")


@bench_group.command("spectrum-lib")
@click.option("--hidden", type=int, default=512, show_default=True)
@click.option("--samples", type=int, default=2, show_default=True)
@click.option("--steps", type=int, default=10, show_default=True)
@click.option("--variant", "variants", multiple=True, callback=_variant, metavar="QR/M",
              default=("householder/1", "householder/auto"), show_default=True)
@REPEATS
@click.option("--json", "as_json", is_flag=True)
def spectrum_lib_cmd(hidden, samples, steps, variants, repeats, as_json):
    """lshx.lyapunov_spectrum on a 1-layer nn.GRU (k = N) against a naive vmap(jacrev) + QR
    loop, per sample-step, both checked against the float64 result first."""
    from lshx.studies.bench_spectrum import library_spectrum_case

    res = library_spectrum_case(hidden, samples, steps, variants=[v[:2] for v in variants], repeats=repeats)
    if as_json:
        echo_json(res)
        return
    n = res["naive"]
    click.echo(f"{res['name']}, {res['threads']} threads; naive: {n['median_ms']:.3g} ms per sample-step "
               f"[{n['q1_ms']:.3g}, {n['q3_ms']:.3g}], error {res['naive_err']:.1e}")
    rows = [{**c, "ms": f"{c['median_ms']:.3g} [{c['q1_ms']:.3g}, {c['q3_ms']:.3g}]",
             "vs naive": _ratio(c, "vs_naive")} for c in res["cases"]]
    click.echo(format_table(rows, ["case", "ms", "vs naive", "top_half_err"]))
