"""lshx report: figures and an index.html for a search in a run DB."""
from __future__ import annotations

import click

from lshx.cli.options import echo_json


@click.command("report")
@click.argument("db", type=click.Path(dir_okay=False))
@click.option("--name", type=str, default=None, help="Search name [default: the latest in DB].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="report", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def report_cmd(db, name, out_dir, as_json):
    """PNG figures (LS curves, LS space, perplexity curves, distance vs perplexity), a
    markdown summary and an index.html for one search of DB."""
    import os

    from lshx.errors import LshxError
    from lshx.studies.report import make_report

    if not os.path.isfile(db):
        raise LshxError(f"run DB not found: {db}")
    res = make_report(db, out_dir, name)
    if as_json:
        echo_json(res)
    else:
        click.echo(f"{len(res['figures'])} figures and index.html in {res['out']} (search {res['name']!r})")
