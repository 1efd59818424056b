"""Hyperpruning a GRU language model on PTB-16% with lshx inside an Optuna study.

The model is the user's own (an nn.Embedding, an nn.GRU, an nn.Linear); lshx brings three
pieces to it:
- DST on any model: lshx.sparse.any_model.sparsify masks its weight matrices (biases never)
  and keeps the masks exact through training and topology updates;
- the Lyapunov spectrum of the nn.GRU after every epoch: lshx.lyapunov_spectrum;
- LSH's elimination as the study's pruner: lshx.integrations.optuna.LSHPruner compares each
  trial's spectra with the dense reference's trajectory (pca2) at epochs e0, e0 + ei, ...
  and prunes the farthest half; TPE fills every freed slot with a new trial (insertion).

The dense reference trains first (its spectrum after every epoch is the reference
trajectory), then two studies search the DST controls (Selfish-RNN's, as `lshx search`):
sparse init, death mode, redistribution, death rate, with the same TPE seed and the same
training seeds, one pruned by LSHPruner (the LS distance) and one by Optuna's MedianPruner
(the validation perplexity), so that you see what the LS signal buys on your problem.
Perplexities are PTB-16%'s, not comparable with published full-PTB numbers. The numbers
depend on the torch thread count (summation order): one thread unless --threads says more.

    python examples/optuna_gru.py --smoke          # about a minute on 2 CPU cores
    python examples/optuna_gru.py --storage sqlite:///runs/optuna_gru.sqlite   # resumable

Prints one JSON line: per pruner the best validation perplexity, its parameters, trial
counts and training epochs spent; the dense model's; the thread count.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import optuna
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import lshx  # noqa: E402
from lshx.data import batchify, bptt_windows, load_corpus, num_windows  # noqa: E402
from lshx.integrations.optuna import LSHPruner, report_spectrum  # noqa: E402
from lshx.search.space import CATEGORICAL, DEATH_RATE_RANGE  # noqa: E402
from lshx.sparse.any_model import sparsify  # noqa: E402
from lshx.sparse.config import DSTConfig  # noqa: E402

SETTINGS = {
    # seconds on 2 cores: 6 trials of 3 epochs of 12 batches, spectra of 2 x 10 steps
    "smoke": dict(emb=32, hidden=32, layers=1, dropout=0.1, lr=20.0, batch=20, bptt=20, max_batches=12,
                  eval_batches=4, epochs=3, trials=6, e0=1, ei=1, density=0.33, ls_samples=2, ls_steps=10,
                  ls_warmup=2),
    # PTB-16% whole epochs: about a minute an epoch on 2 cores
    "full": dict(emb=200, hidden=200, layers=2, dropout=0.3, lr=20.0, batch=20, bptt=35, max_batches=None,
                 eval_batches=None, epochs=8, trials=16, e0=2, ei=2, density=0.33, ls_samples=2, ls_steps=35,
                 ls_warmup=10),
}


class GRULM(nn.Module):
    def __init__(self, vocab: int, emb: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.encoder = nn.Embedding(vocab, emb)
        self.drop = nn.Dropout(dropout)
        self.rnn = nn.GRU(emb, hidden, layers, dropout=dropout if layers > 1 else 0.0)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, x, h=None):
        y, h = self.rnn(self.drop(self.encoder(x)), h)
        return self.decoder(self.drop(y)), h


class Run:
    """Trains one model (dense, or sparse with a DST config) epoch by epoch."""

    def __init__(self, s: dict, corpus, dst: DSTConfig | None, seed: int) -> None:
        torch.manual_seed(seed)
        self.s = s
        self.model = GRULM(len(corpus.vocab), s["emb"], s["hidden"], s["layers"], s["dropout"])
        self.train_data = batchify(corpus.train, s["batch"])
        self.val_data = batchify(corpus.valid, 10)
        # the spectrum's inputs: the first K validation windows (warm-up + counted steps)
        n = s["ls_warmup"] + s["ls_steps"]
        self.ls_tokens = corpus.valid[: s["ls_samples"] * n].view(s["ls_samples"], n).t()  # (T, K)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=s["lr"])
        steps = s["epochs"] * num_windows(self.train_data, s["bptt"], s["max_batches"])
        self.masking = sparsify(self.model, dst, total_steps=steps, seed=seed, mask_init="random") \
            if dst is not None else None
        self.epoch = 0

    def train_epoch(self) -> None:
        self.model.train()
        h = None
        for x, y in bptt_windows(self.train_data, self.s["bptt"], self.s["max_batches"]):
            h = None if h is None else h.detach()
            self.opt.zero_grad()
            logits, h = self.model(x, h)
            F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1)).backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 0.25)
            if self.masking is not None:
                self.masking.step(self.opt)  # masks the gradients, steps, re-masks weights and buffers
            else:
                self.opt.step()
        self.epoch += 1
        if self.masking is not None and self.epoch < self.s["epochs"]:
            self.masking.update_topology(self.opt)  # prune and regrow once per epoch

    @torch.no_grad()
    def val_ppl(self) -> float:
        self.model.eval()
        h, total, count = None, 0.0, 0
        for x, y in bptt_windows(self.val_data, self.s["bptt"], self.s["eval_batches"]):
            logits, h = self.model(x, h)
            total += F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum").item()
            count += y.numel()
        loss = total / count
        return math.exp(loss) if loss < 700 else math.inf

    @torch.no_grad()
    def spectrum(self) -> torch.Tensor:
        self.model.eval()
        inputs = self.model.encoder(self.ls_tokens)  # (T, K, emb): nn.GRU's own layout
        return lshx.lyapunov_spectrum(self.model.rnn, inputs, warmup=self.s["ls_warmup"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="a tiny study that finishes in under a minute")
    p.add_argument("--trials", type=int, help="trials in the study (default: the setting's)")
    p.add_argument("--epochs", type=int, help="epochs per trial (default: the setting's)")
    p.add_argument("--distance", choices=("pca2", "raw"), default="pca2")
    p.add_argument("--data", default=None, help="a folder with ptb.{train,valid,test}.txt (default: data/ptb)")
    p.add_argument("--storage", default=None, help="an Optuna storage URL (sqlite:///file.sqlite): resumable")
    p.add_argument("--study-name", default="lshx-gru")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the numbers depend on it)")
    p.add_argument("--pruners", default="lsh,median", help="comma-separated: lsh, median")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    torch.set_num_threads(a.threads)
    s = dict(SETTINGS["smoke" if a.smoke else "full"])
    s.update({k: v for k, v in (("trials", a.trials), ("epochs", a.epochs)) if v is not None})
    corpus = load_corpus(a.data)

    dense = Run(s, corpus, None, a.seed)  # the reference trajectory
    reference = {}
    for epoch in range(1, s["epochs"] + 1):
        dense.train_epoch()
        reference[epoch] = dense.spectrum()
    dense_ppl = dense.val_ppl()

    def objective(trial: optuna.Trial) -> float:
        cfg = DSTConfig(density=s["density"], death_rate=trial.suggest_float("death_rate", *DEATH_RATE_RANGE),
                        **{k: trial.suggest_categorical(k, list(v)) for k, v in CATEGORICAL.items()})
        run = Run(s, corpus, cfg, a.seed + 1 + trial.number)
        best = math.inf
        for epoch in range(1, s["epochs"] + 1):
            run.train_epoch()
            trial.set_user_attr("epochs", epoch)
            best = min(best, run.val_ppl())
            trial.report(best, epoch)  # the learning curve: MedianPruner decides on it
            report_spectrum(trial, run.spectrum(), epoch)  # the spectrum: LSHPruner decides on it
            if trial.should_prune():
                raise optuna.TrialPruned()
        return best

    pruners = {
        "lsh": lambda: LSHPruner(s["e0"], s["ei"], a.distance, reference=reference, max_epochs=s["epochs"]),
        # the same rungs: from epoch e0 every ei epochs, after two trials have finished
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=s["e0"] - 1,
                                                      interval_steps=s["ei"]),
    }
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = {}
    for name in [x.strip() for x in a.pruners.split(",") if x.strip()]:
        if name not in pruners:
            p.error(f"unknown pruner {name!r}; allowed: {', '.join(pruners)}")
        sampler = optuna.samplers.TPESampler(seed=a.seed, n_startup_trials=min(4, s["trials"]))
        study = optuna.create_study(study_name=f"{a.study_name}-{name}", storage=a.storage, load_if_exists=True,
                                    sampler=sampler, pruner=pruners[name]())
        done = len([t for t in study.trials if t.state.is_finished()])
        study.optimize(objective, n_trials=max(0, s["trials"] - done))
        states = [t.state for t in study.trials]
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        out[name] = {"best_value": study.best_value if complete else None,
                     "best_params": study.best_params if complete else None,
                     "pruned": states.count(optuna.trial.TrialState.PRUNED), "complete": len(complete),
                     "trials": len(states), "epochs": sum(t.user_attrs.get("epochs", 0) for t in study.trials)}
    out.update({"dense_val_ppl": dense_ppl, "data": "PTB-16%" if a.data is None else a.data,
                "threads": torch.get_num_threads(), "wall_s": round(time.perf_counter() - t0, 1)})
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
