"""The run DB: one SQLite file (WAL) holding searches, candidates, per-epoch evaluations
(validation perplexity, spectrum, checkpoint), every round's decisions and the leases of
the searches running now (one owner per search, lshx.search.lease).

Evaluations are keyed by (eval key, seed, epoch), the eval key hashing everything that
determines them (training and LS settings), so they are idempotent and several searches
under different names share them.

Every connection waits up to busy_timeout() seconds (LSHX_DB_TIMEOUT, default 60) on a busy
DB instead of failing. A file that
is not a run DB (not SQLite, or SQLite with other tables), or one that a newer lshx wrote,
is refused with an LshxError (one line, exit 2 in the CLI) and left as it was: nothing
is written into it, not even the WAL switch.
"""
from __future__ import annotations

from contextlib import contextmanager
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from lshx.errors import LshxError, WriteError

# PRAGMA user_version of the DBs this lshx writes: 0 = written before the version was recorded
# (read and migrated), 2 = with the leases table. A DB of a higher version is refused.
SCHEMA_VERSION = 2


def busy_timeout() -> float:
    """Seconds a connection waits on a busy DB: LSHX_DB_TIMEOUT (a number > 0), default 60."""
    raw = os.environ.get("LSHX_DB_TIMEOUT", "60")
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise LshxError(f"LSHX_DB_TIMEOUT must be a number of seconds > 0, got {raw!r}")
    return value

SQLITE_MAGIC = b"SQLite format 3\x00"

TABLES = {
    "searches": "name TEXT PRIMARY KEY, task TEXT, args TEXT, created REAL, status TEXT, result TEXT",
    "candidates": "search TEXT, cid INTEGER, config TEXT, config_hash TEXT, eval_key TEXT, origin TEXT, "
                  "round INTEGER, status TEXT, ckpt_dir TEXT, PRIMARY KEY (search, cid)",
    "evals": "eval_key TEXT, seed INTEGER, epoch INTEGER, val_ppl REAL, spectrum TEXT, diverged INTEGER, "
             "seconds REAL, ckpt TEXT, created REAL, train_loss REAL, extra TEXT, PRIMARY KEY (eval_key, seed, epoch)",
    "tests": "eval_key TEXT, seed INTEGER, test_ppl REAL, PRIMARY KEY (eval_key, seed)",
    "rounds": "search TEXT, round INTEGER, epoch INTEGER, alive TEXT, eliminated TEXT, inserted TEXT, "
              "distances TEXT, PRIMARY KEY (search, round)",
    "leases": "search TEXT PRIMARY KEY, host TEXT, pid INTEGER, heartbeat REAL, token TEXT, started REAL",
}
# the columns this lshx reads in each table; those added since the first schema are added to
# an older DB (NULL) instead
ADDED = {"evals": (("train_loss", "REAL"), ("extra", "TEXT"))}


def _columns(spec: str) -> List[str]:
    return [part.split()[0] for part in spec.split(", PRIMARY KEY")[0].split(", ")]


class GuardedConnection:
    """An open run DB's connection whose SQLite failures (a folder made read-only, a full
    disk, a writer holding the DB past the busy timeout, a damaged page) are one LshxError
    naming the file (WriteError for statements that write), not a traceback. The DB itself
    stays as it was: every write is a statement or a transaction."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.raw, self.path = conn, path

    def execute(self, sql: str, params=()):
        try:
            return self.raw.execute(sql, params)
        except sqlite3.DatabaseError as exc:
            if sql.lstrip()[:6].upper() in ("SELECT", "PRAGMA") and "=" not in sql:
                raise LshxError(f"cannot read the run DB {self.path}: {exc}") from None
            raise WriteError(f"cannot write {self.path}: {exc}; rerun with --resume") from None

    def close(self) -> None:
        self.raw.close()


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection that waits on a busy DB (autocommit; BEGIN IMMEDIATE where needed)."""
    return sqlite3.connect(str(path), timeout=busy_timeout(), isolation_level=None)


