"""lshx study correlation: early LS distance and early perplexity against final test perplexity."""
from __future__ import annotations

import click

from lshx.cli.options import clean_json, echo_json, resumable, run_db_options, running_executor
from lshx.presets import PRESET_NAMES, TASKS
from lshx.search.schedule import DISTANCES
from lshx.search.space import POOLS, describe


@click.group("study")
def study_group():
    """Studies of the method itself."""


@study_group.command("correlation")
@click.argument("task", type=click.Choice(TASKS), default="ptb-lstm")
@click.option("--preset", type=click.Choice(PRESET_NAMES), default="small", show_default=True)
@click.option("--n", "n", type=int, default=12, show_default=True, help="Random configurations trained fully.")
@click.option("--final-epochs", type=int, default=6, show_default=True)
@click.option("--distance", type=click.Choice([d for d in DISTANCES if d != "loss"]), default="pca2",
              show_default=True)
@click.option("--max-batches", type=int, default=None, help="Training windows per epoch [preset].")
@run_db_options("runs/study.sqlite", "study")
@click.option("--seed", type=int, default=0, show_default=True)
def correlation_cmd(task, preset, n, final_epochs, distance, max_batches, data, device, executor, workers, ray_address,
                    threads, db, name, resume, wait, seed, as_json, quiet):
    """Spearman rho(LS distance at epoch e, final test ppl) and rho(val ppl at e, final test
    ppl) for each early epoch e, with 95% bootstrap intervals."""
    from lshx.search.config import SearchConfig
    from lshx.studies.correlation import correlation_study

    cfg = SearchConfig.from_preset(task, preset, hpo="random", distance=distance, strategy="full", n=n,
                                   final_epochs=final_epochs, e0=1, seed=seed, data=data, max_batches=max_batches,
                                   device=device, threads=threads)
    name = name or f"correlation-{task}-{preset}-n{n}-P{final_epochs}-{distance}-s{seed}"
    resumable()
    with running_executor(cfg, executor, workers, ray_address) as ex:
        res = correlation_study(cfg, db, ex, name, resume=resume, quiet=quiet, wait=wait)
    if as_json:
        echo_json(res)
        return
    click.echo(f"{res['n']} configurations, {final_epochs} epochs (PTB-16%); Spearman rho with final test ppl:")
    click.echo("epoch  LS distance [95% CI]        val ppl [95% CI]")

    def fmt(r):
        if r["rho"] is None:
            return "n/a".ljust(26)
        return f"{r['rho']:+.2f} [{r['lo']:+.2f}, {r['hi']:+.2f}]".ljust(26)

    for row in res["epochs"]:
        click.echo(f"{row['epoch']:5d}  {fmt(row['ls_distance'])}  {fmt(row['val_ppl'])}")


@study_group.command("table")
@click.argument("task", type=click.Choice(TASKS), default="ptb-lstm")
@click.option("--space", type=click.Choice(POOLS), default="gs24", show_default=True,
              help="gs24: the paper's grid (2 inits x 4 death modes x 3 redistributions); random: --n draws "
                   "from TPE's space.")
@click.option("--n", "n", type=int, default=None, help="Configurations of a random pool.")
@click.option("--preset", type=click.Choice(PRESET_NAMES), default="small", show_default=True)
@click.option("--density", type=float, default=None, help="Target density [preset].")
@click.option("--final-epochs", type=int, default=12, show_default=True)
@click.option("--max-batches", type=int, default=None,
              help="Training windows per epoch (default: whole PTB-16% epochs, not the search preset's cap).")
@click.option("--state", type=click.Choice(["h", "both"]), default="both", show_default=True,
              help="both: also the spectrum with the authors' aligned warm-up and, for ptb-lstm, the hc state's.")
@click.option("--seeds", type=int, default=1, show_default=True, help="Training seeds per configuration.")
@click.option("--only-seed", type=click.IntRange(min=0), default=None,
              help="Train this training seed only (one seed on another machine, e.g. a GPU).")
