"""Per-layer nonzero counts for the sparse initializations (uniform, Erdos-Renyi)."""
from __future__ import annotations

import math
from typing import Dict, Sequence, Tuple

import torch


def _round_to_total(ideal: Dict[str, float], total: int, caps: Dict[str, int]) -> Dict[str, int]:
    """Integer counts near `ideal` summing exactly to `total` (largest remainder, within caps)."""
    counts = {n: min(caps[n], int(math.floor(v))) for n, v in ideal.items()}
    short = total - sum(counts.values())
    order = sorted(ideal, key=lambda n: (-(ideal[n] - math.floor(ideal[n])), n))
    while short > 0:
        progressed = False
        for n in order:
            if short == 0:
                break
            if counts[n] < caps[n]:
                counts[n] += 1
                short -= 1
                progressed = True
        if not progressed:
            raise ValueError("cannot place the nonzeros: target exceeds capacity")
    return counts


def layer_counts(shapes: Dict[str, Tuple[int, ...]], density: float, init: str) -> Dict[str, int]:
    """Nonzeros per tensor; their sum is exactly round(density * total)."""
    numel = {n: int(math.prod(s)) for n, s in shapes.items()}
    total = round(density * sum(numel.values()))
    if init == "uniform":
        ideal = {n: density * numel[n] for n in shapes}
        return _round_to_total(ideal, total, numel)
    if init != "ER":
        raise ValueError(f"unknown init {init!r}")
    # Erdos-Renyi: density_l proportional to (n_in + n_out) / (n_in * n_out). Layers whose
    # density would exceed 1 are made dense and the excess is spread over the rest.
    raw = {n: (s[0] + s[1]) / (s[0] * s[1]) for n, s in shapes.items()}
    dense: set = set()
    while True:
        budget = total - sum(numel[n] for n in dense)
        rest = [n for n in shapes if n not in dense]
        denom = sum(raw[n] * numel[n] for n in rest)
        eps = budget / denom if denom > 0 else 0.0
        over = [n for n in rest if eps * raw[n] > 1.0]
        if not over:
            break
        dense.update(over)
    ideal = {n: float(numel[n]) if n in dense else eps * raw[n] * numel[n] for n in shapes}
    return _round_to_total(ideal, total, numel)


def random_mask(shape: Sequence[int], count: int, generator: torch.Generator) -> torch.Tensor:
    """A bool mask with exactly `count` ones at uniformly random positions."""
    n = int(math.prod(shape))
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=generator)[:count]] = True
    return mask.view(*shape)


def largest_mask(weight: torch.Tensor, count: int) -> torch.Tensor:
    """A bool mask keeping the `count` largest |weight| (ties to the lower flat index)."""
    flat = weight.detach().abs().reshape(-1).cpu()
    mask = torch.zeros(flat.numel(), dtype=torch.bool)
    if count > 0:
        mask[torch.argsort(-flat, stable=True)[:count]] = True
    return mask.view(*weight.shape)


def allocate(total: int, scores: Dict[str, float], caps: Dict[str, int]) -> Dict[str, int]:
    """Splits `total` integer units proportionally to `scores`, none above its cap (water-filling)."""
    if total > sum(caps.values()):
        raise ValueError(f"cannot allocate {total} units into capacity {sum(caps.values())}")
    alloc = {n: 0 for n in scores}
    remaining = total
    while remaining > 0:
        open_ = [n for n in scores if caps[n] - alloc[n] > 0]
        weights = {n: max(scores[n], 0.0) for n in open_}
        if sum(weights.values()) <= 0:
            weights = {n: 1.0 for n in open_}
        s = sum(weights.values())
        ideal = {n: remaining * w / s for n, w in weights.items()}
        room = {n: caps[n] - alloc[n] for n in open_}
        give = _round_to_total({n: min(v, room[n]) for n, v in ideal.items()},
                               min(remaining, sum(room.values())), room)
        for n, g in give.items():
            alloc[n] += g
        remaining = total - sum(alloc.values())
    return alloc


