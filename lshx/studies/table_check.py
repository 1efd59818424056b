"""A table is whole before anything reads it: every training seed trained the same options,
every run has every epoch up to P (or up to the epoch it diverged at), the dense model has a
finite spectrum of the table's length at every epoch, every other spectrum has that length, and
every test ppl is there. Otherwise one ConfigError says which seed, run and epoch are missing
or damaged, so a replay never reads a half table (and never crashes on one)."""
from __future__ import annotations

import math
from typing import List, Optional

from lshx.errors import ConfigError
from lshx.search.space import describe

# options that may differ between a table's seeds: the training seed names them apart; the
# device and the thread count change the summation order, not the experiment (say which
# device trained which seed)
PER_SEED = {"train_seed", "device", "threads"}


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _spectrum_ok(spec, n: Optional[int]) -> bool:
    return isinstance(spec, list) and (n is None or len(spec) == n)


def check_table(table) -> None:
    """Raises ConfigError naming the first thing that makes `table` (lshx.studies.table.Table)
    unfit to replay."""
    from lshx.studies.table import Table  # (type only; table.py imports this module lazily)

    assert isinstance(table, Table)
    name, P = table.name, table.final_epochs
    opts = table.options
    with_spectra = opts.get("distance") != "loss"
    extra = list(opts.get("ls_extra") or []) if with_spectra else []

    def who(t: int, i: int) -> str:
        what = "the dense model" if i == 0 else f"candidate {i} ({describe(table.configs[i])})"
        return f"table {name!r}, training seed {table.seeds[t]}: {what}"

    lengths = {}
    for t, seed in enumerate(table.evals):
        dense = seed[0]
        gone = next((e for e in sorted(dense) if dense[e].get("diverged")), None)
        if gone is not None:
            raise ConfigError(f"{who(t, 0)} diverged at epoch {gone}: no candidate can be compared with it")
        if with_spectra:
            for e in range(1, P + 1):
                ev = dense.get(e)
                if ev is None:
                    break  # (said below, with the other missing epochs)
                spec = ev.get("spectrum")
                if not _spectrum_ok(spec, lengths.get("h")) or not all(map(_finite, spec)):
                    raise ConfigError(f"{who(t, 0)} has no finite spectrum at epoch {e}: the reference of every "
                                      f"LS distance is missing")
                lengths.setdefault("h", len(spec))
                for label in extra:
                    x = (ev.get("extra") or {}).get(label)
                    if not _spectrum_ok(x, lengths.get(label)) or not all(map(_finite, x)):
                        raise ConfigError(f"{who(t, 0)} has no finite {label} spectrum of the table's length at "
                                          f"epoch {e}")
                    lengths.setdefault(label, len(x))
        for i, evs in enumerate(seed):
            last = max(evs, default=0)
            diverged_at = next((e for e in sorted(evs) if evs[e].get("diverged")), None)
            end = diverged_at if diverged_at is not None else P
            missing: List[int] = [e for e in range(1, end + 1) if e not in evs]
            if missing or (diverged_at is None and last < P):
                missing = missing or list(range(last + 1, P + 1))
                raise ConfigError(f"{who(t, i)} lacks epoch{'s' if len(missing) > 1 else ''} "
                                  f"{', '.join(map(str, missing))} of 1..{P}: the table is incomplete (resume its "
                                  f"training, or drop the run)")
            for e in range(1, end + 1):
                ev = evs[e]
                if ev.get("diverged"):
                    continue
                if not _finite(ev.get("val_ppl")):
                    raise ConfigError(f"{who(t, i)} has no validation perplexity at epoch {e} but is not marked "
                                      f"diverged: the table is damaged")
                if with_spectra and not _spectrum_ok(ev.get("spectrum"), lengths.get("h")):
                    raise ConfigError(f"{who(t, i)} has a spectrum of another length (or none) at epoch {e}: the "
                                      f"table is damaged")
                for label in extra:
                    if not _spectrum_ok((ev.get("extra") or {}).get(label), lengths.get(label)):
                        raise ConfigError(f"{who(t, i)} has no {label} spectrum of the table's length at epoch {e}")
            test = table.test[t][i]
            ok = _finite(test) or (test == math.inf and diverged_at is not None)
            if not ok or (i == 0 and not _finite(test)):
                raise ConfigError(f"{who(t, i)} has test perplexity {test!r}: the table is damaged")
    return None


def check_same_options(name: str, first: dict, other: dict, tname: str) -> None:
    """Every seed of a table trained with the same options but the training seed."""
    keys = (set(first) | set(other)) - PER_SEED
    diff = sorted(k for k in keys if first.get(k) != other.get(k))
    if diff:
        raise ConfigError(f"table {name!r}: {tname} was trained with other options than the first seed ("
                          + ", ".join(f"{k}: {first.get(k)!r} vs {other.get(k)!r}" for k in diff) + ")")
