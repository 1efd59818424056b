"""lshx search: LS-based Hyperpruning (or its loss-based and full-training counterparts)."""
from __future__ import annotations

import click

from lshx.cli.options import echo_json, executor_options, resumable, running_executor
from lshx.presets import PRESET_NAMES, TASKS
from lshx.search.hpo import HPOS
from lshx.search.schedule import DISTANCES, STRATEGIES


@click.command("search")
@click.argument("task", type=click.Choice(TASKS))
@click.option("--preset", type=click.Choice(PRESET_NAMES), default="small", show_default=True)
@click.option("--hpo", type=click.Choice(HPOS), default="tpe",
              show_default=True, help="How candidates are proposed.")
@click.option("--distance", type=click.Choice(DISTANCES), default="pca2", show_default=True,
              help="pca2: 2-D PCA of LS space (paper); raw: L2 of the spectra (authors' code); pca2-pair: one "
                   "PCA per candidate and the dense model; loss: validation perplexity (loss-based counterpart).")
@click.option("--strategy", type=click.Choice(STRATEGIES), default="lsh", show_default=True,
              help="lsh: eliminate and insert; full: train every proposed config to the end.")
@click.option("--n", "n", type=int, default=None, help="Initial candidates [preset].")
@click.option("--e0", type=int, default=None, help="Epochs before the first elimination [preset].")
@click.option("--ei", type=int, default=None, help="Epochs between eliminations [preset].")
@click.option("--final-epochs", type=int, default=None, help="P: epochs of the final training [preset].")
@click.option("--final-k", type=int, default=2, show_default=True, help="Stop selecting at this many.")
@click.option("--density", type=float, default=None, help="Fraction of weights kept [preset].")
@click.option("--max-batches", type=int, default=None, help="Training windows per epoch [preset].")
@click.option("--data", type=str, default=None, help="Folder with ptb.{train,valid,test}.txt.")
@click.option("--device", type=str, default="cpu", show_default=True,
              help="cpu or cuda[:N]: where candidates train and their spectra are computed.")
@executor_options
@click.option("--db", type=click.Path(dir_okay=False), default="runs/search.sqlite", show_default=True)
@click.option("--name", type=str, default=None, help="Search name in the DB [default: from the options].")
@click.option("--resume", is_flag=True, help="Continue an interrupted search: nothing finished is re-done.")
@click.option("--wait", is_flag=True, help="If another process is running this search, wait for it instead of "
                                           "stopping.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--quiet", is_flag=True)
def search_cmd(task, preset, hpo, distance, strategy, n, e0, ei, final_epochs, final_k, density, max_batches, data,
               device, executor, workers, ray_address, threads, db, name, resume, wait, seed, as_json, quiet):
    """Search pruning configurations of TASK by their distance to the dense model in LS space.

    Example: lshx search ptb-lstm --preset small --hpo tpe --distance pca2 --db runs/s.sqlite
    """
    from lshx.search.config import SearchConfig
    from lshx.search.engine import run_search

    cfg = SearchConfig.from_preset(task, preset, hpo=hpo, distance=distance, strategy=strategy, n=n, e0=e0, ei=ei,
                                   final_epochs=final_epochs, final_k=final_k, density=density, seed=seed,
                                   data=data, max_batches=max_batches, device=device, threads=threads)
    name = name or f"{task}-{preset}-{strategy}-{hpo}-{distance}-s{seed}"
    resumable()
    with running_executor(cfg, executor, workers, ray_address) as ex:
        res = run_search(cfg, db, ex, name=name, resume=resume, quiet=quiet, wait=wait)
        ran = ex.describe()
    if as_json:
        echo_json({**res, "executor": ran})
    else:
        b, d = res["best"], res["dense"]
        click.echo(f"best: {b['describe']}  val ppl {b['val_ppl']:.2f}  test ppl {b['test_ppl']:.2f}")
        click.echo(f"dense: val ppl {d['val_ppl']:.2f}  test ppl {d['test_ppl']:.2f}")
        click.echo(f"{res['candidates']} candidates, {res['train_epochs']} training epochs, {res['wall_s']:.0f}s "
                   f"(search {name!r} in {db})")
        if ran.get("jobs_per_node"):
            click.echo(f"ray: {sum(ran['jobs_per_node'].values())} jobs on {len(ran['jobs_per_node'])} node(s)")
