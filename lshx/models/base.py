"""What the LSTM and RHN language models share: masks by parameter name, state helpers."""
from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import Dict, List, Optional, Set

import torch
from torch import nn

from lshx.models.masks import MaskTable


class MaskedLM(nn.Module, metaclass=ABCMeta):
    """A language model whose 2-D weights may be masked: its MaskTable keeps the masks outside
    the state_dict (whose keys stay nn.LSTM-compatible); the DST engine owns and updates them."""

    arch: str = ""

    def __init__(self) -> None:
        super().__init__()
        # (a plain attribute, not a submodule: it holds a reference back to this model)
        object.__setattr__(self, "mask_table", MaskTable(self))

    @property
    def masks(self) -> Dict[str, torch.Tensor]:
        return self.mask_table.masks

    def maskable_names(self) -> List[str]:
        """Every weight matrix (embedding and decoder included), never biases."""
        return [n for n, p in self.named_parameters() if p.dim() == 2]

    def set_masks(self, masks: Optional[Dict[str, torch.Tensor]]) -> None:
        self.mask_table.set(masks)

    def _apply(self, fn, *args, **kwargs):
        """model.to(device) moves the masks with the weights (they live outside the state_dict)."""
        out = super()._apply(fn, *args, **kwargs)
        self.mask_table.sync()
        return out

    def mask(self, name: str) -> Optional[torch.Tensor]:
        return self.masks.get(name)

    def apply_masks_(self) -> None:
        """Zero the weights outside their masks (in place), and record that they are."""
        self.mask_table.apply_()

    def exact_masked(self) -> Set[str]:
        """The masked weights known to be exactly zero outside their masks (MaskTable.exact).
        The DST engine re-applies the masks after every optimizer step and every topology
        update, so during training this is every masked weight; the fused LSTM path uses such
        a weight as it is (W * M = W) and masks any other one first."""
        return self.mask_table.exact()

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
