"""The schedule of an LSH search and its distances (paper section 3), numpy only: what the
engine, the replays, the studies and the Optuna pruner share.

Schedule: n candidates and the dense model train e0 epochs; then, every ei epochs, the
farthest floor(n/2) are eliminated (keep ceil(n/2)), floor(keep/2) new candidates (n/4)
are proposed by the HPO method from the survivors' (config, distance) and trained up to
the current epoch, until at most final_k survive. This rounding reproduces the paper's
Table 3 exactly (GS-24: 24 e0 + 58 ei = 246 at 3/3), whose counts leave the catch-up
epochs out (selection_epochs does the same).
"""
from __future__ import annotations

import math
from typing import Dict, List, Tuple

import numpy as np

from lshx.errors import ConfigError

DISTANCES = ("pca2", "raw", "pca2-pair", "loss")
# lsh: eliminate and insert on the schedule; full: train every proposed config to the end
STRATEGIES = ("lsh", "full")


# ----------------------------------------------------------------------------- arithmetic
def plan(n: int, final_k: int = 2) -> List[Tuple[int, int, int]]:
    """Rounds as (size before elimination, kept, inserted); the last round inserts nothing."""
    rounds, size = [], n
    while True:
        keep = math.ceil(size / 2)
        if keep <= final_k or size <= final_k:
            rounds.append((size, min(keep, size), 0))
            return rounds
        ins = keep // 2
        rounds.append((size, keep, ins))
        size = keep + ins


def elimination_epochs(n: int, e0: int, ei: int, final_k: int = 2) -> List[int]:
    """The epochs at which the planned rounds eliminate (fewer when the HPO method runs out
    of new configs, as the grid does)."""
    return [e0 + ei * r for r in range(len(plan(n, final_k)))]


def round_seed(seed: int, round_: int) -> int:
    """Independent seeds per (search seed, round): round 0 draws the initial candidates."""
    return int(np.random.SeedSequence([seed, round_]).generate_state(1)[0])


def selection_epochs(n: int, e0: int, ei: int, final_k: int = 2) -> int:
    """Epochs of the candidate-selection phase as the paper's Table 3 counts them
    (every candidate alive in a period, catch-up epochs of inserted ones left out)."""
    rounds = plan(n, final_k)
    return n * e0 + ei * sum(keep + ins for _, keep, ins in rounds[:-1])


# ----------------------------------------------------------------------------- distances
def _trajectory(evs: Dict[int, dict], epoch: int) -> List[list]:
    """A model's spectra at epochs 1..epoch (diverged or missing epochs left out)."""
    return [ev["spectrum"] for e, ev in sorted(evs.items())
            if e <= epoch and ev.get("spectrum") is not None and not ev.get("diverged")]


def _pca_distance(rows: List[list], ref: list, points: List[list]) -> List[float]:
    """Fits a 2-D PCA on `rows` (centring, then the two leading right singular vectors: what
    sklearn's PCA with the full solver computes, up to the sign of each axis, which no
    distance sees) and returns the L2 distance of each point to `ref` in it."""
    X = np.asarray(rows, dtype=np.float64)
    mean = X.mean(axis=0)
    _, _, vt = np.linalg.svd(X - mean, full_matrices=False)
    axes = vt[: min(2, X.shape[0], X.shape[1])]
    d0 = (np.asarray(ref, dtype=np.float64) - mean) @ axes.T
    Y = (np.asarray(points, dtype=np.float64) - mean) @ axes.T
    return [float(np.linalg.norm(y - d0)) for y in Y]


def distances(kind: str, dense: Dict[int, dict], cands: Dict[int, Dict[int, dict]], epoch: int,
              alive: List[int]) -> Dict[int, float]:
    """s_i for every alive candidate at `epoch` (lower is closer to the dense model).

    loss: the validation perplexity. raw: L2 between the spectra. pca2: L2 in one 2-D PCA
    fitted on the dense trajectory and the trajectories of the candidates alive in this
    round, epochs 1..epoch (what the search knows then: eliminated candidates and other
    searches' evaluations in a shared DB do not move it). pca2-pair: one PCA per candidate,
    on the dense trajectory and that candidate's (the paper's embedding([Λ̂, Λ^i]) read
    literally). Diverged or missing candidates get +inf."""
    out: Dict[int, float] = {}
    if kind == "loss":
        for c in alive:
            ev = cands[c].get(epoch)
            ok = ev and not ev["diverged"] and ev["val_ppl"] is not None and math.isfinite(ev["val_ppl"])
            out[c] = float(ev["val_ppl"]) if ok else math.inf
        return out
    ref = (dense.get(epoch) or {}).get("spectrum")
    if ref is None or (dense[epoch].get("diverged")) or not all(math.isfinite(v) for v in ref):
        raise ConfigError(f"the dense model has no finite spectrum at epoch {epoch} (it diverged, or its evaluation "
                          f"is missing): every LS distance is measured from it; lower the dense model's learning "
                          f"rate or compare by --distance loss")
    good = [c for c in alive if cands[c].get(epoch) and not cands[c][epoch]["diverged"]
            and cands[c][epoch]["spectrum"] is not None]
    out = {c: math.inf for c in alive}
    if not good:
        return out
    points = [cands[c][epoch]["spectrum"] for c in good]
    if kind == "raw":
        vals = [float(np.linalg.norm(np.array(p) - np.array(ref))) for p in points]
    elif kind == "pca2":
        rows = _trajectory(dense, epoch)
        for c in good:
            rows += _trajectory(cands[c], epoch)
        vals = _pca_distance(rows, ref, points)
    elif kind == "pca2-pair":
        vals = [_pca_distance(_trajectory(dense, epoch) + _trajectory(cands[c], epoch), ref, [p])[0]
                for c, p in zip(good, points)]
    else:
        raise ConfigError(f"unknown distance {kind!r}; allowed: {', '.join(DISTANCES)}")
    out.update(zip(good, vals))
    return out


def eliminate(dist: Dict[int, float], keep: int) -> Tuple[List[int], List[int]]:
    """(survivors, eliminated): the `keep` nearest stay; ties go to the lower candidate id."""
    order = sorted(dist, key=lambda c: (dist[c], c))
    return sorted(order[:keep]), sorted(order[keep:])