@run_db_options("runs/table.sqlite", "table")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the pool (random space).")
def table_cmd(task, space, n, preset, density, final_epochs, max_batches, state, seeds, only_seed, data, device,
              executor, workers, ray_address, threads, db, name, resume, wait, seed, as_json, quiet):
    """Trains every configuration of a pool (and the dense model) to --final-epochs, recording
    after every epoch the validation ppl, training loss and spectra, and each configuration's
    final test ppl: a table that `lshx study replay` replays searches on."""
    from lshx.errors import ConfigError
    from lshx.studies.table import table_configs, train_table

    cfg = table_configs(task, space, n, preset, state=state, final_epochs=final_epochs, seed=seed, data=data,
                        density=density, max_batches=max_batches, device=device, threads=threads)
    if seeds < 1:
        raise ConfigError("--seeds must be >= 1")
    name = name or f"{space}-{task}-{preset}-P{final_epochs}"
    resumable()
    with running_executor(cfg, executor, workers, ray_address) as ex:
        res = train_table(cfg, db, ex, name, seeds=seeds, resume=resume, quiet=quiet, wait=wait, only_seed=only_seed)
    if as_json or only_seed is not None:
        echo_json(res)
        return
    click.echo(f"table {res['name']}: {res['configs']} configurations + dense, {res['seeds']} seed(s), "
               f"{res['final_epochs']} epochs (PTB-16%)")
    click.echo(f"best: {res['best']} (test ppl {res['best_test_ppl']:.2f})")
    _echo_plateau(res["off_plateau"])


