"""Entry point of the `lshx` console script."""
from __future__ import annotations

import sys

import click

from lshx.errors import LshxError


class LshxGroup(click.Group):
    """Turns user errors into one line on stderr and exit code 2 (no traceback)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LshxError as exc:
            click.echo(f"lshx: error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("lshx: interrupted; finished epochs are saved, rerun with --resume", err=True)
            sys.exit(130)


@click.group(cls=LshxGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lshx")
def main() -> None:
    """LS-based Hyperpruning: find the best way to prune a recurrent network.

    Train sparse LSTM/RHN language models with dynamic sparse training, compute their
    Lyapunov spectra, and search pruning configurations by their distance to the dense
    model in LS space.
    """


def _register() -> None:
    from lshx.cli.train import train_cmd
    from lshx.cli.ls_compute import ls_compute_cmd
    from lshx.cli.bench import bench_group
    from lshx.cli.report import report_cmd
    from lshx.cli.search import search_cmd
    from lshx.cli.study import study_group

    main.add_command(train_cmd)
    main.add_command(ls_compute_cmd)
    main.add_command(bench_group)
    main.add_command(search_cmd)
    main.add_command(report_cmd)
    main.add_command(study_group)


_register()

if __name__ == "__main__":
    main()
