"""LSH's elimination inside an Optuna study: LSHPruner, and report_spectrum to feed it.

    pruner = LSHPruner(e0=2, ei=1, max_epochs=EPOCHS, reference=dense_spectra)   # {epoch: spectrum}
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(), pruner=pruner)
    # in the objective, after every epoch: trial.report(val_loss, epoch) as usual, then
    report_spectrum(trial, lshx.lyapunov_spectrum(rnn, inputs), epoch)
    if trial.should_prune(): raise optuna.TrialPruned()

The pruner keeps its own record (the spectra in user attrs, its decisions in system attrs)
and leaves the intermediate values to the user. The exact rule, how it compares with
Optuna's SuccessiveHalvingPruner and with `lshx search`, and what TPE learns from pruned
trials: docs/library.md, section 3.
"""
from __future__ import annotations

import math
import warnings
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import optuna
from optuna.pruners import BasePruner

from lshx.errors import ConfigError

__all__ = ["LSHPruner", "report_spectrum", "report_reference", "spectra", "reference_spectra", "decisions"]

TRIAL_KEY = "lshx:ls:{}"  # trial user attr: the spectrum after epoch e (None if not finite)
REFERENCE_KEY = "lshx:reference:{}"  # study user attr: the dense reference's spectrum after epoch e
RUNG_KEY = "lshx:rung:{}"  # trial system attr: "pending" or the decision at rung r
PENDING = "pending"


def _as_list(spectrum) -> List[float]:
    if hasattr(spectrum, "detach"):
        spectrum = spectrum.detach().cpu().double().reshape(-1).tolist()
    elif hasattr(spectrum, "tolist"):
        spectrum = spectrum.reshape(-1).tolist()
    return [float(v) for v in spectrum]


def _finite_or_none(spectrum) -> Optional[List[float]]:
    vals = _as_list(spectrum)
    if not vals:
        raise ConfigError("empty spectrum")
    return vals if all(math.isfinite(v) for v in vals) else None


def _epochs(attrs: Mapping, prefix: str) -> Dict[int, Optional[List[float]]]:
    head = prefix.format("")
    return {int(k[len(head):]): v for k, v in attrs.items() if k.startswith(head) and k[len(head):].isdigit()}


def spectra(trial) -> Dict[int, Optional[List[float]]]:
    """The spectra a trial (Trial or FrozenTrial) reported, by epoch (None: not finite)."""
    return _epochs(trial.user_attrs, TRIAL_KEY)


def reference_spectra(study: "optuna.Study") -> Dict[int, List[float]]:
    """The reference spectra stored in the study by report_reference, by epoch."""
    return {e: v for e, v in _epochs(study.user_attrs, REFERENCE_KEY).items() if v is not None}


def report_reference(study: "optuna.Study", spectrum, epoch: int) -> None:
    """Stores the dense reference's spectrum after `epoch` in the study (its storage), for a
    dense model that trains alongside the trials (in this process or another)."""
    vals = _finite_or_none(spectrum)
    if vals is None:
        raise ConfigError(f"the reference spectrum at epoch {epoch} is not finite")
    study.set_user_attr(REFERENCE_KEY.format(int(epoch)), vals)


def report_spectrum(trial: "optuna.Trial", spectrum, epoch: int) -> float:
    """Records a trial's spectrum after `epoch` (one call per epoch, before should_prune),
    beside the trial's own intermediate values, which it leaves alone (report the validation
    loss with trial.report as usual). Returns the raw L2 distance to the reference at that
    epoch, for information (+inf for a non-finite spectrum, NaN while the reference lacks the
    epoch); the pruner decides on the spectra. Epochs are numbered as the pruner's first_epoch
    says (1 by default; 0 for `for epoch in range(epochs)`). A spectrum already judged at a
    rung cannot be replaced by another."""
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise ConfigError(f"epoch must be an integer >= 0, got {epoch!r}")
    epoch = int(epoch)
    pruner = trial.study.pruner
    lsh = isinstance(pruner, LSHPruner)
    if lsh and epoch < pruner.first_epoch:
        raise ConfigError(f"epoch {epoch} is before the pruner's first epoch {pruner.first_epoch} (give "
                          f"LSHPruner(first_epoch=0) to count epochs from 0)")
    vals = _finite_or_none(spectrum)
    if lsh:
        r = pruner.rung_of(epoch)
        before = spectra(trial).get(epoch, "missing")
        if r is not None and isinstance(decisions(trial).get(r), dict) and before != vals:
            raise ConfigError(f"trial {trial.number} was judged at epoch {epoch} on the spectrum it reported then: "
                              f"it cannot be replaced")
    trial.set_user_attr(TRIAL_KEY.format(epoch), vals)
    ref = (pruner.reference_at(trial.study) if lsh else reference_spectra(trial.study)).get(epoch)
    if vals is None:
        return math.inf
    if ref is None:
        return math.nan
    if len(ref) != len(vals):
        raise ConfigError(f"spectrum of {len(vals)} exponents, the reference has {len(ref)}")
    return math.sqrt(sum((a - b) ** 2 for a, b in zip(vals, ref)))