@study_group.command("snapshot")
@click.argument("db", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def snapshot_cmd(db, out, as_json):
    """A self-contained copy of run DB DB at OUT, to commit or carry to another machine while
    the run goes on (no lease, no -wal, no checkpoints): `lshx study table --db OUT --resume`
    there skips every finished evaluation and retrains only what was in flight."""
    from lshx.studies.table import snapshot

    res = snapshot(db, out)
    if as_json:
        echo_json(res)
        return
    done = sum(st == "done" for st in res["searches"].values())
    click.echo(f"{res['snapshot']}: {res['bytes'] / 1e6:.1f} MB, {res['evals']} evaluations, {res['tests']} test "
               f"perplexities, {done} of {len(res['searches'])} searches finished")


def _echo_plateau(rows) -> None:
    """Per epoch: sparse runs off the unigram plateau, their median and the dense val ppl."""
    click.echo(f"sparse runs with val ppl < {rows[0]['threshold']:.0f}, by epoch (median sparse / dense val ppl):")
    def f(v):
        return "-" if v is None else f"{v:.0f}"

    click.echo("  " + "  ".join(f"{r['epoch']}: {r['off']}/{r['runs']} ({f(r['median_val_ppl'])}/"
                                f"{f(r['dense_val_ppl'])})" for r in rows))


def _int_list(ctx, param, value):
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not out or min(out) < 1:
        raise click.BadParameter(f"expected comma-separated integers >= 1, got {value!r}")
    return out


def _seed_list(ctx, param, value):
    """--table-seeds: None (every seed) or distinct integers >= 0."""
    if value is None:
        return None
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated training seeds, got {value!r}") from None
    if not out or min(out) < 0 or len(set(out)) != len(out):
        raise click.BadParameter(f"expected distinct training seeds >= 0, got {value!r}")
    return out


def _schedules(ctx, param, value):
    out = []
    for v in value:
        try:
            e0, ei = (int(x) for x in v.split("/"))
        except ValueError:
            raise click.BadParameter(f"expected E0/EI (two integers, e.g. 3/3), got {v!r}") from None
        if e0 < 1 or ei < 1:
            raise click.BadParameter(f"e0 and ei must be >= 1, got {v!r}")
        out.append((e0, ei))
    return out


@study_group.command("replay")
@click.argument("db", type=click.Path(dir_okay=False))
@click.option("--table", "table_name", required=True, help="The table's name (lshx study table --name).")
@click.option("--table-seeds", "table_seeds", default=None, callback=_seed_list,
              help="Replay on these training seeds only (comma-separated; default every seed, each finished): "
                   "the finished seeds of a table still in training.")
@click.option("--methods", default=None,
              help="Comma-separated method names (default: every LSH distance and spectrum the table holds, "
                   "loss, full, random).")
@click.option("--hpo", default="grid,tpe", show_default=True, help="grid (the table's configs in a seeded order), "
                                                                    "tpe (restricted to the table's configs).")
@click.option("--n", "n", type=int, default=8, show_default=True)
@click.option("--e0", "e0s", default="1,2,3,4", show_default=True, callback=_int_list,
              help="Epochs before the first elimination (each with each --ei).")
@click.option("--ei", "eis", default="1,2", show_default=True, callback=_int_list,
              help="Epochs between eliminations.")
@click.option("--setting", "schedules", multiple=True, callback=_schedules, metavar="E0/EI",
              help="Exactly this (e0, ei) pair, instead of every --e0 with every --ei (repeatable).")
@click.option("--seeds", type=int, default=1000, show_default=True, help="Replays per setting.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes replaying settings in parallel.")
@click.option("--full-curve/--no-full-curve", default=True, show_default=True,
              help="With the full method: also replay full training of k = 1..all configurations (the anytime "
                   "baseline; about 24 x --seeds replays more).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Write regret.png, rho.png, curves.png and replay.json here. The settings replayed so far are "
                   "kept in DIR/.replay-partial/ until replay.json is written: an interrupted replay, rerun with "
                   "the same options, resumes.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--quiet", is_flag=True)
def replay_cmd(db, table_name, table_seeds, methods, hpo, n, e0s, eis, schedules, seeds, workers, full_curve, out_dir, as_json,
               quiet):
    """Replays searches on a table with the real search engine (nothing is trained): LSH with
    each distance and spectrum, the loss-based search on the same schedule, full training
    and a random pick, over --seeds seeds per setting."""
    import json as _json
    from pathlib import Path

    from lshx.errors import ConfigError
    from lshx.paths import writable_dir, write_text_atomic
    from lshx.progress import Progress
    from lshx.studies.figures import replay_figures
    from lshx.studies.replay import default_methods, replay
    from lshx.studies.replay_cache import FOLDER as PARTIAL, ReplayCache
    from lshx.studies.table import load_table

    if out_dir:
        writable_dir(out_dir, "the --out folder")  # before a replay of minutes
    table = load_table(db, table_name, table_seeds)
    avail = {m.name: m for m in default_methods(table)}
    chosen = None
    if methods is not None:
        names = [m.strip() for m in methods.split(",") if m.strip()]
        if not names:
            raise ConfigError(f"--methods {methods!r} names no method; this table offers: {', '.join(avail)}")
        bad = [m for m in names if m not in avail]
        if bad:
            raise ConfigError(f"unknown method(s) {', '.join(bad)}; this table offers: {', '.join(avail)}")
        chosen = [avail[m] for m in names]
    hpos = [h.strip() for h in hpo.split(",") if h.strip()]
    if not hpos or set(hpos) - {"grid", "tpe"}:
        raise ConfigError(f"--hpo {hpo!r}: allowed grid, tpe (comma-separated)")
    if seeds < 1:
        raise ConfigError("--seeds must be >= 1")
    bar = Progress(1, "replay settings", enabled=False if quiet else None)
    cache = ReplayCache(Path(out_dir) / PARTIAL, table) if out_dir else None
    resumed = []

    def progress(k, total):
        if cache and cache.hits and not resumed and not quiet:  # (every lookup precedes the first call)
            resumed.append(k)
            click.echo(f"resuming: {cache.hits} of {total} settings were replayed before (kept in {cache.folder})",
                       err=True)
        bar.total = total
        bar.update(k - bar.n)

    res = replay(table, chosen, hpos, n, e0s, eis, seeds, progress=progress, workers=workers, db_path=db,
                 full_curve=full_curve, schedules=schedules, cache=cache)
    bar.close()
    if out_dir:
        write_text_atomic(Path(out_dir) / "replay.json", _json.dumps(clean_json(res), indent=1, default=str))
        replay_figures(res, out_dir)
        cache.clear()
    if as_json:
        echo_json(res)
        return
    _echo_replay(res, n, seeds)


def _ci(ci, fmt="+.2f") -> str:
    return "-" if not ci else f"[{ci[0]:{fmt}}, {ci[1]:{fmt}}]"


def _echo_noise(noise: dict) -> None:
    t, tw = noise["test_ppl"], noise["twins"]
    parts = []
    for key, what in (("off_plateau", "the {} configurations off the plateau in every seed"),
                      ("all", "all {} configurations")):
        if t[key]["sd"] is not None:
            parts.append(f"{t[key]['sd']:.2f} {_ci((t[key]['lo'], t[key]['hi']), '.2f')} (df {t[key]['df']}, "
                         f"{what.format(t[key]['groups'])})")
    big = t["off_plateau"].get("largest")
    if big and big["share"] > 0.5 and t["off_plateau"]["without_largest"]["sd"] is not None:
        w = t["off_plateau"]["without_largest"]
        parts.append(f"{big['share']:.0%} of the first from one configuration ({describe(big['config'])}), "
                     f"without it {w['sd']:.2f} {_ci((w['lo'], w['hi']), '.2f')} (df {w['df']})")
    if tw["sd"] is not None:
        parts.append(f"twin pairs {tw['sd']:.2f} {_ci((tw['lo'], tw['hi']), '.2f')} (df {tw['df']})")
    if parts:
        click.echo("training noise, SD of the final test ppl between runs of one configuration: " + "; ".join(parts))


def _echo_replay(res: dict, n: int, seeds: int) -> None:
    S = res["table_seeds"]
    best = res["best"]
    which = ", ".join(map(str, res.get("training_seeds", [])))
    click.echo(f"table {res['table']}: {res['configs']} configurations, {S} training seed(s) ({which}); best in "
               f"expectation: "
               f"{describe(best['config'])}, mean test ppl {best['test_ppl']:.2f} (PTB-16%); n = {n}, {seeds} "
               f"replays per setting" + (f" and {seeds} on each training seed" if S >= 2 else ""))
    _echo_noise(res["noise"])
    _echo_plateau(res["off_plateau"])
    for sk in res["skipped_settings"]:
        click.echo(f"skipped e0 = {sk['e0']}, ei = {sk['ei']}: its last elimination (epoch {sk['last_elimination']}) "
                   f"is after the table's last epoch")
    if res["full_curve"]:
        click.echo("full training of the first k configurations (seeded grid order), mean regret: " +
                   ", ".join(f"{c['k']}: {c['regret_mean']:.1f}" for c in res["full_curve"]))
    curve = bool(res["full_curve"])
    click.echo(f"{'method':22s} {'hpo':5s} {'e0':>3s} {'ei':>3s} {'test ppl':>9s} {'regret':>7s} "
               f"{'[95%, replays]':>16s} {'[95%, seeds]':>16s} {'p_best':>7s} {'epochs':>7s}" +
               (f" {'full@same':>9s}" if curve else ""))
    for m in res["methods"]:
        same = m.get("full_epochs_same_regret")
        click.echo(f"{m['method']:22s} {m['hpo']:5s} {m['e0'] or '-':>3} {m['ei'] or '-':>3} "
                   f"{m['final_test_ppl_mean']:9.2f} {m['regret_mean']:7.2f} {_ci(m['regret_ci']):>16s} "
                   f"{_ci(m.get('regret_t_ci')):>16s} {m['p_best']:7.3f} {m['train_epochs_mean']:7.1f}" +
                   (f" {same if same is not None else '-':>9}" if curve else ""))
    click.echo("(regret: the picked configuration's mean test ppl over the training seeds minus the best one's; "
               "[95%, seeds]: a t-interval across the per-seed replays" +
               ("; full@same: the epochs full training of k configurations needs for the same mean regret)"
                if curve else ")"))
    first = next((m["method"] for m in res["methods"] if m["method"].startswith("lsh")), None)
    diffs = [d for d in res["differences"] if d["a"] == first and d["b"] == "loss"]
    if diffs:
        click.echo(f"{first} - loss, difference in regret on the same replays (< 0: {first} picks better):")
        for d in diffs:
            setting = f"e0 = {d['e0']}, ei = {d['ei']}"
            verdict = {"a picks better": f"{first} picks better", "b picks better": "loss picks better"}.get(
                d["verdict"], d["verdict"])
            click.echo(f"  {d['hpo']:5s} {setting:16s} {d['mean']:+.2f} {_ci(d['ci'])} over replays" +
                       (f", {_ci(d['t_ci'])} across {S} seeds ({_ci(d['t_ci_held_out'])} judged by the other "
                        f"seeds)" if d.get("t_ci") else "") + f": {verdict}")
    if S < 2:
        click.echo("one training seed: every interval covers the searches' randomness on this table only, not "
                   "training noise, so no difference is called")
    click.echo(res["rho"]["note"] + " (--json: rho per epoch and signal)")
