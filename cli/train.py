"""lshx train: one (sparse) language model on PTB-style data."""
from __future__ import annotations

import click

from lshx.cli.options import dst_options, dst_overrides, echo_json, resumable
from lshx.presets import PRESET_NAMES, TASKS


@click.command("train")
@click.argument("task", type=click.Choice(TASKS))
@click.option("--preset", type=click.Choice(PRESET_NAMES), default="small", show_default=True)
@click.option("--data", type=str, default=None, help="Folder with ptb.{train,valid,test}.txt [default: data/ptb].")
@click.option("--density", type=float, default=None, help="Fraction of masked weights kept (1 = dense).")
@click.option("--epochs", type=int, default=None, help="Training epochs [default: the preset's].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--lr", type=float, default=None, help="Learning rate [default: the preset's].")
@click.option("--max-batches", type=int, default=None, help="Cap on training windows per epoch.")
@click.option("--device", type=str, default="cpu", show_default=True, help="cpu or cuda[:N].")
@dst_options
@click.option("--clip-masked-grad", is_flag=True,
              help="Mask the gradient before clipping it (default: clip the dense gradient, as Selfish-RNN).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run folder for best.pt/last.pt [default: runs/TASK-PRESET-dD-sS].")
@click.option("--resume", is_flag=True, help="Continue from OUT/last.pt.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
def train_cmd(task, preset, data, density, epochs, seed, lr, max_batches, device, clip_masked_grad, out, resume,
              as_json, quiet, **dst):
    """Train one sparse LSTM/RHN language model with dynamic sparse training.

    Validation perplexity is printed after every epoch; the best-validation model is
    saved to OUT/best.pt and tested at the end. Example:

      lshx train ptb-lstm --preset small --density 0.33 --death SET --epochs 3
    """
    from lshx.train import TrainConfig, train

    over = dst_overrides(**dst)
    if density is not None:
        over["density"] = density
    cfg = TrainConfig.from_preset(task, preset, data=data, epochs=epochs, seed=seed, lr=lr,
                                  max_batches=max_batches, device=device, clip_masked_grad=clip_masked_grad, dst=over)
    out = out or f"runs/{task}-{preset}-d{cfg.dst.density:g}-s{seed}"
    resumable()
    res = train(cfg, out, resume=resume, quiet=quiet)
    if as_json:
        echo_json({k: res[k] for k in ("val_ppl", "test_ppl", "density", "checkpoint", "wall_s",
                                       "best_epoch", "diverged", "epoch_seconds")})
    else:
        click.echo(f"test ppl {res['test_ppl']:.2f}  (best val ppl {min(res['val_ppl']):.2f} at epoch "
                   f"{res['best_epoch']}; density {res['density']:.4f}; {res['wall_s']:.0f}s)  -> {res['checkpoint']}")
