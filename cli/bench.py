"""lshx bench: kernel benchmarks, each against its reference in the same run."""
from __future__ import annotations

import click

from lshx.cli.options import echo_json
from lshx.lyapunov import QR_METHODS


@click.group("bench")
def bench_group():
    """Kernel benchmarks (ratios against the reference measured in the same run)."""


@bench_group.command("ls-step")
@click.option("--hidden", type=int, default=256, show_default=True)
@click.option("--layers", type=int, default=2, show_default=True)
@click.option("--k", "k", type=int, default=None, help="Exponents [default: N = layers * hidden].")
@click.option("--samples", type=int, default=2, show_default=True)
@click.option("--density", type=float, default=0.33, show_default=True)
@click.option("--no-reference", is_flag=True, help="Skip the autograd reference (slow at large sizes).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--qr", type=click.Choice(QR_METHODS), default="householder",
              show_default=True, help="The re-orthonormalization timed (see lshx ls-compute --qr).")
@click.option("--json", "as_json", is_flag=True)
def ls_step_cmd(hidden, layers, k, samples, density, no_reference, device, qr, as_json):
    """One Lyapunov step (J.B + QR) per sample: fast against the autograd reference and the floor
    (the same GEMMs and QR timed alone)."""
    import torch

    from lshx.studies.bench import format_table, ls_step_case

    case = ls_step_case(hidden, layers, k, samples, density, reference=not no_reference, device=device, qr=qr)
    case["threads"] = torch.get_num_threads()
    if as_json:
        echo_json({"cases": [case]})
    else:
        click.echo(format_table([case], ["name", "ref_ms", "lshx_ms", "ratio", "ref_jb_ms", "lshx_jb_ms",
                                         "jb_ratio", "floor_ms", "vs_floor", "lshx_gflops", "sgemm_gflops",
                                         "geqrf_gflops", "threads"]))


@bench_group.command("matmul")
@click.option("--out-features", type=int, default=6000, show_default=True, help="4H of the paper's LSTM.")
@click.option("--in-features", type=int, default=1500, show_default=True)
@click.option("--batch", type=int, default=20, show_default=True)
@click.option("--density", "densities", type=float, multiple=True, default=(0.33, 0.1), show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--train", is_flag=True, help="Forward and backward instead of inference.")
@click.option("--path", type=click.Choice(["auto", "csr", "dense"]), default="auto", show_default=True,
              help="lshx's path: what masked_linear picks, or forced.")
@click.option("--json", "as_json", is_flag=True)
def matmul_cmd(out_features, in_features, batch, densities, device, train, path, as_json):
    """Masked linear map: dense GEMM on the masked weight against lshx's path."""
    from lshx.studies.bench import format_table, matmul_case

    cases = [matmul_case(out_features, in_features, batch, d, device, train=train, path=path) for d in densities]
    if as_json:
        echo_json({"cases": cases})
    else:
        click.echo(format_table(cases, ["name", "ref_ms", "lshx_ms", "ratio", "path", "max_rel_err"]))


@bench_group.command("recurrence")
@click.option("--hidden", type=int, default=1500, show_default=True, help="The paper's LSTM size.")
@click.option("--batch", type=int, default=20, show_default=True)
@click.option("--steps", type=int, default=35, show_default=True)
@click.option("--density", "densities", type=float, multiple=True, default=(0.33, 0.1), show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def recurrence_cmd(hidden, batch, steps, densities, device, as_json):
    """One sparse LSTM layer's T steps (inference): the dense per-step recurrence on the masked
    W_hh against lshx.ops.lstm_recurrence (CSR; the persistent kernel on CUDA)."""
    from lshx.studies.bench import format_table, recurrence_case

    cases = [recurrence_case(hidden, batch, steps, d, device) for d in densities]
    if as_json:
        echo_json({"cases": cases})
    else:
        click.echo(format_table(cases, ["name", "ref_ms", "lshx_ms", "ratio", "max_abs_err"]))


@bench_group.command("train-epoch")
@click.argument("task", type=click.Choice(["ptb-lstm", "ptb-rhn"]), default="ptb-lstm")
@click.option("--preset", type=click.Choice(["smoke", "small", "paper"]), default="small", show_default=True)
@click.option("--density", type=float, default=0.33, show_default=True)
@click.option("--batches", type=int, default=20, show_default=True, help="Training batches timed.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def train_epoch_cmd(task, preset, density, batches, device, as_json):
    """ms per training batch on the same batches: dense, Selfish-RNN's way (ptb-lstm), lshx's
    sparse training, and lshx's per-step reference loop."""
    from lshx.studies.bench import format_table, train_epoch_case

    cases = [train_epoch_case(task, preset, density, batches, device=device)]
    if as_json:
        echo_json({"cases": cases})
    else:
        keys = ["name", "dense_ms", "selfish_ms", "lshx_ms", "loop_ms", "ratio", "loop_over_lshx"]
        click.echo(format_table(cases, [k for k in keys if k in cases[0]]))
