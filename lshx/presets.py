"""Size presets: smoke (tests, CI), small (a laptop: make demo, the experiments), paper (GPU)."""
from __future__ import annotations

import copy

from lshx.errors import ConfigError

TASKS = ("ptb-lstm", "ptb-rhn")
PRESET_NAMES = ("smoke", "small", "paper")

_COMMON = {"clip": 0.25, "wdecay": 1.2e-6, "nonmono": 5, "eval_batch_size": 20,  # Selfish-RNN main.py
           "max_batches": None, "eval_max_batches": None}

PRESETS = {
    # a few thousand tokens, seconds
    ("ptb-lstm", "smoke"): {"model": {"arch": "lstm", "emb_size": 32, "hidden_size": 32, "num_layers": 2,
                                      "dropout": 0.1, "tie_weights": False},
                            "lr": 20.0, "batch_size": 10, "bptt": 20, "epochs": 2, "density": 0.33,
                            "max_batches": 20, "eval_max_batches": 10},
    ("ptb-rhn", "smoke"): {"model": {"arch": "rhn", "hidden_size": 32, "depth": 3, "dropout_output": 0.1,
                                     "dropout_hidden": 0.05, "dropout_input": 0.1, "dropout_words": 0.05},
                           "lr": 15.0, "batch_size": 10, "bptt": 20, "epochs": 2, "density": 0.472,
                           "max_batches": 20, "eval_max_batches": 10},
    # a full PTB-16% epoch: 432 windows of 10x35 tokens. Batch 10 (twice the steps per epoch
    # of batch 20) and dropout 0.2 let a 33%-dense model leave the unigram plateau within
    # 2-3 epochs (measured: README, "Presets").
    ("ptb-lstm", "small"): {"model": {"arch": "lstm", "emb_size": 200, "hidden_size": 200, "num_layers": 2,
                                      "dropout": 0.2, "tie_weights": False},
                            "lr": 20.0, "batch_size": 10, "bptt": 35, "epochs": 10, "density": 0.33},
    ("ptb-rhn", "small"): {"model": {"arch": "rhn", "hidden_size": 200, "depth": 5, "dropout_output": 0.2,
                                     "dropout_hidden": 0.1, "dropout_input": 0.2, "dropout_words": 0.05},
                           "lr": 15.0, "batch_size": 10, "bptt": 35, "epochs": 10, "density": 0.472},
    # Selfish-RNN's setups (DESIGN.md section 3)
    ("ptb-lstm", "paper"): {"model": {"arch": "lstm", "emb_size": 1500, "hidden_size": 1500, "num_layers": 2,
                                      "dropout": 0.65, "tie_weights": False},
                            "lr": 40.0, "batch_size": 20, "bptt": 35, "epochs": 100, "density": 0.33},
    ("ptb-rhn", "paper"): {"model": {"arch": "rhn", "hidden_size": 830, "depth": 10, "dropout_output": 0.65,
                                     "dropout_hidden": 0.25, "dropout_input": 0.65, "dropout_words": 0.2},
                           "lr": 15.0, "batch_size": 20, "bptt": 35, "epochs": 500, "density": 0.472},
}


def get_preset(task: str, preset: str) -> dict:
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; allowed: {', '.join(TASKS)}")
    if preset not in PRESET_NAMES:
        raise ConfigError(f"unknown preset {preset!r}; allowed: {', '.join(PRESET_NAMES)}")
    out = copy.deepcopy(_COMMON)
    out.update(copy.deepcopy(PRESETS[(task, preset)]))
    return out
