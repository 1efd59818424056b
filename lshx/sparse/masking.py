"""The DST engine: owns the masks of a MaskedLM, keeps weights and optimizer state exactly zero
outside them (and the gradients, for an optimizer that is not elementwise), and updates the
topology (death, redistribution, growth)."""
from __future__ import annotations

import math
from typing import Dict, Optional

import torch

from lshx.errors import ConfigError
from lshx.models.base import MaskedLM
from lshx.ops import mask_as
from lshx.optim import SparseASGD
from lshx.sparse import death as D
from lshx.sparse.config import DSTConfig
from lshx.sparse.densities import allocate, largest_mask, layer_counts, random_mask
from lshx.sparse.growth import GROWTH, GrowthContext

THRESHOLD_TOLERANCE = 0.02  # threshold death: adapt until the removals are within 2% of rate * nnz


MASK_INITS = ("random", "magnitude")

# Optimizers whose update of an element reads only that element's gradient, weight and state:
# the gradients off the masks change nothing on the masks (weights and buffers are re-masked
# after the step), so step() does not mask them first (tests/test_sparse.py checks the
# weights and buffers bit for bit). Exactly these classes: a subclass may do otherwise.
ELEMENTWISE = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.ASGD, torch.optim.Adagrad,
               torch.optim.RMSprop, SparseASGD)


