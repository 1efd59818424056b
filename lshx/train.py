"""Training of one (sparse) language model: SGD with clipping, SNT-ASGD switch, DST, checkpoints.

Trainer is epoch-granular so that the search can train a candidate a few epochs, look at it,
and go on later from its checkpoint.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import List, Optional

import torch
import torch.nn.functional as F

import lshx
from lshx.checkpoint import load_checkpoint, save_atomic
from lshx.data import Corpus, Vocab, batchify, bptt_windows, load_corpus, num_windows
from lshx.errors import ConfigError
from lshx.models import MaskedLM, build_model, detach_state
from lshx.optim import SparseASGD
from lshx.paths import writable_dir
from lshx.presets import get_preset
from lshx.progress import Progress, log
from lshx.sparse.config import DSTConfig
from lshx.sparse.masking import Masking

# seeds are stored in SQLite (int64) and seed numpy and torch: 32 bits is what all of them take
MAX_SEED = 2 ** 32 - 1
DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")
# batches between divergence checks (and progress updates) in a training epoch: each check
# reads the running loss back from the device
CHECK_EVERY = 25


@dataclass
class TrainConfig:
    task: str = "ptb-lstm"
    preset: str = "small"
    model: dict = field(default_factory=dict)
    data: Optional[str] = None
    epochs: int = 10
    seed: int = 0
    lr: float = 20.0
    clip: float = 0.25
    # False (Selfish-RNN's order): clip the dense gradient, then step and re-mask; True: mask
    # the gradient first, so the clip norm is that of the update applied to the active weights
    clip_masked_grad: bool = False
    wdecay: float = 1.2e-6
    nonmono: int = 5
    batch_size: int = 20
    bptt: int = 35
    eval_batch_size: int = 20
    max_batches: Optional[int] = None  # cap on training windows per epoch (smoke preset)
    eval_max_batches: Optional[int] = None
    asgd: bool = True  # allow the switch to SNT-ASGD
    device: str = "cpu"
    dst: DSTConfig = field(default_factory=DSTConfig)

    def __post_init__(self) -> None:
        """Every number and the device checked here, so that a bad option is one ConfigError
        before anything is built or written (torch would raise its own errors later)."""
        for name, low in (("epochs", 1), ("batch_size", 1), ("bptt", 1), ("eval_batch_size", 1), ("nonmono", 0),
                          ("max_batches", 1), ("eval_max_batches", 1), ("seed", 0)):
            v = getattr(self, name)
            if v is None and name in ("max_batches", "eval_max_batches"):
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(f"{name.replace('_', ' ')} must be an integer >= {low}, got {v!r}")
        if self.seed > MAX_SEED:
            raise ConfigError(f"seed must be at most {MAX_SEED}, got {self.seed}")
        for name, positive in (("lr", True), ("clip", False), ("wdecay", False)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or \
                    (positive and v == 0):
                raise ConfigError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {v!r}")
        if not isinstance(self.device, str) or not DEVICE.match(self.device):
            raise ConfigError(f"device {self.device!r}: expected cpu or cuda[:N]")

    @classmethod
    def from_preset(cls, task: str, preset: str, **overrides) -> "TrainConfig":
        p = get_preset(task, preset)
        density = p.pop("density")
        dst_over = overrides.pop("dst", None) or {}
        dst = DSTConfig.from_dict({"density": density, **dst_over})
        known = {f.name for f in fields(cls)}
        p.update({k: v for k, v in overrides.items() if v is not None})
        bad = set(p) - known
        if bad:
            raise ConfigError(f"unknown training option(s): {', '.join(sorted(bad))}")
        if p.get("epochs", 1) < 1:
            raise ConfigError("epochs must be >= 1")
        return cls(task=task, preset=preset, dst=dst, **p)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dst"] = self.dst.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        d["dst"] = DSTConfig.from_dict(d.get("dst", {}))
        return cls(**d)


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else float("inf")


class Trainer:
    def __init__(self, cfg: TrainConfig, corpus: Optional[Corpus] = None, quiet: bool = False,
                 progress: Optional[bool] = None) -> None:
        self.cfg, self.quiet, self.show_progress = cfg, quiet, progress
        torch.manual_seed(cfg.seed)
        self.corpus = corpus or load_corpus(cfg.data)
        if cfg.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device {cfg.device!r} asked for, but torch sees no CUDA device")
        self.model: MaskedLM = build_model({**cfg.model, "vocab_size": len(self.corpus.vocab)}).to(cfg.device)
        self.train_data = batchify(self.corpus.train, cfg.batch_size).to(cfg.device)
        self.val_data = batchify(self.corpus.valid, cfg.eval_batch_size).to(cfg.device)
        self.test_data = batchify(self.corpus.test, cfg.eval_batch_size).to(cfg.device)
        self.masking = Masking(self.model, cfg.dst, total_steps=self._planned_steps(), seed=cfg.seed) \
            if cfg.dst.sparse else None
        self.optimizer: torch.optim.Optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr,
                                                                weight_decay=cfg.wdecay)
        self.asgd_active = False
        self.epoch = 0
        self.val_losses: List[float] = []
        self.best_val = float("inf")
        self.best_epoch = 0
        self.diverged = False
        self.epoch_seconds: List[float] = []

    def _planned_steps(self) -> int:
        """Optimizer steps of the planned epochs: the death-rate cosine runs over them."""
        c = self.cfg
        return max(1, c.epochs * num_windows(self.train_data, c.bptt, c.max_batches))

    # ---------------------------------------------------------------- epochs
    def train_epoch(self) -> float:
        """One pass over the training windows. The step reads nothing back from the device: the
        loss is summed there (float64, as Python's sum was) and checked for divergence every
        CHECK_EVERY batches and at the end, so on a GPU no batch waits for the host. A loss
        that went non-finite in between has made the weights non-finite too: the epoch is
        diverged either way (NaN), as when it stopped at that batch."""
        c, model = self.cfg, self.model
        model.train()
        state = model.init_state(c.batch_size)
        total = torch.zeros((), dtype=torch.float64, device=self.train_data.device)
        count = 0
        bar = Progress(num_windows(self.train_data, c.bptt, c.max_batches), f"epoch {self.epoch + 1}",
                       enabled=None if self.show_progress is None else self.show_progress)
        for b, (x, y) in enumerate(bptt_windows(self.train_data, c.bptt, c.max_batches), start=1):
            state = detach_state(state)
            self.optimizer.zero_grad(set_to_none=True)
            logits, state = model(x, state)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
            total += loss.detach().double() * y.numel()
            count += y.numel()
            if b % CHECK_EVERY == 0:  # (one host sync per CHECK_EVERY batches)
                mean = float(total) / count
                if not math.isfinite(mean):
                    return self._diverged(bar)
                bar.update(CHECK_EVERY, loss=mean)
            loss.backward()
            if self.masking is not None and c.clip_masked_grad:
                self.masking.mask_grads()
            # by default the dense gradient is clipped, as Selfish-RNN does; masking.step masks it after
            torch.nn.utils.clip_grad_norm_(model.parameters(), c.clip)
            if self.masking is not None:
                # a topology update reads the weights: never on diverged ones (one sync, only then)
                if self.masking.update_due() and not math.isfinite(float(total)):
                    return self._diverged(bar)
                self.masking.step(self.optimizer)
            else:
                self.optimizer.step()
        mean = float(total) / max(count, 1)
        if not math.isfinite(mean):
            return self._diverged(bar)
        bar.close()
        return mean

    def _diverged(self, bar) -> float:
        self.diverged = True
        bar.close()
        return float("nan")

    @torch.no_grad()
    def evaluate(self, split: str = "valid") -> float:
        data = self.val_data if split == "valid" else self.test_data
        c, model = self.cfg, self.model
        model.eval()
        state = model.init_state(c.eval_batch_size)
        total, count = 0.0, 0
        for x, y in bptt_windows(data, c.bptt, c.eval_max_batches):
            logits, state = model(x, state)
            total += F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum").item()
            count += y.numel()
        return total / max(count, 1)

    def evaluate_averaged(self, split: str = "valid") -> float:
        if self.asgd_active:
            with self.optimizer.averaged():
                return self.evaluate(split)
        return self.evaluate(split)

    def run_epoch(self, best_path: Optional[Path] = None, after_validation=None) -> dict:
        """Trains one epoch, validates, updates the topology, maybe switches to SNT-ASGD.

        after_validation(trainer) runs on the model as validated (averaged weights under
        SNT-ASGD), before the topology update: the search computes its spectrum there.
        """
        t0 = time.perf_counter()
        train_loss = self.train_epoch()
        self.epoch += 1
        if self.diverged:
            self.val_losses.append(float("nan"))
            self.epoch_seconds.append(time.perf_counter() - t0)
            return {"epoch": self.epoch, "train_loss": train_loss, "val_loss": float("nan"),
                    "val_ppl": float("nan"), "diverged": True}
        # Validate (and keep the best) the model as trained, then update its topology:
        # the newly grown weights start at 0 and are only useful after more training.
        val_loss = self.evaluate_averaged("valid")
        if not math.isfinite(val_loss):
            self.diverged = True
        # SNT-ASGD trigger as Selfish-RNN's main.py: this epoch's loss against the best of the
        # earlier ones but the last nonmono, read before appending this one
        n = self.cfg.nonmono
        switch = (self.cfg.asgd and not self.asgd_active and not self.diverged and len(self.val_losses) > n
                  and val_loss > min(self.val_losses[:-n]))
        self.val_losses.append(val_loss)
        if val_loss < self.best_val:
            self.best_val, self.best_epoch = val_loss, self.epoch
            if best_path is not None:
                self.save(best_path, averaged=True)
        if after_validation is not None and not self.diverged:
            if self.asgd_active:
                with self.optimizer.averaged():
                    after_validation(self)
            else:
                after_validation(self)
        topo = None
        # no topology update in the epoch that switches to SNT-ASGD (Selfish-RNN's main.py)
        if (self.masking is not None and not self.cfg.dst.update_every and self.epoch < self.cfg.epochs
                and not switch and not self.diverged):
            topo = self.masking.update_topology(self.optimizer)
        if switch:
            self._switch_to_asgd()
        self.epoch_seconds.append(time.perf_counter() - t0)
        return {"epoch": self.epoch, "train_loss": train_loss, "val_loss": val_loss,
                "val_ppl": perplexity(val_loss), "topology": topo, "asgd": self.asgd_active,
                "seconds": self.epoch_seconds[-1], "diverged": self.diverged}

    def _switch_to_asgd(self) -> None:
        log(f"epoch {self.epoch}: switching to SNT-ASGD", self.quiet)
        self.optimizer = SparseASGD(self.model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.wdecay)
        self.asgd_active = True

    # ---------------------------------------------------------------- checkpoints
    def checkpoint(self, averaged: bool = False) -> dict:
        if averaged and self.asgd_active:
            with self.optimizer.averaged():
                state_dict = {k: v.clone() for k, v in self.model.state_dict().items()}
        else:
            state_dict = {k: v.clone() for k, v in self.model.state_dict().items()}
        return {
            "model_args": self.model.model_args,
            "state_dict": state_dict,
            "masks": {n: m.clone() for n, m in self.model.masks.items()},
            "config": self.cfg.to_dict(),
            "epoch": self.epoch,
            "val_ppl": [perplexity(v) for v in self.val_losses],
            "vocab": list(self.corpus.vocab.words),
            "lshx_version": lshx.__version__,
            # what --resume needs on top
            "optimizer": {"kind": "asgd" if self.asgd_active else "sgd", "state": self.optimizer.state_dict()},
            "masking": self.masking.state_dict() if self.masking is not None else None,
            "history": {"val_losses": self.val_losses, "best_val": self.best_val, "best_epoch": self.best_epoch,
                        "epoch_seconds": self.epoch_seconds, "diverged": self.diverged},
            "rng": torch.get_rng_state(),
            # dropout on CUDA draws from the device's generator: without it a resumed or
            # re-split run (catch-up, ei chunks) would differ from an uninterrupted one
            "cuda_rng": torch.cuda.get_rng_state(self._cuda_index()) if self._cuda_index() is not None else None,
        }

    def save(self, path: Path, averaged: bool = False, extra: Optional[dict] = None) -> Path:
        return save_atomic({**self.checkpoint(averaged), **(extra or {})}, path)

    def restore(self, ckpt: dict) -> None:
        """Continues from a checkpoint written by save() (the 'last' one)."""
        vocab = Vocab(list(ckpt["vocab"]))
        if vocab.words != self.corpus.vocab.words:
            raise ConfigError("the checkpoint's vocabulary differs from this data's: resume with the same --data")
        self.model.load_state_dict(ckpt["state_dict"])
        if self.masking is not None and ckpt.get("masking"):
            self.masking.load_state_dict(ckpt["masking"], ckpt["masks"])
        else:
            self.model.set_masks(ckpt["masks"])
        opt = ckpt.get("optimizer") or {"kind": "sgd", "state": None}
        if opt["kind"] == "asgd":
            self.optimizer = SparseASGD(self.model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.wdecay)
            self.asgd_active = True
        if opt.get("state"):
            self.optimizer.load_state_dict(opt["state"])
        h = ckpt.get("history", {})
        self.val_losses = list(h.get("val_losses", []))
        self.best_val = float(h.get("best_val", float("inf")))
        self.best_epoch = int(h.get("best_epoch", 0))
        self.epoch_seconds = list(h.get("epoch_seconds", []))
        self.diverged = bool(h.get("diverged", False))
        self.epoch = int(ckpt["epoch"])
        if "rng" in ckpt:
            torch.set_rng_state(ckpt["rng"])
        if ckpt.get("cuda_rng") is not None and self._cuda_index() is not None:
            torch.cuda.set_rng_state(ckpt["cuda_rng"], self._cuda_index())

    def _cuda_index(self) -> Optional[int]:
        """The CUDA device the model trains on, or None on the CPU."""
        dev = torch.device(self.cfg.device)
        if dev.type != "cuda":
            return None
        return dev.index if dev.index is not None else torch.cuda.current_device()


def load_model(path) -> tuple:
    """(model in eval mode with its masks, checkpoint dict) from an lshx checkpoint."""
    ckpt = load_checkpoint(path)
    model = build_model(ckpt["model_args"])
    model.load_state_dict(ckpt["state_dict"])
    model.set_masks(ckpt["masks"])
    model.eval()
    return model, ckpt


def train(cfg: TrainConfig, out_dir: str | Path, resume: bool = False, quiet: bool = False,
          progress: Optional[bool] = None) -> dict:
    """Trains cfg.epochs epochs (continuing from out_dir/last.pt with resume) and tests the best."""
    out = writable_dir(out_dir, "the run folder")  # before any epoch is spent
    last, best = out / "last.pt", out / "best.pt"
    t0 = time.perf_counter()
    trainer = Trainer(cfg, quiet=quiet, progress=progress)
    oov = trainer.corpus.oov
    log(f"vocab {len(trainer.corpus.vocab)} words; out-of-vocabulary tokens mapped to <unk>: "
        f"valid {oov['valid']}, test {oov['test']}", quiet)
    if resume and last.exists():
        ckpt = load_checkpoint(last)
        saved = TrainConfig.from_dict(ckpt["config"])
        if {**saved.to_dict(), "epochs": 0} != {**cfg.to_dict(), "epochs": 0}:
            raise ConfigError(f"{last} was written with another configuration; resume with the same options")
        trainer.restore(ckpt)
        log(f"resumed from {last} at epoch {trainer.epoch}", quiet)
    while trainer.epoch < cfg.epochs and not trainer.diverged:
        r = trainer.run_epoch(best_path=best)
        trainer.save(last)
        log(f"epoch {r['epoch']:3d}  val ppl {r['val_ppl']:.2f}" + ("  (SNT-ASGD)" if r.get("asgd") else ""), quiet)
    test_ppl = float("nan")
    if best.exists():
        model, ckpt = load_model(best)
        trainer.model.load_state_dict(ckpt["state_dict"])
        trainer.model.set_masks(ckpt["masks"])
        test_ppl = perplexity(trainer.evaluate("test"))
    masks = trainer.model.masks
    params = dict(trainer.model.named_parameters())
    names = trainer.model.maskable_names()
    density = (sum(int(masks[n].sum()) for n in names) if masks else sum(params[n].numel() for n in names)) / \
        sum(params[n].numel() for n in names)
    return {"val_ppl": [perplexity(v) for v in trainer.val_losses], "test_ppl": test_ppl, "density": density,
            "checkpoint": str(best), "best_epoch": trainer.best_epoch, "diverged": trainer.diverged,
            "epoch_seconds": trainer.epoch_seconds, "wall_s": time.perf_counter() - t0}