class RunDB:
    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        """readonly: reads a finished DB without writing to it, not even its journal mode (a
        committed table stays byte for byte as it is, and no -wal/-shm files appear beside it)."""
        self.path = Path(path)
        self._check_file()
        if readonly:
            self._open_readonly()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = connect(self.path)
        except sqlite3.Error as exc:
            raise LshxError(f"cannot open the run DB {self.path}: {exc}") from None
        try:
            if not self._schema_ok():  # a new DB, or one an older lshx wrote
                self._set_wal()
                self._create_or_migrate()
            else:
                self._set_wal()
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise LshxError(f"cannot read the run DB {self.path}: {exc}") from None
        except BaseException:
            self.conn.close()
            raise
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn = GuardedConnection(self.conn, self.path)

    def _open_readonly(self) -> None:
        if not self.path.is_file():
            raise LshxError(f"no run DB at {self.path}")
        try:
            self.conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                        timeout=busy_timeout(), isolation_level=None)
        except sqlite3.Error as exc:
            raise LshxError(f"cannot read the run DB {self.path}: {exc}") from None
        try:
            ok = self._schema_ok()
        except sqlite3.Error as exc:  # e.g. a truncated file: closed like every other refusal
            self.conn.close()
            raise LshxError(f"cannot read the run DB {self.path}: {exc}") from None
        except BaseException:
            self.conn.close()
            raise
        if not ok:
            empty = self.conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0
            self.conn.close()
            if empty:
                raise LshxError(f"{self.path} is empty: no run DB was written there")
            raise LshxError(f"the run DB {self.path} was written by an older lshx: open it once with a command "
                            f"that writes (e.g. lshx search ... --db {self.path} --resume) to bring it up to date")
        self.conn = GuardedConnection(self.conn, self.path)

    def _check_file(self) -> None:
        if self.path.is_dir():
            raise LshxError(f"the run DB {self.path} is a directory")
        if self.path.is_file() and self.path.stat().st_size > 0:
            try:
                with open(self.path, "rb") as f:
                    head = f.read(len(SQLITE_MAGIC))
            except OSError as exc:
                raise LshxError(f"cannot read the run DB {self.path}: {exc.strerror}") from None
            if head != SQLITE_MAGIC:
                raise LshxError(f"{self.path} is not a run DB (not an SQLite file)")

    def _schema_ok(self) -> bool:
        """Checks what is there without writing: False when tables or columns must be added
        (a new DB, an older run DB); an LshxError when the file is not a run DB this lshx can
        read."""
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if version > SCHEMA_VERSION:
            raise LshxError(f"the run DB {self.path} was written by a newer lshx (schema version {version}; this "
                            f"lshx reads up to {SCHEMA_VERSION}): upgrade lshx")
        if tables and "searches" not in tables:
            shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
            raise LshxError(f"{self.path} is an SQLite file but not a run DB (its tables: {shown})")
        complete = True
        for table, spec in TABLES.items():
            if table not in tables:
                complete = False
                continue
            have = {r[1] for r in self.conn.execute(f"PRAGMA table_info({table})")}
            added = {c for c, _ in ADDED.get(table, ())}
            missing = [c for c in _columns(spec) if c not in have and c not in added]
            if missing:
                raise LshxError(f"the run DB {self.path} cannot be read by this lshx: its table {table} lacks "
                                f"{', '.join(missing)} (another lshx version wrote it)")
            if added - have:
                complete = False
        return complete and version == SCHEMA_VERSION

    def _create_or_migrate(self) -> None:
        """Creates the missing tables and columns, in one transaction: two processes opening a
        new DB at the same moment do it one after the other (the second finds it done)."""
        with self.transaction():
            self._schema_ok()  # again, under the write lock: another process may have done it
            tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            for table, spec in TABLES.items():
                if table not in tables:
                    self.conn.execute(f"CREATE TABLE {table} ({spec})")
            for table, cols in ADDED.items():
                have = {r[1] for r in self.conn.execute(f"PRAGMA table_info({table})")}
                for col, kind in cols:
                    if col not in have:
                        self.conn.execute(f"ALTER TABLE {table} ADD COLUMN {col} {kind}")
            self.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _set_wal(self, wait_s: Optional[float] = None) -> None:
        """Switches to WAL. Changing the journal mode ignores SQLite's busy timeout, so a
        second process opening a new DB at the same moment got 'database is locked': retry."""
        deadline = time.monotonic() + (busy_timeout() if wait_s is None else wait_s)
        while True:
            try:
                self.conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything written inside lands together or not at all (a crash in between leaves
        the DB as before). Not re-entrant."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # ----------------------------------------------------------------- searches
    def get_search(self, name: str) -> Optional[dict]:
        row = self.conn.execute("SELECT task, args, status, result FROM searches WHERE name=?", (name,)).fetchone()
        if row is None:
            return None
        return {"task": row[0], "args": json.loads(row[1]), "status": row[2],
                "result": json.loads(row[3]) if row[3] else None}

    def create_search(self, name: str, task: str, args: dict) -> None:
        self.conn.execute("INSERT INTO searches VALUES (?,?,?,?,?,NULL)",
                          (name, task, json.dumps(args, sort_keys=True), time.time(), "running"))

    def finish_search(self, name: str, result: dict) -> None:
        self.conn.execute("UPDATE searches SET status='done', result=? WHERE name=?", (json.dumps(result), name))

    def search_names(self) -> List[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM searches ORDER BY created")]

    # ----------------------------------------------------------------- candidates
    def add_candidate(self, search: str, cid: int, config: dict, config_hash: str, eval_key: str, origin: str,
                      round_: int, ckpt_dir: str) -> None:
        self.conn.execute("INSERT OR IGNORE INTO candidates VALUES (?,?,?,?,?,?,?,?,?)",
                          (search, cid, json.dumps(config, sort_keys=True), config_hash, eval_key, origin, round_,
                           "alive", ckpt_dir))

    def set_status(self, search: str, cid: int, status: str) -> None:
        self.conn.execute("UPDATE candidates SET status=? WHERE search=? AND cid=?", (status, search, cid))

    def candidates(self, search: str) -> List[dict]:
        rows = self.conn.execute("SELECT cid, config, config_hash, eval_key, origin, round, status, ckpt_dir "
                                 "FROM candidates WHERE search=? ORDER BY cid", (search,))
        return [{"cid": r[0], "config": json.loads(r[1]), "config_hash": r[2], "eval_key": r[3], "origin": r[4],
                 "round": r[5], "status": r[6], "ckpt_dir": r[7]} for r in rows]

    # ----------------------------------------------------------------- evaluations
    def put_eval(self, eval_key: str, seed: int, ev: dict, ckpt: str) -> None:
        self.conn.execute("INSERT OR IGNORE INTO evals (eval_key, seed, epoch, val_ppl, spectrum, diverged, seconds, "
                          "ckpt, created, train_loss, extra) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                          (eval_key, seed, ev["epoch"], ev["val_ppl"],
                           json.dumps(ev["spectrum"]) if ev.get("spectrum") is not None else None,
                           int(bool(ev.get("diverged"))), ev.get("seconds"), ckpt, ev.get("created", time.time()),
                           ev.get("train_loss"), json.dumps(ev["extra"]) if ev.get("extra") else None))

    def evals(self, eval_key: str, seed: int) -> Dict[int, dict]:
        rows = self.conn.execute("SELECT epoch, val_ppl, spectrum, diverged, seconds, ckpt, created, train_loss, extra "
                                 "FROM evals WHERE eval_key=? AND seed=? ORDER BY epoch", (eval_key, seed))
        return {r[0]: {"epoch": r[0], "val_ppl": r[1], "spectrum": json.loads(r[2]) if r[2] else None,
                       "diverged": bool(r[3]), "seconds": r[4], "ckpt": r[5], "created": r[6], "train_loss": r[7],
                       "extra": json.loads(r[8]) if r[8] else {}} for r in rows}

    # ----------------------------------------------------------------- test perplexities (tables)
    def put_test(self, eval_key: str, seed: int, test_ppl: float) -> None:
        self.conn.execute("INSERT OR REPLACE INTO tests VALUES (?,?,?)", (eval_key, seed, test_ppl))

    def tests(self, seed: int) -> Dict[str, float]:
        return {r[0]: r[1] for r in self.conn.execute("SELECT eval_key, test_ppl FROM tests WHERE seed=?", (seed,))}

    # ----------------------------------------------------------------- rounds
    def put_round(self, search: str, round_: int, epoch: int, alive: list, eliminated: list, inserted: list,
                  distances: dict) -> None:
        self.conn.execute("INSERT OR REPLACE INTO rounds VALUES (?,?,?,?,?,?,?)",
                          (search, round_, epoch, json.dumps(alive), json.dumps(eliminated), json.dumps(inserted),
                           json.dumps({str(k): v for k, v in distances.items()})))

    def rounds(self, search: str) -> List[dict]:
        rows = self.conn.execute("SELECT round, epoch, alive, eliminated, inserted, distances FROM rounds "
                                 "WHERE search=? ORDER BY round", (search,))
        return [{"round": r[0], "epoch": r[1], "alive": json.loads(r[2]), "eliminated": json.loads(r[3]),
                 "inserted": json.loads(r[4]), "distances": {int(k): v for k, v in json.loads(r[5]).items()}}
                for r in rows]

    # ----------------------------------------------------------------- leases (lshx.search.lease)
    def get_lease(self, search: str) -> Optional[dict]:
        row = self.conn.execute("SELECT host, pid, heartbeat, token, started FROM leases WHERE search=?",
                                (search,)).fetchone()
        return None if row is None else {"search": search, "host": row[0], "pid": row[1], "heartbeat": row[2],
                                         "token": row[3], "started": row[4]}

    def put_lease(self, search: str, host: str, pid: int, token: str, now: float) -> None:
        self.conn.execute("INSERT OR REPLACE INTO leases VALUES (?,?,?,?,?,?)", (search, host, pid, now, token, now))

    def beat_lease(self, search: str, token: str, now: float) -> bool:
        """Renews the lease; False when it is no longer this token's (taken over)."""
        cur = self.conn.execute("UPDATE leases SET heartbeat=? WHERE search=? AND token=?", (now, search, token))
        return cur.rowcount == 1

    def drop_lease(self, search: str, token: str) -> None:
        self.conn.execute("DELETE FROM leases WHERE search=? AND token=?", (search, token))


