"""Retrains one stored run of a search from scratch and compares it with the run DB, bit for bit.

What a resumed table relies on (scripts/gs24.sh): a run lost in flight (a killed machine) is
trained again, and the table gets the numbers it would have had. tests/test_table.py shows it
at the smoke scale; this script checks it at a table's real scale, on any machine: it reads the
DB read-only, recomputes the run's evaluation key from the search's stored options (it must
match the stored one), trains the candidate for EPOCHS epochs into a temporary folder in this
process (one thread, as the table's workers), and compares every epoch's val ppl, training
loss and spectra (and, with --epochs all, the test ppl) with what the DB holds.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/check_retrain.py runs/gs24.sqlite \
        --search gs24-small-P12-t1 --cid 3 --epochs 2
Exit 0 when every compared number is identical, 1 when one differs (each printed), 2 on bad input.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

from lshx.errors import LshxError
from lshx.search import jobs as J
from lshx.search.config import SearchConfig
from lshx.search.engine import Search
from lshx.search.executors import SerialExecutor
from lshx.search.rundb import RunDB
from lshx.search.space import describe


def _differences(label: str, stored, again) -> list:
    """'label: stored -> again' for each number that is not identical (lists compared element-wise)."""
    if isinstance(stored, dict) or isinstance(again, dict):
        stored, again = stored or {}, again or {}
        return [d for k in sorted(set(stored) | set(again))
                for d in _differences(f"{label}[{k}]", stored.get(k), again.get(k))]
    if isinstance(stored, list) or isinstance(again, list):
        if not (isinstance(stored, list) and isinstance(again, list)) or len(stored) != len(again):
            return [f"{label}: {stored!r} -> {again!r}"]
        bad = [i for i, (a, b) in enumerate(zip(stored, again)) if a != b and not (a != a and b != b)]
        if not bad:
            return []
        worst = max(abs(stored[i] - again[i]) for i in bad)
        return [f"{label}: {len(bad)} of {len(stored)} differ, max |diff| {worst:.3g}"]
    same = stored == again or (isinstance(stored, float) and isinstance(again, float)
                               and math.isnan(stored) and math.isnan(again))
    return [] if same else [f"{label}: {stored!r} -> {again!r}"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints its usage first)
        print(f"check_retrain: {message}", file=sys.stderr)
        sys.exit(2)


def _num(x, spec: str) -> str:
    return format(x, spec) if isinstance(x, (int, float)) else repr(x)


def _epochs(value: str):
    if value == "all":
        return value
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"--epochs must be an integer >= 1 or 'all', got {value!r}")
    return n


def main(argv=None) -> int:
    p = _Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("db", type=Path, help="the run DB (read only)")
    p.add_argument("--search", required=True, help="the search's name (a table's seed: NAME-tS)")
    p.add_argument("--cid", type=int, required=True, help="the candidate's id in that search (0: dense)")
    p.add_argument("--epochs", type=_epochs, default=2, help="epochs to retrain and compare, or 'all' (with the "
                                                             "test ppl)")
    a = p.parse_args(argv)
    try:
        if not a.db.is_file():
            raise LshxError(f"no run DB at {a.db}")
        db = RunDB(a.db, readonly=True)
        try:
            prev = db.get_search(a.search)
            if prev is None:
                raise LshxError(f"no search {a.search!r} in {a.db}")
            cfg = SearchConfig.from_stored(prev["args"])
            cand = {c["cid"]: c for c in db.candidates(a.search)}.get(a.cid)
            if cand is None:
                raise LshxError(f"search {a.search!r} has no candidate {a.cid}")
            search = Search(cfg, db, SerialExecutor(threads=1), a.search, quiet=True)
            stored = search.evals(cand)
            test = db.tests(cfg.seed).get(cand["eval_key"])
            train, key = search.keyed(None if cand["origin"] == "dense" else cand["config"])
        finally:
            db.close()
        if key != cand["eval_key"]:
            raise LshxError(f"the stored options give the evaluation key {key}, the DB holds {cand['eval_key']}: "
                            f"this lshx would not resume the run, it would train another")
        if not stored:
            raise LshxError(f"candidate {a.cid} of {a.search!r} has no stored epoch to compare with")
        last = max(stored)
        # 'all': to the search's last epoch, or where the stored run diverged (the retrain stops there too)
        target = cfg.final_epochs if a.epochs == "all" else a.epochs
        if target > last and a.epochs != "all":
            raise LshxError(f"candidate {a.cid} has epochs 1..{last} stored; --epochs must be 1..{last} or 'all'")
        what = "dense" if cand["origin"] == "dense" else describe(cand["config"])
        seed = cfg.seed if cfg.train_seed is None else cfg.train_seed
        print(f"{a.search} candidate {a.cid} ({what}), training seed {seed}, key {key}: retraining "
              f"{target} epochs", flush=True)
        with tempfile.TemporaryDirectory(prefix="lshx-retrain-") as tmp:
            job = {**search.job(cand, target), "dir": tmp, "test": a.epochs == "all"}
            t0 = time.perf_counter()
            res = J.advance(job)  # (a missing data folder or device is the LshxError said below)
            wall = time.perf_counter() - t0
    except LshxError as exc:
        print(f"check_retrain: {exc}", file=sys.stderr)
        return 2
    diffs = []
    again = {ev["epoch"]: ev for ev in res["evals"]}
    for e in sorted(set(again) | {e for e in stored if e <= target}):
        if e not in stored or e not in again:
            diffs.append(f"epoch {e}: " + ("retrained, not stored" if e not in stored else "stored, not retrained"))
            continue
        ev, old = again[e], dict(stored[e])
        for f in ("val_ppl", "train_loss"):  # (SQLite stores a NaN as NULL)
            old[f] = math.nan if old[f] is None else old[f]
        for f in ("val_ppl", "train_loss", "diverged", "spectrum", "extra"):
            diffs += _differences(f"epoch {e} {f}", old[f], ev[f] if f != "extra" else ev[f] or {})
        print(f"  epoch {e}: val ppl {_num(ev['val_ppl'], '.6f')} (stored {_num(old['val_ppl'], '.6f')}), "
              f"train loss {_num(ev['train_loss'], '.8f')} (stored {_num(old['train_loss'], '.8f')}), "
              f"{len(ev['spectrum'] or [])} exponents + {', '.join(sorted(ev['extra'] or {})) or 'no'} extra spectra")
    if a.epochs == "all":
        if test is None:  # (only a table's full strategy stores it)
            print(f"  test ppl {res.get('test_ppl')!r} (none stored to compare with)")
        else:
            diffs += _differences("test ppl", test, res.get("test_ppl"))
            print(f"  test ppl {res.get('test_ppl')!r} (stored {test!r})")
    print(f"retrained in {wall:.0f} s: " + ("every number identical to the stored run" if not diffs else
                                             f"{len(diffs)} differences"))
    for d in diffs:
        print("  " + d)
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
