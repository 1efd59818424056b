"""SearchConfig: every option of a search, validated before anything is written, and the
search presets (model sizes come from lshx.presets)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import List, Optional

from lshx.errors import ConfigError
from lshx.search.hpo import HPOS
from lshx.search.schedule import DISTANCES, STRATEGIES, elimination_epochs
from lshx.train import MAX_SEED, TrainConfig

# spectra a table may record beside the default (state h, warm-up 'advance'): the full LSTM
# state, and the authors' aligned warm-up (B propagated through the warm-up steps)
LS_EXTRA = {"hc": {"state": "hc"}, "h-orth": {"warmup_mode": "orthonormalize"}}

# search sizes per preset (model sizes come from lshx.presets)
SEARCH_PRESETS = {
    # e0 >= 2: the DST settings act from the first topology update (end of epoch 1) on
    "smoke": {"n": 6, "e0": 2, "ei": 1, "final_epochs": 4, "ls_samples": 2, "ls_steps": 8, "ls_warmup": 2},
    "small": {"n": 8, "e0": 2, "ei": 1, "final_epochs": 4, "ls_samples": 2, "ls_steps": 35, "ls_warmup": 10,
              "max_batches": 80},
    "paper": {"n": 40, "e0": 3, "ei": 3, "final_epochs": 100, "ls_samples": 2, "ls_steps": 35, "ls_warmup": 10},
}


@dataclass
class SearchConfig:
    task: str = "ptb-lstm"
    preset: str = "small"
    hpo: str = "tpe"
    distance: str = "pca2"
    strategy: str = "lsh"
    n: int = 8
    e0: int = 1
    ei: int = 1
    final_epochs: int = 4
    final_k: int = 2
    density: Optional[float] = None  # default: the preset's
    seed: int = 0
    data: Optional[str] = None
    max_batches: Optional[int] = None
    ls_samples: int = 2
    ls_steps: int = 35
    ls_warmup: int = 10
    ls_k: Optional[int] = None
    device: str = "cpu"  # where every candidate trains and its spectrum is computed
    train_seed: Optional[int] = None  # the candidates' training seed (default: seed, which also seeds the HPO)
    ls_extra: Optional[List[str]] = None  # more spectra per epoch (LS_EXTRA), for tables
    # intra-op threads of every job (training, spectrum, test), on every executor: the results
    # depend on it (summation order), so it is part of the search, not of the shell it runs in
    threads: int = 1

    @classmethod
    def from_preset(cls, task: str, preset: str, **over) -> "SearchConfig":
        if preset not in SEARCH_PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; allowed: {', '.join(SEARCH_PRESETS)}")
        d = dict(SEARCH_PRESETS[preset])
        d.update({k: v for k, v in over.items() if v is not None})
        cfg = cls(task=task, preset=preset, **d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Every option, checked before anything is written (the data folder: check_inputs)."""
        if self.hpo not in HPOS:
            raise ConfigError(f"unknown hpo {self.hpo!r}; allowed: {', '.join(HPOS)}")
        if self.distance not in DISTANCES:
            raise ConfigError(f"unknown distance {self.distance!r}; allowed: {', '.join(DISTANCES)}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.strategy!r}; allowed: {', '.join(STRATEGIES)}")
        if self.n < 1 or self.e0 < 1 or self.ei < 1 or self.final_k < 1:
            raise ConfigError("n, e0, ei and final-k must be >= 1")
        if self.final_epochs < self.e0:
            raise ConfigError("final epochs must be >= e0")
        for opt, value, low in (("--threads", self.threads, 1), ("--max-batches", self.max_batches, 1),
                                ("--seed", self.seed, 0), ("train seed", self.train_seed, 0),
                                ("ls samples", self.ls_samples, 1), ("ls steps", self.ls_steps, 1),
                                ("ls warmup", self.ls_warmup, 0), ("ls k", self.ls_k, 1)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
                raise ConfigError(f"{opt} must be an integer >= {low}, got {value!r}")
        for opt, value in (("--seed", self.seed), ("train seed", self.train_seed)):
            if value is not None and value > MAX_SEED:
                raise ConfigError(f"{opt} must be at most {MAX_SEED}, got {value}")
        # the training settings of the dense model and of a candidate (the density, the preset)
        TrainConfig.from_preset(self.task, self.preset, data=self.data, epochs=self.final_epochs,
                                max_batches=self.max_batches, device=self.device, dst={"density": 1.0})
        if self.density is not None:
            if isinstance(self.density, bool) or not isinstance(self.density, (int, float)):
                raise ConfigError(f"density must be a number in (0, 1], got {self.density!r}")
            TrainConfig.from_preset(self.task, self.preset, dst={"density": self.density})
        if self.strategy == "lsh" and self.n > self.final_k:
            last = elimination_epochs(self.n, self.e0, self.ei, self.final_k)[-1]
            if last > self.final_epochs:
                raise ConfigError(f"the schedule eliminates until epoch {last} (n={self.n}, e0={self.e0}, "
                                  f"ei={self.ei}) but --final-epochs is {self.final_epochs}: raise --final-epochs "
                                  f"to >= {last}, or lower n, e0 or ei")
        bad = set(self.ls_extra or ()) - set(LS_EXTRA)
        if bad:
            raise ConfigError(f"unknown extra spectrum {', '.join(sorted(bad))}; allowed: {', '.join(LS_EXTRA)}")
        if self.task == "ptb-rhn" and any(LS_EXTRA[x].get("state", "h") != "h" for x in self.ls_extra or ()):
            raise ConfigError("the RHN has a single state vector: no hc spectrum for ptb-rhn")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"device {self.device!r}: expected cpu or cuda[:N]")
        if self.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise ConfigError(f"device {self.device!r} asked for, but torch sees no CUDA device")

    def check_inputs(self) -> None:
        """validate() and the data: the folder holds the three splits, readable, each long
        enough for its batch size (and the validation split for the LS windows). The corpus
        stays cached for the jobs of this process."""
        self.validate()
        from lshx.data import batchify
        from lshx.search.jobs import corpus as load

        corpus = load(self.data)
        t = TrainConfig.from_preset(self.task, self.preset)
        for split, batch in (("train", t.batch_size), ("valid", t.eval_batch_size), ("test", t.eval_batch_size)):
            batchify(getattr(corpus, split), batch)
        if self.distance != "loss" and self.ls_samples * (self.ls_warmup + self.ls_steps) > corpus.valid.numel():
            raise ConfigError(f"{self.ls_samples} LS windows of {self.ls_warmup + self.ls_steps} tokens need more "
                              f"than the {corpus.valid.numel()} tokens of the validation split")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_stored(cls, stored: dict) -> "SearchConfig":
        """The options a run DB stored for a search; fields added since (like device) take their
        defaults, fields since removed are dropped."""
        return cls(**{k: v for k, v in stored.items() if k in cls.__dataclass_fields__})

    def same_search(self, stored: dict) -> bool:
        """Whether options stored in a run DB describe this search."""
        return SearchConfig.from_stored(stored).to_dict() == self.to_dict()