class MemoryRunDB:
    """RunDB's interface in memory, with no SQL and no JSON: for replays on a table, which
    run the search engine thousands of times and keep nothing."""

    def __init__(self) -> None:
        self.path = Path("memory.sqlite")
        self._searches: Dict[str, dict] = {}
        self._cands: Dict[str, Dict[int, dict]] = {}
        self._evals: Dict[tuple, Dict[int, dict]] = {}
        self._rounds: Dict[str, Dict[int, dict]] = {}
        self._tests: Dict[tuple, float] = {}

    def close(self) -> None:
        pass

    @contextmanager
    def transaction(self) -> Iterator[None]:
        yield

    def get_search(self, name: str) -> Optional[dict]:
        return self._searches.get(name)

    def create_search(self, name: str, task: str, args: dict) -> None:
        self._searches[name] = {"task": task, "args": args, "status": "running", "result": None}

    def finish_search(self, name: str, result: dict) -> None:
        self._searches[name].update(status="done", result=result)

    def search_names(self) -> List[str]:
        return list(self._searches)

    def add_candidate(self, search: str, cid: int, config: dict, config_hash: str, eval_key: str, origin: str,
                      round_: int, ckpt_dir: str) -> None:
        self._cands.setdefault(search, {}).setdefault(cid, {
            "cid": cid, "config": config, "config_hash": config_hash, "eval_key": eval_key, "origin": origin,
            "round": round_, "status": "alive", "ckpt_dir": ckpt_dir})

    def set_status(self, search: str, cid: int, status: str) -> None:
        self._cands[search][cid]["status"] = status

    def candidates(self, search: str) -> List[dict]:
        return [dict(c) for _, c in sorted(self._cands.get(search, {}).items())]

    def put_eval(self, eval_key: str, seed: int, ev: dict, ckpt: str) -> None:
        self._evals.setdefault((eval_key, seed), {}).setdefault(ev["epoch"], ev)

    def evals(self, eval_key: str, seed: int) -> Dict[int, dict]:
        return dict(self._evals.get((eval_key, seed), {}))

    def put_test(self, eval_key: str, seed: int, test_ppl: float) -> None:
        self._tests[(eval_key, seed)] = test_ppl

    def tests(self, seed: int) -> Dict[str, float]:
        return {k: v for (k, s), v in self._tests.items() if s == seed}

    def put_round(self, search: str, round_: int, epoch: int, alive: list, eliminated: list, inserted: list,
                  distances: dict) -> None:
        self._rounds.setdefault(search, {})[round_] = {
            "round": round_, "epoch": epoch, "alive": list(alive), "eliminated": list(eliminated),
            "inserted": list(inserted), "distances": {int(k): v for k, v in distances.items()}}

    def rounds(self, search: str) -> List[dict]:
        return [r for _, r in sorted(self._rounds.get(search, {}).items())]
