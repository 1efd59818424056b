"""SNT-ASGD: SGD whose iterates are averaged per element, the averaging of an element
restarting when the DST engine regrows it (its buffers are zeroed then)."""
from __future__ import annotations

from contextlib import contextmanager

import torch


class SparseASGD(torch.optim.Optimizer):
    def __init__(self, params, lr: float, weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad.add(p, alpha=wd) if wd else p.grad
                p.add_(d, alpha=-lr)
                st = self.state[p]
                if not st:
                    st["ax"] = torch.zeros_like(p)
                    st["n"] = torch.zeros_like(p)
                st["n"].add_(1)
                st["ax"].add_((p - st["ax"]) / st["n"])
        return None

    @contextmanager
    def averaged(self):
        """Temporarily puts the averaged weights into the parameters (for validation/saving)."""
        saved = []
        for group in self.param_groups:
            for p in group["params"]:
                st = self.state.get(p)
                if st:
                    saved.append((p, p.detach().clone()))
                    p.data.copy_(torch.where(st["n"] > 0, st["ax"], p.detach()))
        try:
            yield
        finally:
            for p, v in saved:
                p.data.copy_(v)
