"""What the LSTM and RHN language models share: masks by parameter name, state helpers."""
from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import Dict, List, Optional, Set

import torch
from torch import nn

from lshx.ops import mask_as


class MaskedLM(nn.Module, metaclass=ABCMeta):
    """A language model whose 2-D weights may be masked.

    Masks are kept outside the state_dict (whose keys stay nn.LSTM-compatible) in a dict
    keyed by parameter name; the DST engine owns and updates them.
    """

    arch: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.masks: Dict[str, torch.Tensor] = {}
        # name -> (mask, weight version) recorded by apply_masks_: while both are unchanged the
        # weight is known to be exactly zero outside its mask (see exact_masked)
        self._exact: Dict[str, tuple] = {}

    def maskable_names(self) -> List[str]:
        """Every weight matrix (embedding and decoder included), never biases."""
        return [n for n, p in self.named_parameters() if p.dim() == 2]

    def set_masks(self, masks: Optional[Dict[str, torch.Tensor]]) -> None:
        masks = dict(masks or {})
        params = dict(self.named_parameters())
        for name, m in masks.items():
            if name not in params:
                raise KeyError(f"mask for unknown parameter {name!r}")
            if m.shape != params[name].shape:
                raise ValueError(f"mask {name!r} has shape {tuple(m.shape)}, weight {tuple(params[name].shape)}")
        self.masks = {n: m.to(device=params[n].device, dtype=torch.bool) for n, m in masks.items()}

    def _apply(self, fn, *args, **kwargs):
        """model.to(device) moves the masks with the weights (they live outside the state_dict)."""
        out = super()._apply(fn, *args, **kwargs)
        params = dict(self.named_parameters())
        if any(m.device != params[n].device for n, m in self.masks.items()):
            self.set_masks(self.masks)
        return out

    def mask(self, name: str) -> Optional[torch.Tensor]:
        return self.masks.get(name)

    def apply_masks_(self) -> None:
        """Zero the weights outside their masks (in place), and record that they are."""
        params = dict(self.named_parameters())
        with torch.no_grad():
            for name, m in self.masks.items():
                params[name].mul_(mask_as(m, params[name].dtype))
        self._exact = {name: (m, params[name]._version) for name, m in self.masks.items()}

    def exact_masked(self) -> Set[str]:
        """The masked weights known to be exactly zero outside their masks: apply_masks_ ran
        since the mask was set and nothing has written to the weight since (its version is
        unchanged). The DST engine re-applies the masks after every optimizer step and every
        topology update, so during training this is every masked weight; the fused LSTM path
        uses such a weight as it is (W * M = W) and masks any other one first."""
        params = dict(self.named_parameters())
        return {n for n, (m, v) in self._exact.items()
                if self.masks.get(n) is m and n in params and params[n]._version == v}

    @property
    @abstractmethod
    def model_args(self) -> dict:
        """The constructor arguments (with "arch"): build_model(model_args) rebuilds the model."""

    @abstractmethod
    def state_size(self, state_kind: str = "h") -> int:
        """N, the length of the state vector whose Lyapunov spectrum is computed."""


def detach_state(state):
    """Detaches a model state: an LSTM's (h, c) tuple or an RHN's single tensor."""
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
