"""LSH's elimination inside an Optuna study.

    pruner = LSHPruner(e0=2, ei=1, distance="pca2", reference=dense_spectra)   # {epoch: spectrum}
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(), pruner=pruner)

    def objective(trial):
        ...                                           # build and sparsify a model from trial's params
        for epoch in range(1, epochs + 1):
            ...                                       # train one epoch
            report_spectrum(trial, lshx.lyapunov_spectrum(rnn, inputs), epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return validation_perplexity

Semantics. Epochs count from 1 (the spectrum after epoch e is reported at step e). The
rungs are the epochs e0, e0 + ei, e0 + 2 ei, ... (n_rungs of them, or unlimited). When a trial
calls should_prune() with its spectrum of a rung epoch E reported, the pruner judges it there:
its competitors are the trials of the study (the trial itself included, any state: running,
pruned, complete, failed) that have reported a spectrum at E, except those it judged pruned
at an earlier rung (LSH never compares an eliminated candidate again); the distance of each
to the dense reference at E is lshx.search.schedule.distances (pca2: one 2-D PCA fitted on the
reference's and the competitors' trajectories, epochs 1..E; raw: L2 of the spectra; a
non-finite spectrum is +inf); the trial is kept when it is among the ceil(m/2) nearest of
the m competitors (ties to the lower trial number), else pruned; a trial at +inf is pruned
unless the +inf trials are more than half of m >= 2 competitors (then the ranking decides:
in a synchronised round that is LSH's own rule; the difference is a diverged trial alone at
its rung, which LSH's ranking would keep). The decision is recorded in the trial's system
attrs ("lshx:rung:<r>") and never revisited. A rung the trial passed without calling
should_prune() at that epoch is not judged (that is how LSH's inserted candidates catch up
without a comparison). A static reference must hold every rung epoch (pca2: every epoch
1..E), else ConfigError; when a study's reference (report_reference) lacks it yet (a dense
model training alongside), the decision waits: the next should_prune() call judges it with
the spectra recorded at E.

Competitors differ from LSH's round in two ways the pruner cannot see: a trial pruned at
rung r still competes at rung r for the trials that arrive later (as in ASHA; it leaves
only the later rungs), and a trial whose objective raised (FAIL) before reporting epoch E
is absent at E, where LSH would count a diverged candidate as +inf (report a non-finite
spectrum and raise TrialPruned instead to keep LSH's count).

Against Optuna's SuccessiveHalvingPruner (asynchronous successive halving) with
reduction_factor 2: the same rule "promote the top 1/eta of what reached the rung so far",
with (1) the LS distance to the dense trajectory as the value, recomputed at decision time
from all spectra at the rung (pca2 moves as trials arrive) instead of the value frozen
when each trial passed; (2) ceil(m/2) kept, not floor(m/2) (at least 1); (3) rungs spaced
by ei epochs from e0, not geometrically. As with ASHA, asynchronous decisions depend on
arrival order: an early trial faces few competitors. When all the trials of a round report
their rung epoch before any of them asks (ask/tell, or a synchronised batch), every
decision is made on the same m spectra and the pruned set is exactly LSH's elimination of
that round.

Insertion comes from the sampler: each pruned trial frees a slot, and study.optimize asks
the sampler (TPE) for a new trial. What TPE learns from is not LSH's history: its "below"
(good) set, gamma(n) trials (by default min(ceil(0.1 n), 25)), is filled first with
COMPLETE trials ranked by the objective; pruned trials only fill the places left (when
fewer trials have completed), ranked by (-last step reached, last intermediate value); the
rest are "above" (running trials too, with constant_liar). The
intermediate value is what report_spectrum reports: the raw L2 distance to the reference
at that epoch (NaN while the reference lacks the epoch, ranked last), even when the pruner
decides on pca2, so the order TPE sees among pruned trials of one step need not be the
pruner's. In a maximize study report_spectrum reports -distance, so that nearer the dense
model still ranks better.
"""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence

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
    """Records a trial's spectrum after `epoch` (one call per epoch, before should_prune) and
    reports, as the intermediate value at step `epoch`, its raw L2 distance to the
    reference at that epoch (+inf for a non-finite spectrum, NaN while the reference lacks
    the epoch), negated in a maximize study (-distance, -inf: TPE ranks a pruned trial's
    last value by the study's direction, and nearer the dense model must rank better). The
    pruner decides on the spectra, not on this value. Returns the reported value."""
    epoch = int(epoch)
    if epoch < 1:
        raise ConfigError(f"epochs count from 1 (the spectrum after epoch e), got {epoch}")
    vals = _finite_or_none(spectrum)
    trial.set_user_attr(TRIAL_KEY.format(epoch), vals)
    pruner = trial.study.pruner
    ref = (pruner.reference_at(trial.study) if isinstance(pruner, LSHPruner)
           else reference_spectra(trial.study)).get(epoch)
    if vals is None:
        value = math.inf
    elif ref is None:
        value = math.nan
    else:
        if len(ref) != len(vals):
            raise ConfigError(f"spectrum of {len(vals)} exponents, the reference has {len(ref)}")
        value = math.sqrt(sum((a - b) ** 2 for a, b in zip(vals, ref)))
    directions = trial.study.directions
    if len(directions) == 1 and directions[0] == optuna.study.StudyDirection.MAXIMIZE:
        value = -value
    trial.report(value, epoch)
    return value


