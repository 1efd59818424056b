"""Death (pruning) modes: which active weights leave the topology."""
from __future__ import annotations

import math
from typing import Dict

import torch

INF = float("inf")


def _smallest(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Flat indices of the n smallest finite scores (stable: ties go to the lower index)."""
    if n <= 0:
        return torch.empty(0, dtype=torch.long, device=scores.device)
    return torch.sort(scores.flatten(), stable=True).indices[:n]


def _remove(mask: torch.Tensor, flat_idx: torch.Tensor) -> torch.Tensor:
    out = mask.clone().flatten()
    out[flat_idx] = False
    return out.view_as(mask)


def magnitude(weight: torch.Tensor, mask: torch.Tensor, rate: float) -> torch.Tensor:
    """Removes round(rate * nnz) active weights of smallest |w|."""
    n = round(rate * int(mask.sum()))
    scores = torch.where(mask, weight.abs(), torch.full_like(weight, INF))
    return _remove(mask, _smallest(scores, n))


def set_death(weight: torch.Tensor, mask: torch.Tensor, rate: float) -> torch.Tensor:
    """SET (Mocanu et al. 2018): removes the positive and the negative weights closest to zero.

    Half of the round(rate * nnz) removals are the smallest positive weights (w >= 0), the
    other half the largest negative ones; if one side runs short the other makes up for it.
    """
    n = round(rate * int(mask.sum()))
    pos = mask & (weight >= 0)
    neg = mask & (weight < 0)
    n_pos = min(math.ceil(n / 2), int(pos.sum()))
    n_neg = min(n - n_pos, int(neg.sum()))
    n_pos = min(n - n_neg, int(pos.sum()))
    s_pos = torch.where(pos, weight, torch.full_like(weight, INF))
    s_neg = torch.where(neg, -weight, torch.full_like(weight, INF))
    idx = torch.cat([_smallest(s_pos, n_pos), _smallest(s_neg, n_neg)])
    return _remove(mask, idx)


def set_original(weight: torch.Tensor, mask: torch.Tensor, rate: float) -> torch.Tensor:
    """Selfish-RNN's SET rule (its magnitude_and_negativity_death), kept to reproduce its numbers:
    with n = round(rate * nnz), removes the ceil(n/2) smallest positive weights and the ceil(n/2)
    MOST negative ones (not the negatives closest to zero: the defect `SET` corrects), fewer on a
    side that has fewer. Active weights exactly 0 count as positive.
    """
    n = round(rate * int(mask.sum()))
    k = math.ceil(n / 2)
    pos = mask & (weight >= 0)
    neg = mask & (weight < 0)
    s_pos = torch.where(pos, weight, torch.full_like(weight, INF))
    s_neg = torch.where(neg, weight, torch.full_like(weight, INF))  # most negative first
    idx = torch.cat([_smallest(s_pos, min(k, int(pos.sum()))), _smallest(s_neg, min(k, int(neg.sum())))])
    return _remove(mask, idx)


def threshold(weight: torch.Tensor, mask: torch.Tensor, thr: float) -> torch.Tensor:
    """Removes every active weight with |w| < thr (the engine adapts thr to the death rate)."""
    return mask & ~(weight.abs() < thr)


def global_magnitude(weights: Dict[str, torch.Tensor], masks: Dict[str, torch.Tensor],
                     rate: float) -> Dict[str, torch.Tensor]:
    """Removes round(rate * total nnz) weights of smallest |w| across all tensors together."""
    names = list(masks)
    n = round(rate * sum(int(masks[k].sum()) for k in names))
    scores = torch.cat([torch.where(masks[k], weights[k].abs(), torch.full_like(weights[k], INF)).flatten()
                        for k in names])
    idx = _smallest(scores, n)
    flat = torch.cat([masks[k].flatten() for k in names])
    flat[idx] = False
    out, off = {}, 0
    for k in names:
        numel = masks[k].numel()
        out[k] = flat[off: off + numel].view_as(masks[k])
        off += numel
    return out