class LSHPruner(BasePruner):
    """LSH's elimination as an Optuna pruner (the rule: docs/library.md, section 3).

    e0, ei: the first rung epoch and the spacing; distance: "pca2" (default), "raw" or
    "pca2-pair"; max_epochs: the epochs every trial trains, whose last is never a rung (a
    trial that finished training is not pruned); n_rungs: at most this many rungs. One of the
    two is required. reference: the dense model's spectra {epoch: spectrum}, checked here to
    hold every epoch the rungs need (pca2: every epoch from first_epoch to the rung), and
    stored in the study at its first decision so that a resumed study (LSHPruner() with no
    reference) prunes as before; None: the study's (stored before, or by report_reference
    from a dense model training alongside). first_epoch: how the caller numbers the epoch of
    the first spectrum (1, or 0 for range(epochs)). on_missing_reference: with no reference
    at all nothing is pruned: "warn" (once) or "raise" (ConfigError at the first decision).
    """

    def __init__(self, e0: int = 1, ei: int = 1, distance: str = "pca2",
                 reference: Optional[Mapping[int, Sequence[float]]] = None, n_rungs: Optional[int] = None,
                 max_epochs: Optional[int] = None, first_epoch: int = 1, on_missing_reference: str = "warn") -> None:
        from lshx.search.schedule import DISTANCES

        if first_epoch not in (0, 1):
            raise ConfigError(f"first_epoch must be 0 or 1, got {first_epoch!r}")
        if e0 < first_epoch or ei < 1:
            raise ConfigError(f"e0 must be >= first_epoch ({first_epoch}) and ei >= 1, got {e0}, {ei}")
        if distance == "loss" or distance not in DISTANCES:
            allowed = [d for d in DISTANCES if d != "loss"]
            raise ConfigError(f"unknown distance {distance!r}; allowed: {', '.join(allowed)} (for a loss-based "
                              "rule use optuna.pruners.SuccessiveHalvingPruner)")
        if n_rungs is not None and n_rungs < 1:
            raise ConfigError(f"n_rungs must be >= 1 or None, got {n_rungs}")
        if max_epochs is not None and max_epochs < 1:
            raise ConfigError(f"max_epochs must be >= 1 or None, got {max_epochs}")
        if n_rungs is None and max_epochs is None:
            raise ConfigError("give max_epochs (the epochs every trial trains: its last epoch is never a rung, so "
                              "a trial that finished training is not pruned) or n_rungs")
        if on_missing_reference not in ("warn", "raise"):
            raise ConfigError(f"on_missing_reference must be 'warn' or 'raise', got {on_missing_reference!r}")
        self.e0, self.ei, self.distance, self.n_rungs = int(e0), int(ei), distance, n_rungs
        self.max_epochs, self.first_epoch, self.on_missing = max_epochs, int(first_epoch), on_missing_reference
        last = None if max_epochs is None else first_epoch + max_epochs - 1  # the trials' last epoch
        self.rungs: List[int] = []
        while (n_rungs is None or len(self.rungs) < n_rungs) and \
                (last is None or self.e0 + len(self.rungs) * self.ei < last):
            self.rungs.append(self.e0 + len(self.rungs) * self.ei)
        if not self.rungs:
            raise ConfigError(f"no rung before the last epoch ({last}): e0 = {e0} leaves nothing to prune")
        self.reference = None
        if reference is not None:
            self.reference = {}
            for e, s in reference.items():
                vals = _finite_or_none(s)
                if vals is None:
                    raise ConfigError(f"the reference spectrum at epoch {e} is not finite")
                self.reference[int(e)] = vals
            for epoch in self.rungs:  # a gap is found now, not when a trial reaches it
                self._check_reference(self.reference, epoch)
        self._warned = False
        self._stored: set = set()  # the studies this static reference was stored in

    # ---------------------------------------------------------------- rungs
    def rung_of(self, epoch: int) -> Optional[int]:
        """The rung index whose epoch is `epoch`, or None."""
        return self.rungs.index(epoch) if epoch in self.rungs else None

    def rung_epoch(self, r: int) -> int:
        return self.rungs[r]

    def reference_at(self, study: "optuna.Study") -> Dict[int, List[float]]:
        return self.reference if self.reference is not None else reference_spectra(study)

    def _check_reference(self, ref: Mapping[int, List[float]], epoch: int) -> bool:
        """Whether `ref` has what a decision at `epoch` needs: the spectrum at `epoch` (raw),
        every epoch from first_epoch to `epoch` (pca2, pca2-pair: the PCA is fitted on the
        trajectories). A static reference without it is a ConfigError (the rung could never be
        judged); a study's reference (report_reference) may still get it: False, it waits."""
        need = [epoch] if self.distance == "raw" else list(range(self.first_epoch, epoch + 1))
        missing = [e for e in need if e not in ref]
        if missing and self.reference is not None:
            why = "" if self.distance == "raw" else f" ({self.distance} fits its PCA on epochs " \
                                                    f"{self.first_epoch}..{epoch})"
            raise ConfigError(f"the reference has no spectrum at epoch {', '.join(map(str, missing))}, needed "
                              f"by the rung at epoch {epoch}{why}: give the dense model's spectrum after every "
                              "epoch up to the last rung")
        return not missing

    def _store_reference(self, study: "optuna.Study") -> None:
        """A static reference goes into the study once, so that the study prunes the same when
        resumed without it; a study that holds another one is refused."""
        key = getattr(study, "_study_id", id(study))
        if self.reference is None or key in self._stored:
            return
        stored = reference_spectra(study)
        if not stored:
            for e, vals in sorted(self.reference.items()):
                study.set_user_attr(REFERENCE_KEY.format(e), vals)
        elif set(stored) != set(self.reference) or any(
                not np.allclose(stored[e], self.reference[e], rtol=0, atol=1e-12) for e in stored):
            raise ConfigError("this study holds another reference (stored by an earlier LSHPruner or "
                              "report_reference): give the same one, or none to use the study's")
        self._stored.add(key)

    # ---------------------------------------------------------------- distances
    def distances(self, study: "optuna.Study", epoch: int, trials=None) -> Dict[int, float]:
        """{trial number: distance to the reference at `epoch`} over the competitors there:
        every trial with a spectrum reported at `epoch`, except those judged pruned at an
        earlier rung. Empty while a study's reference lacks what the distance needs."""
        from lshx.search.schedule import distances

        ref = self.reference_at(study)
        if not self._check_reference(ref, epoch):
            return {}
        trials = study.get_trials(deepcopy=False) if trials is None else trials
        rung = self.rung_of(epoch)
        cands: Dict[int, Dict[int, dict]] = {}
        for t in trials:
            sp = spectra(t)
            if epoch in sp and not _pruned_before(t, rung):
                cands[t.number] = {e: {"spectrum": s, "diverged": s is None} for e, s in sp.items()}
        dense = {e: {"spectrum": s, "diverged": False} for e, s in ref.items()}
        return distances(self.distance, dense, cands, epoch, sorted(cands)) if cands else {}

    # ---------------------------------------------------------------- the decision
    def prune(self, study: "optuna.Study", trial: "optuna.trial.FrozenTrial") -> bool:
        sp = spectra(trial)
        if not sp:
            return False
        self._store_reference(study)
        if not self.reference_at(study):
            msg = ("LSHPruner has no reference spectra (neither reference= nor report_reference in this study): "
                   "it prunes nothing until the dense model's spectra are given")
            if self.on_missing == "raise":
                raise ConfigError(msg)
            if not self._warned:
                warnings.warn(msg, UserWarning, stacklevel=2)
                self._warned = True
            return False
        rungs = decisions(trial)
        if any(isinstance(v, dict) and not v["kept"] for v in rungs.values()):
            return True  # pruned before (the objective went on): still pruned
        now = self.rung_of(max(sp))
        if now is not None and now not in rungs:
            rungs[now] = PENDING
            study._storage.set_trial_system_attr(trial._trial_id, RUNG_KEY.format(now), PENDING)
        for r in sorted(k for k, v in rungs.items() if v == PENDING):
            epoch = self.rung_epoch(r)
            dist = self.distances(study, epoch)
            if not dist:
                continue  # the study's reference has not reached this epoch: decided at a later call
            order = sorted(dist, key=lambda n: (dist[n], n))
            m = len(order)
            d = dist[trial.number]
            diverged = sum(1 for v in dist.values() if v == math.inf)
            if d == math.inf and not (m > 1 and 2 * diverged > m):
                kept = False  # diverged, and the diverged are not most of m >= 2: pruned (alone too)
            else:
                kept = trial.number in order[:math.ceil(m / 2)]
            decision = {"epoch": epoch, "distance": d if math.isfinite(d) else None, "competitors": m,
                        "rank": order.index(trial.number) + 1, "kept": kept}
            study._storage.set_trial_system_attr(trial._trial_id, RUNG_KEY.format(r), decision)
            if not kept:
                return True
        return False


def decisions(trial) -> Dict[int, dict]:
    """The pruner's decisions on a trial (Trial or FrozenTrial), by rung: epoch, distance
    (None for +inf), competitors, rank and kept; "pending" while waiting for the reference.
    A live optuna.Trial (Optuna 5 gives it no system_attrs) is read through its study's
    storage."""
    head = RUNG_KEY.format("")
    if isinstance(trial, optuna.Trial):
        attrs = trial.study._storage.get_trial_system_attrs(trial._trial_id)
    else:
        attrs = trial.system_attrs
    return {int(k[len(head):]): v for k, v in attrs.items() if k.startswith(head)}


def _pruned_before(trial, rung: Optional[int]) -> bool:
    """Whether the pruner judged `trial` pruned at a rung before `rung`."""
    if rung is None:
        return False
    return any(isinstance(v, dict) and not v["kept"] and r < rung for r, v in decisions(trial).items())

