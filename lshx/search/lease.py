"""One owner per search: a running search holds a lease in its run DB (host, pid, token,
heartbeat). A second process on the same search is refused with one line naming the holder,
or waits for it (--wait). A lease is free again when its holder releases it (the search ended,
finished or not), when its heartbeat is older than the stale time (default 60 s: the holder
died with kill -9 or lost power, on this host or another), or at once when the holder was
on this host and its process is gone.

The heartbeat is written every stale/4 seconds by a thread with its own connection; a holder
that finds its lease taken over (it was stopped longer than the stale time, e.g. a suspended
laptop) stops at its next DB write instead of racing the new owner.
"""
from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from typing import Callable, Optional

from lshx.errors import LshxError
from lshx.search.rundb import RunDB, connect

DEFAULT_STALE_S = 60.0


def default_stale_s() -> float:
    """The stale time: LSHX_LEASE_STALE_S (seconds) or 60."""
    raw = os.environ.get("LSHX_LEASE_STALE_S")
    if raw is None:
        return DEFAULT_STALE_S
    try:
        value = float(raw)
    except ValueError:
        raise LshxError(f"LSHX_LEASE_STALE_S={raw!r}: expected seconds") from None
    if not value > 0:
        raise LshxError(f"LSHX_LEASE_STALE_S={raw!r}: expected a positive number of seconds")
    return value


class SearchBusy(LshxError):
    """The search is being run by another process."""


class LeaseLost(LshxError):
    """This process's lease was taken over: another process goes on with the search."""


def _pid_gone(pid: int) -> bool:
    """Whether process `pid` of this host has ended (a zombie counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


def describe_holder(row: dict, now: Optional[float] = None) -> str:
    ago = (now or time.time()) - row["heartbeat"]
    return f"host {row['host']}, pid {row['pid']} (last heartbeat {ago:.0f} s ago)"


class Lease:
    def __init__(self, db: RunDB, search: str, stale_s: Optional[float] = None) -> None:
        self.db, self.search = db, search
        self.stale_s = default_stale_s() if stale_s is None else float(stale_s)
        if not self.stale_s > 0:
            raise LshxError(f"lease stale time must be > 0 s, got {stale_s}")
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.token = uuid.uuid4().hex
        self.held = False
        self.took_over: Optional[dict] = None  # the stale lease this one replaced
        self.lost: Optional[str] = None  # set by the heartbeat thread
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # ---------------------------------------------------------------- taking it
    def _free(self, row: Optional[dict], now: float) -> bool:
        if row is None or row["token"] == self.token:
            return True
        if now - row["heartbeat"] > self.stale_s:
            return True
        # on this host a dead holder is known at once (and a holder with our own pid is a dead
        # process whose pid this one got again)
        return row["host"] == self.host and (row["pid"] == self.pid or _pid_gone(row["pid"]))

    def try_acquire(self) -> Optional[dict]:
        """Takes the lease if it is free; returns None then, or the holder's row."""
        with self.db.transaction():
            now = time.time()
            row = self.db.get_lease(self.search)
            if not self._free(row, now):
                return row
            if row is not None and row["token"] != self.token:
                self.took_over = row
            self.db.put_lease(self.search, self.host, self.pid, self.token, now)
        self.held = True
        self._start_heartbeat()
        return None

    def acquire(self, wait: bool = False, say: Optional[Callable[[str], None]] = None,
                poll_s: Optional[float] = None) -> None:
        """Takes the lease, or raises SearchBusy naming the holder; with wait, polls until free."""
        told = False
        poll = poll_s if poll_s is not None else min(2.0, self.stale_s / 4)
        while True:
            holder = self.try_acquire()
            if holder is None:
                if self.took_over and say:
                    say(f"search {self.search!r}: took over the lease of {describe_holder(self.took_over)}, "
                        f"which is gone; resuming")
                return
            if not wait:
                raise SearchBusy(f"search {self.search!r} in {self.db.path} is being run by "
                                 f"{describe_holder(holder)}: add --wait to wait for it; a lease whose heartbeat "
                                 f"stops for {self.stale_s:.0f} s is taken over")
            if not told and say:
                say(f"search {self.search!r} is being run by {describe_holder(holder)}; waiting (--wait)")
                told = True
            time.sleep(poll)

    # ---------------------------------------------------------------- keeping it
    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"lshx-lease-{self.search}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        interval = self.stale_s / 4
        conn = None
        try:
            conn = connect(self.db.path)
            while not self._stop.wait(interval):
                try:
                    cur = conn.execute("UPDATE leases SET heartbeat=? WHERE search=? AND token=?",
                                       (time.time(), self.search, self.token))
                except Exception:  # a DB busy past its timeout: try again at the next beat
                    continue
                if cur.rowcount != 1:
                    row = conn.execute("SELECT host, pid, heartbeat FROM leases WHERE search=?",
                                       (self.search,)).fetchone()
                    who = describe_holder({"host": row[0], "pid": row[1], "heartbeat": row[2]}) if row else "nobody"
                    self.lost = (f"this process lost its lease on search {self.search!r} (no heartbeat for more than "
                                 f"{self.stale_s:.0f} s: was it stopped?); it is now held by {who}, which goes on "
                                 f"with it")
                    return
        finally:
            if conn is not None:
                conn.close()

    def check(self) -> None:
        """Raises LeaseLost when another process took the search over."""
        if self.lost:
            raise LeaseLost(self.lost)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.held:
            self.held = False
            try:
                self.db.drop_lease(self.search, self.token)
            except Exception:  # the DB is gone or locked: the lease goes stale by itself
                pass