class Masking:
    """total_steps: the optimizer steps the training plans (epochs x batches per epoch); the
    death rate follows a cosine over them, read at the step of each update (Selfish-RNN steps
    its cosine once per batch, so the update after epoch e of E uses cos(pi e / E)); None: the
    death rate stays cfg.death_rate. mask_init: within each tensor, the initial mask keeps
    random positions (a fresh model) or the largest magnitudes (trained weights).
    require_steps: update_topology() before any step() is an error (the library's sparsify;
    lshx's own trainer and tests drive the engine directly)."""

    def __init__(self, model: MaskedLM, cfg: DSTConfig, total_steps: Optional[int], seed: int = 0,
                 mask_init: str = "random", require_steps: bool = False) -> None:
        if mask_init not in MASK_INITS:
            raise ConfigError(f"unknown mask_init {mask_init!r}; allowed: {', '.join(MASK_INITS)}")
        if total_steps is not None and (isinstance(total_steps, bool) or not isinstance(total_steps, int)
                                        or total_steps < 1):
            raise ConfigError(f"total_steps must be an integer >= 1 (epochs x batches), or None for a constant "
                              f"death rate; got {total_steps!r}")
        self.model, self.cfg = model, cfg
        self.total_steps = total_steps
        self.require_steps = require_steps
        self.updates_done = 0
        self.steps = 0
        self.seed = seed
        # threshold death: the current threshold, adapted to the death rate at every update
        # (doubled when too few die, halved when too many: Selfish-RNN's rule); checkpointed
        self.threshold = float(cfg.threshold)
        self.params: Dict[str, torch.nn.Parameter] = dict(model.named_parameters())
        self.names = model.maskable_names()
        gen = torch.Generator().manual_seed(seed)
        counts = layer_counts({n: tuple(self.params[n].shape) for n in self.names}, cfg.density, cfg.init)
        if mask_init == "magnitude":
            masks = {n: largest_mask(self.params[n].detach(), counts[n]) for n in self.names}
        else:
            masks = {n: random_mask(self.params[n].shape, counts[n], gen) for n in self.names}
        model.set_masks(masks)
        model.apply_masks_()

    # ------------------------------------------------------------------ bookkeeping
    @property
    def masks(self) -> Dict[str, torch.Tensor]:
        return self.model.masks

    def nonzeros(self) -> Dict[str, int]:
        return {n: int(m.sum()) for n, m in self.masks.items()}

    def density(self) -> float:
        return sum(self.nonzeros().values()) / sum(self.params[n].numel() for n in self.names)

    def death_rate(self) -> float:
        """Cosine decay from death_rate to death_rate_final over the planned optimizer steps,
        at the steps done so far (after epoch e of E with one update per epoch: cos(pi e / E));
        the constant death_rate when no total was planned."""
        c = self.cfg
        if self.total_steps is None:
            return c.death_rate
        frac = min(self.steps / self.total_steps, 1.0)
        return c.death_rate_final + 0.5 * (c.death_rate - c.death_rate_final) * (1 + math.cos(math.pi * frac))

    def state_dict(self) -> dict:
        return {"updates_done": self.updates_done, "steps": self.steps, "total_steps": self.total_steps,
                "seed": self.seed, "threshold": self.threshold}

    def load_state_dict(self, state: dict, masks: Dict[str, torch.Tensor]) -> None:
        self.updates_done, self.steps = int(state["updates_done"]), int(state["steps"])
        total = state.get("total_steps", self.total_steps)
        self.total_steps = None if total is None else int(total)
        self.seed = int(state["seed"])
        self.threshold = float(state.get("threshold", self.cfg.threshold))
        self.model.set_masks(masks)

    # ------------------------------------------------------------------ per step
    def sync(self) -> None:
        """Looks the parameters up by name again (a conversion may replace them:
        torch.__future__.set_overwrite_module_params_on_conversion) and lets the model bring
        its masks to the weights' device (ModuleMasks.sync; MaskedLM moves them in _apply)."""
        self.params = dict(self.model.named_parameters())
        sync = getattr(self.model, "sync", None)
        if sync is not None:
            sync()

    def mask_grads(self) -> None:
        """Zeros the gradients outside the masks. step() calls it after the trainer has clipped
        the dense gradient (Selfish-RNN's order); TrainConfig.clip_masked_grad calls it before
        clipping too, so the clip norm is that of the update applied."""
        self.sync()
        grads = [(self.params[n].grad, m) for n, m in self.masks.items() if self.params[n].grad is not None]
        with torch.no_grad():  # one launch for every gradient (per device and dtype)
            if grads:
                torch._foreach_mul_([g for g, _ in grads], [mask_as(m, g.dtype) for g, m in grads])

    def step(self, optimizer: torch.optim.Optimizer, closure=None, scaler=None) -> bool:
        """Masks the gradients, steps the optimizer, re-masks the weights. Returns True when
        the step count triggered a topology update (update_every > 0). The active weights get
        the step Selfish-RNN's gives them (it steps every weight, then re-masks); the gradients are
        masked first (weight decay and every buffer then stay zero outside the masks within the
        step too) unless the optimizer is one of ELEMENTWISE, where that changes nothing.

        closure: an optimizer that re-evaluates the loss (LBFGS) gets it with the gradients
        masked after every evaluation. scaler: a torch.amp.GradScaler, whose step() unscales
        the gradients (and skips a step with inf/NaN) instead of optimizer.step(); call
        scaler.update() after, as usual. Same as before_step(); the step; after_step()."""
        if closure is not None and scaler is not None:
            raise ConfigError("give a closure or a GradScaler, not both (GradScaler does not step closures)")
        if closure is not None or scaler is not None or type(optimizer) not in ELEMENTWISE:
            self.before_step()
        else:
            self.sync()  # (what mask_grads does first: the masks on the weights' device)
        if scaler is not None:
            scaler.step(optimizer)
        elif closure is not None:
            def masked_closure():
                with torch.enable_grad():
                    loss = closure()
                self.mask_grads()
                return loss

            optimizer.step(masked_closure)
        else:
            optimizer.step()
        return self.after_step(optimizer)

    def before_step(self) -> None:
        """What step() does before the optimizer steps: masks the gradients. For a training
        loop that steps the optimizer itself (e.g. through accelerate or Lightning)."""
        self.mask_grads()

    def update_due(self) -> bool:
        """Whether the next after_step updates the topology (update_every says so)."""
        return bool(self.cfg.update_every) and (self.steps + 1) % self.cfg.update_every == 0

    def after_step(self, optimizer: torch.optim.Optimizer) -> bool:
        """What step() does after the optimizer stepped: re-masks the weights and every
        per-element optimizer buffer, counts the step and updates the topology when
        update_every says so (returns True then)."""
        self.model.apply_masks_()
        if optimizer.state:  # averages, step counts, momenta: nothing lives outside the mask
            bufs = [(buf, m) for n, m in self.masks.items() for buf in optimizer.state.get(self.params[n], {}).values()
                    if torch.is_tensor(buf) and buf.shape == m.shape]
            with torch.no_grad():
                if bufs:
                    torch._foreach_mul_([b for b, _ in bufs], [mask_as(m, b.dtype) for b, m in bufs])
        self.steps += 1
        if self.cfg.update_every and self.steps % self.cfg.update_every == 0:
            self.update_topology(optimizer)
            return True
        return False

    # ------------------------------------------------------------------ topology
    def update_topology(self, optimizer: Optional[torch.optim.Optimizer] = None) -> dict:
        """One prune-and-regrow; the total number of nonzeros is unchanged (per tensor too when
        redistribution is 'none' and death is per tensor and not 'threshold')."""
        if self.require_steps and self.steps == 0:
            raise ConfigError("update_topology() before any step: call masking.step(optimizer) after every "
                              "backward pass, and update the topology after an epoch of them (magnitude death "
                              "and gradient growth read the trained weights)")
        self.sync()
        cfg, rate = self.cfg, self.death_rate()
        old = {n: m.clone() for n, m in self.masks.items()}
        w = {n: self.params[n].detach() for n in self.names}
        if cfg.death == "global_magnitude":
            after = D.global_magnitude(w, old, rate)
        elif cfg.death == "magnitude":
            after = {n: D.magnitude(w[n], old[n], rate) for n in self.names}
        elif cfg.death == "SET":
            after = {n: D.set_death(w[n], old[n], rate) for n in self.names}
        elif cfg.death == "SET-original":
            after = {n: D.set_original(w[n], old[n], rate) for n in self.names}
        else:
            after = {n: D.threshold(w[n], old[n], self.threshold) for n in self.names}
        removed = {n: int(old[n].sum()) - int(after[n].sum()) for n in self.names}
        total = sum(removed.values())
        caps = {n: after[n].numel() - int(after[n].sum()) for n in self.names}
        threshold_used = self.threshold
        if cfg.death == "threshold":
            # Selfish-RNN: the threshold doubles when fewer than 98% of rate * nnz died, halves
            # when more than 102% did; the change acts from the next update
            target = rate * sum(int(old[n].sum()) for n in self.names)
            if total < (1.0 - THRESHOLD_TOLERANCE) * target:
                self.threshold *= 2.0
            elif total > (1.0 + THRESHOLD_TOLERANCE) * target:
                self.threshold *= 0.5
        if cfg.redistribution == "none" and cfg.death == "threshold":
            # Selfish-RNN scores every tensor 1.0 here: each regrows total / L whatever it lost
            grow = allocate(total, {n: 1.0 for n in self.names}, caps)
        elif cfg.redistribution == "none":
            grow = removed
        elif cfg.redistribution == "magnitude":  # by mean |w| of the surviving weights
            scores = {n: float(w[n][after[n]].abs().mean()) if after[n].any() else 0.0 for n in self.names}
            grow = allocate(total, scores, caps)
        else:  # nonzeros: by the surviving nonzero count
            grow = allocate(total, {n: float(after[n].sum()) for n in self.names}, caps)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.updates_done + 1)
        fn = GROWTH[cfg.growth]
        new = {}
        for n in self.names:
            ctx = GrowthContext(self.params[n].detach(), self.params[n].grad, gen)
            new[n] = fn(after[n], grow[n], ctx)
        self.model.set_masks(new)
        with torch.no_grad():
            for n in self.names:
                changed = new[n] != old[n]  # died or regrown: weight 0, optimizer state reset
                self.params[n].masked_fill_(changed | ~new[n], 0.0)
                if self.params[n].grad is not None:
                    self.params[n].grad.masked_fill_(~new[n], 0.0)
                if optimizer is not None:
                    reset_optimizer_state(optimizer, self.params[n], changed)
        self.model.apply_masks_()  # already exact; records it for the fused LSTM path
        self.updates_done += 1
        out = {"death_rate": rate, "removed": total, "density": self.density()}
        if cfg.death == "threshold":
            out.update(threshold=threshold_used, next_threshold=self.threshold)
        return out


def reset_optimizer_state(optimizer: torch.optim.Optimizer, param: torch.Tensor, where: torch.Tensor) -> None:
    """Zeros every per-element optimizer buffer of `param` at `where` (momentum, averages, counts)."""
    state = optimizer.state.get(param, {})
    for buf in state.values():
        if torch.is_tensor(buf) and buf.shape == param.shape:
            buf.masked_fill_(where, 0)
