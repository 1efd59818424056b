"""lshx bench: kernel benchmarks, each against its reference in the same run."""
from __future__ import annotations

import click

from lshx.cli.options import echo_json


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
@click.option("--json", "as_json", is_flag=True)
def ls_step_cmd(hidden, layers, k, samples, density, no_reference, as_json):
    """One Lyapunov step (J.B + QR) per sample: fast against the autograd reference and the floor
    (the same GEMMs and QR timed alone)."""
    import torch

    from lshx.bench import format_table, ls_step_case

    case = ls_step_case(hidden, layers, k, samples, density, reference=not no_reference)
    case["threads"] = torch.get_num_threads()
    if as_json:
        echo_json({"cases": [case]})
    else:
        click.echo(format_table([case], ["name", "ref_ms", "lshx_ms", "ratio", "floor_ms", "vs_floor",
                                         "lshx_gflops", "sgemm_gflops", "geqrf_gflops", "threads"]))
