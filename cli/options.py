"""Options shared by several commands."""
from __future__ import annotations

import json
import math

import click

from lshx.sparse.config import DEATHS, GROWTHS, INITS, REDISTRIBUTIONS


def dst_options(f):
    """--init/--death/--growth/--redistribution/--death-rate/--update-every."""
    for opt in reversed([
        click.option("--init", "init", type=click.Choice(INITS), default=None, help="Sparse initialization."),
        click.option("--death", type=click.Choice(DEATHS), default=None, help="Death (pruning) mode."),
        click.option("--growth", type=click.Choice(GROWTHS), default=None, help="Growth mode."),
        click.option("--redistribution", type=click.Choice(REDISTRIBUTIONS), default=None,
                     help="How regrowth is spread over the tensors."),
        click.option("--death-rate", type=float, default=None, help="Initial death rate (cosine decay to 0.005)."),
        click.option("--update-every", type=int, default=None,
                     help="Topology update every N steps (default: once per epoch)."),
    ]):
        f = opt(f)
    return f


def dst_overrides(**kw) -> dict:
    keys = {"init": "init", "death": "death", "growth": "growth", "redistribution": "redistribution",
            "death_rate": "death_rate", "update_every": "update_every"}
    return {keys[k]: v for k, v in kw.items() if k in keys and v is not None}


def _clean(obj):
    """NaN and inf are not valid JSON: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def echo_json(obj) -> None:
    click.echo(json.dumps(_clean(obj)))