class LSHPruner(BasePruner):
    """LSH's elimination as an Optuna pruner (see the module docstring for the exact rule).

    e0, ei: the first rung epoch and the spacing; distance: "pca2" (default) or "raw" (or any
    spectrum distance lshx.search.schedule.distances knows); reference: the dense model's spectra
    {epoch: spectrum}, with every rung epoch E the trials reach (pca2: every epoch 1..E;
    checked at construction when n_rungs is given, else when a trial reaches the rung:
    ConfigError), or None to read them from the study (report_reference); n_rungs: the
    number of elimination rounds (None: every e0 + r ei).
    """

    def __init__(self, e0: int = 1, ei: int = 1, distance: str = "pca2",
                 reference: Optional[Mapping[int, Sequence[float]]] = None, n_rungs: Optional[int] = None) -> None:
        from lshx.search.schedule import DISTANCES

        if e0 < 1 or ei < 1:
            raise ConfigError(f"e0 and ei must be >= 1, got {e0}, {ei}")
        if distance == "loss" or distance not in DISTANCES:
            allowed = [d for d in DISTANCES if d != "loss"]
            raise ConfigError(f"unknown distance {distance!r}; allowed: {', '.join(allowed)} (for a loss-based "
                              "rule use optuna.pruners.SuccessiveHalvingPruner)")
        if n_rungs is not None and n_rungs < 1:
            raise ConfigError(f"n_rungs must be >= 1 or None, got {n_rungs}")
        self.e0, self.ei, self.distance, self.n_rungs = int(e0), int(ei), distance, n_rungs
        self.reference = None
        if reference is not None:
            self.reference = {}
            for e, s in reference.items():
                vals = _finite_or_none(s)
                if vals is None:
                    raise ConfigError(f"the reference spectrum at epoch {e} is not finite")
                self.reference[int(e)] = vals
            if n_rungs is not None:
                for r in range(n_rungs):
                    self._check_reference(self.reference, self.rung_epoch(r))

    # ---------------------------------------------------------------- rungs
    def rung_of(self, epoch: int) -> Optional[int]:
        """The rung index whose epoch is `epoch`, or None."""
        if epoch < self.e0 or (epoch - self.e0) % self.ei:
            return None
        r = (epoch - self.e0) // self.ei
        return r if self.n_rungs is None or r < self.n_rungs else None

    def rung_epoch(self, r: int) -> int:
        return self.e0 + r * self.ei

    def reference_at(self, study: "optuna.Study") -> Dict[int, List[float]]:
        return self.reference if self.reference is not None else reference_spectra(study)

    def _check_reference(self, ref: Mapping[int, List[float]], epoch: int) -> bool:
        """Whether `ref` has what a decision at `epoch` needs: the spectrum at `epoch` (raw),
        every epoch 1..epoch (pca2, pca2-pair: the PCA is fitted on the trajectories). A
        static reference without it is a ConfigError (the rung could never be judged); a
        study's reference (report_reference) may still get it: False, the decision waits."""
        need = [epoch] if self.distance == "raw" else list(range(1, epoch + 1))
        missing = [e for e in need if e not in ref]
        if missing and self.reference is not None:
            why = "" if self.distance == "raw" else f" ({self.distance} fits its PCA on epochs 1..{epoch})"
            raise ConfigError(f"the reference has no spectrum at epoch {', '.join(map(str, missing))}, needed "
                              f"by the rung at epoch {epoch}{why}: give the dense model's spectrum after every "
                              "epoch up to the last rung")
        return not missing

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

