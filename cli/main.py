"""Entry point of the `lshx` console script."""
from __future__ import annotations

import signal
import sys
import threading

import click

from lshx.errors import LshxError


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like KeyboardInterrupt for SIGINT: the same cleanup
    runs (leases released, workers stopped), then exit 143."""


def _terminate(signum, frame):
    raise Terminated()


class LshxGroup(click.Group):
    """Turns user errors into one line on stderr and exit code 2 (no traceback): lshx's own
    (LshxError) and click's usage errors (a bad option value, an unknown option or command)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LshxError as exc:
            click.echo(f"lshx: error: {exc}", err=True)
            sys.exit(2)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            click.echo(f"lshx: error: {exc.format_message()} (see {where} --help)", err=True)
            sys.exit(2)
        except (KeyboardInterrupt, Terminated) as exc:
            what = "terminated" if isinstance(exc, Terminated) else "interrupted"
            saved = "; finished epochs are saved, rerun with --resume" if ctx.meta.get("lshx.resumable") else ""
            click.echo(f"lshx: {what}{saved}", err=True)
            sys.exit(143 if isinstance(exc, Terminated) else 130)


@click.group(cls=LshxGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lshx")
def main() -> None:
    """LS-based Hyperpruning: find the best way to prune a recurrent network.

    Train sparse LSTM/RHN language models with dynamic sparse training, compute their
    Lyapunov spectra, and search pruning configurations by their distance to the dense
    model in LS space.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)


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
