"""The finished settings of a replay, kept on disk so that an interrupted replay resumes.

A full replay of a three-seed table is hours of CPU (every setting on the seed draws and on
each training seed alone); `lshx study replay --out DIR` keeps each finished task (one method,
HPO, n, e0, ei and training seed, over all its search seeds) in DIR/.replay-partial/ as it
finishes, written atomically, and a rerun with the same table reuses it. The key of a task
hashes everything its replays depend on: the table's contents (configs, every eval and test
ppl of the seeds replayed), the task, the number of search seeds and the lshx source (any
change to the package's code, e.g. between two sessions of a long replay, starts afresh); a
different table, option or code simply misses. The folder is removed once replay.json is written.
"""
from __future__ import annotations

from dataclasses import asdict
import hashlib
import json
import os
from pathlib import Path
import shutil
from typing import List, Optional, Sequence

import lshx
from lshx.paths import write_text_atomic
from lshx.studies.table import Table

FOLDER = ".replay-partial"


def table_fingerprint(table: Table) -> str:
    """A hash of what a replay reads from the table (computed once per table: about a second
    for a three-seed GS-24 table)."""
    if "fingerprint" not in table.cache:
        h = hashlib.sha1()
        head = {"name": table.name, "task": table.task, "options": table.options, "configs": table.configs,
                "seeds": list(table.seeds), "test": table.test}
        h.update(json.dumps(head, sort_keys=True, default=str).encode())
        for per_seed in table.evals:
            for ev in per_seed:
                h.update(json.dumps({str(e): ev[e] for e in sorted(ev)}, sort_keys=True, default=str).encode())
        table.cache["fingerprint"] = h.hexdigest()
    return table.cache["fingerprint"]


# modules that only summarize or draw finished replays: a change there keeps what was replayed
SUMMARY_ONLY = {"studies/replay_stats.py", "studies/figures.py", "studies/report.py", "studies/replay_cache.py"}


def code_fingerprint() -> str:
    """A hash of the lshx package's Python source that a replay's picks can depend on (all of
    it but the summaries)."""
    root = Path(lshx.__file__).resolve().parent
    h = hashlib.sha1()
    for f in sorted(root.rglob("*.py")):
        if f.relative_to(root).as_posix() in SUMMARY_ONLY:
            continue
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


class ReplayCache:
    """Finished replay tasks of one table, one JSON file each, under `folder`."""

    def __init__(self, folder: str | os.PathLike, table: Table) -> None:
        self.folder = Path(folder)
        self.fingerprint = table_fingerprint(table)
        self.code = code_fingerprint()
        self.hits = 0  # tasks read back so far

    def key(self, task: Sequence, seeds: int) -> str:
        method, hpo, n, e0, ei, train_seed = task
        what = {"table": self.fingerprint, "method": asdict(method) if method is not None else None, "hpo": hpo,
                "n": n, "e0": e0, "ei": ei, "train_seed": train_seed, "seeds": seeds, "code": self.code}
        return hashlib.sha1(json.dumps(what, sort_keys=True).encode()).hexdigest()[:24]

    def get(self, task: Sequence, seeds: int) -> Optional[List[dict]]:
        path = self.folder / f"{self.key(task, seeds)}.json"
        try:
            got = json.loads(path.read_text())
        except (OSError, ValueError):  # missing, or unreadable: replayed again
            return None
        if not (isinstance(got, list) and len(got) == seeds):
            return None
        self.hits += 1
        return got

    def put(self, task: Sequence, seeds: int, results: List[dict]) -> None:
        """Atomically: a file is whole or absent, whatever stops the process."""
        write_text_atomic(self.folder / f"{self.key(task, seeds)}.json", json.dumps(results))

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
