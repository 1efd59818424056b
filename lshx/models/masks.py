"""MaskTable: the masks of a module's weights, by parameter name, kept outside its state_dict
(whose keys stay the module's own), and which masked weights are known to be exactly zero
outside their masks. lshx's models (MaskedLM) and any user module (lshx.sparse.any_model)
hold one; the DST engine owns and updates the masks."""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Set

import torch
from torch import nn

from lshx.ops import mask_as


class MaskTable:
    def __init__(self, module: nn.Module, selectable: Optional[Iterable[str]] = None) -> None:
        """selectable: the parameter names a mask may be set for (default: every one)."""
        self.module = module
        self.selectable = None if selectable is None else set(selectable)
        self.masks: Dict[str, torch.Tensor] = {}
        # name -> (mask, its version, parameter, its version) recorded by apply_: while all
        # are unchanged the weight is known to be exactly zero outside its mask (see exact)
        self._applied: Dict[str, tuple] = {}

    def set(self, masks: Optional[Dict[str, torch.Tensor]]) -> None:
        """Replaces the masks (bool, on their weights' devices) after checking names and shapes."""
        masks = dict(masks or {})
        params = dict(self.module.named_parameters())
        for name, m in masks.items():
            if name not in params:
                raise KeyError(f"mask for unknown parameter {name!r}")
            if self.selectable is not None and name not in self.selectable:
                raise KeyError(f"parameter {name!r} is not selected for masking (filter, or a bias)")
            if m.shape != params[name].shape:
                raise ValueError(f"mask {name!r} has shape {tuple(m.shape)}, weight {tuple(params[name].shape)}")
        self.masks = {n: m.to(device=params[n].device, dtype=torch.bool) for n, m in masks.items()}

    def sync(self) -> None:
        """Brings the masks to their weights' devices (module.to(device) moves the weights, not
        the masks)."""
        params = dict(self.module.named_parameters())
        if any(m.device != params[n].device for n, m in self.masks.items()):
            self.set(self.masks)

    def apply_(self) -> None:
        """Zeros the weights outside their masks in place, and records that they are."""
        params = dict(self.module.named_parameters())
        names = list(self.masks)
        with torch.no_grad():  # one launch for every tensor (per device and dtype), not one each
            if names:
                torch._foreach_mul_([params[n] for n in names],
                                    [mask_as(self.masks[n], params[n].dtype) for n in names])
        self._applied = {name: (m, m._version, params[name], params[name]._version)
                         for name, m in self.masks.items()}

    def exact(self) -> Set[str]:
        """The masked weights known to be exactly zero outside their masks: apply_ ran since the
        mask was set, and neither the mask nor the weight has been replaced or written in place
        since (same objects, same versions). Writes through `.data` move no version: call
        apply_ (or set the masks again) after them."""
        params = dict(self.module.named_parameters())
        return {n for n, (m, mv, p, pv) in self._applied.items()
                if self.masks.get(n) is m and m._version == mv and params.get(n) is p and p._version == pv}
