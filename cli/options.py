"""Options shared by several commands."""
from __future__ import annotations

import json
import math
from contextlib import contextmanager

import click

from lshx.search.executors import EXECUTORS
from lshx.sparse.config import DEATHS, GROWTHS, INITS, REDISTRIBUTIONS


def dst_options(f):
    """--init/--death/--growth/--redistribution/--death-rate/--update-every."""
    for opt in reversed([
        click.option("--init", "init", type=click.Choice(INITS), default=None, help="Sparse initialization."),
        click.option("--death", type=click.Choice(DEATHS), default=None, help="Death (pruning) mode."),
        click.option("--growth", type=click.Choice(GROWTHS), default=None, help="Growth mode."),
        click.option("--redistribution", type=click.Choice(REDISTRIBUTIONS), default=None,
                     help="How regrowth is spread over the tensors."),
        click.option("--death-rate", type=float, default=None, help="Initial death rate, in [0, 1) (cosine decay to 0.005, or to itself when lower; 0: the topology never "
                          "changes)."),
        click.option("--update-every", type=int, default=None,
                     help="Topology update every N steps (default: once per epoch)."),
    ]):
        f = opt(f)
    return f


def dst_overrides(**kw) -> dict:
    keys = {"init": "init", "death": "death", "growth": "growth", "redistribution": "redistribution",
            "death_rate": "death_rate", "update_every": "update_every"}
    return {keys[k]: v for k, v in kw.items() if k in keys and v is not None}


def executor_options(f):
    """--executor/--workers/--ray-address/--threads of the commands that run a search."""
    for opt in reversed([
        click.option("--executor", type=click.Choice(EXECUTORS), default="serial",
                     show_default=True, help="Where the training jobs run."),
        click.option("--workers", type=int, default=2, show_default=True,
                     help="Processes (or CPUs of a local Ray cluster)."),
        click.option("--ray-address", type=str, default=None,
                     help="HOST:PORT of a Ray cluster's head to join [default: start a local one]."),
        click.option("--threads", type=int, default=1, show_default=True,
                     help="Threads of every job, on every executor: part of the search's options (the same "
                          "search gives the same pick whatever OMP_NUM_THREADS is)."),
    ]):
        f = opt(f)
    return f


def run_db_options(default_db: str, what: str):
    """The options of a command that trains into a run DB: --data, --device, the executor's,
    --db, --name, --resume, --wait, --json, --quiet. `what` names what it trains (the help)."""
    def wrap(f):
        for opt in reversed([
            click.option("--data", type=str, default=None, help="Folder with ptb.{train,valid,test}.txt."),
            click.option("--device", type=str, default="cpu", show_default=True, help="cpu or cuda[:N]."),
            executor_options,
            click.option("--db", type=click.Path(dir_okay=False), default=default_db, show_default=True),
            click.option("--name", type=str, default=None, help=f"The {what}'s name in the DB [default: from the "
                                                                 f"options]."),
            click.option("--resume", is_flag=True, help="Continue: nothing finished is trained again."),
            click.option("--wait", is_flag=True, help=f"If another process is training this {what}, wait for it "
                                                      f"instead of stopping."),
            click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout."),
            click.option("--quiet", is_flag=True),
        ]):
            f = opt(f)
        return f
    return wrap


@contextmanager
def running_executor(cfg, kind: str, workers: int, ray_address):
    """Checks the search's inputs (options, data), then starts the executor and checks that it
    can run the search's jobs: all before any DB is opened. On the way out it frees the
    workers; on an error or a signal it stops their jobs at once (abort)."""
    from lshx.search.executors import make_executor

    cfg.check_inputs()
    ex = make_executor(kind, workers, ray_address)
    try:
        ex.check(cfg.threads)
        yield ex
    except BaseException:
        ex.close(abort=True)
        raise
    ex.close()


def resumable() -> None:
    """Marks the running command as one that --resume continues: an interrupted run says so."""
    click.get_current_context().meta["lshx.resumable"] = True


def clean_json(obj):
    """NaN and inf are not valid JSON: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    return obj


def echo_json(obj) -> None:
    click.echo(json.dumps(clean_json(obj)))
