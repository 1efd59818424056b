"""Growth modes: where the regrown connections go. A growth function receives the layer's
mask after death, how many to add and a GrowthContext (weight, dense gradient, generator),
so gradient- or momentum-based growth can be added as one more entry in GROWTH."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch


@dataclass
class GrowthContext:
    weight: torch.Tensor
    grad: Optional[torch.Tensor]
    generator: torch.Generator


def random_growth(mask: torch.Tensor, n: int, ctx: GrowthContext) -> torch.Tensor:
    """Activates n positions drawn uniformly among the inactive ones."""
    if n <= 0:
        return mask.clone()
    flat = mask.flatten()
    free = (~flat).nonzero().squeeze(1)
    if n > free.numel():
        raise ValueError(f"cannot grow {n} connections into {free.numel()} free positions")
    pick = free[torch.randperm(free.numel(), generator=ctx.generator)[:n].to(free.device)]
    out = flat.clone()
    out[pick] = True
    return out.view_as(mask)


GROWTH: Dict[str, Callable[[torch.Tensor, int, GrowthContext], torch.Tensor]] = {"random": random_growth}
