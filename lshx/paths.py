"""Paths a command will write, checked before it does any work: a run DB, an output folder.

A writer checks every path and option before it opens anything, so a bad path costs a second,
not an epoch or a 30-minute replay. Write permission is probed for real (a temporary file
created and removed in the first folder that exists on the way), because os.access answers
for the real user id and root passes it whatever the file modes say.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Callable

from lshx.errors import LshxError, WriteError


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _first_existing(path: Path) -> Path:
    p = path
    while not p.exists():
        if p.parent == p:
            break
        p = p.parent
    return p


def _probe_dir(folder: Path, what: str, target: Path) -> None:
    """A file can be created (and removed) in `folder`, an existing path."""
    if not folder.is_dir():
        raise LshxError(f"cannot write {what} {target}: {folder} is not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".lshx-probe-", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise LshxError(f"cannot write {what} {target}: {folder}: {_reason(exc)}") from None


def writable_file(path: str | os.PathLike, what: str = "the file") -> Path:
    """A file lshx will create or update (a run DB): not a folder, not named with a trailing
    slash, in a folder that exists or can be made, and writable if it exists."""
    raw = os.fspath(path)
    if raw.endswith(("/", os.sep)):
        raise LshxError(f"{what} {raw} ends with a slash: give a file name, e.g. {raw.rstrip('/')}.sqlite")
    p = Path(raw)
    if p.is_dir():
        raise LshxError(f"{what} {p} is a folder: give a file name inside it")
    if p.exists():
        try:
            with open(p, "r+b"):
                pass
        except OSError as exc:
            raise LshxError(f"cannot write {what} {p}: {_reason(exc)}") from None
    _probe_dir(_first_existing(p.parent.resolve() if str(p.parent) else Path(".").resolve()), what, p)
    return p


def writable_dir(path: str | os.PathLike, what: str = "the output folder") -> Path:
    """A folder lshx will create (if needed) and write files into."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise LshxError(f"{what} {p} is a file, not a folder")
    _probe_dir(_first_existing(p.resolve()), what, p)
    return p


def readable_file(path: str | os.PathLike, what: str = "the file") -> Path:
    """A file lshx will read: it exists, is a file and can be opened."""
    p = Path(path)
    if not p.exists():
        raise LshxError(f"{what} {p} does not exist")
    if not p.is_file():
        raise LshxError(f"{what} {p} is not a file")
    try:
        with open(p, "rb"):
            pass
    except OSError as exc:
        raise LshxError(f"cannot read {what} {p}: {_reason(exc)}") from None
    return p


def write_atomic(path: str | os.PathLike, write: Callable[[IO], None], binary: bool = False) -> Path:
    """Calls write(f) on a temporary file in the same folder, fsyncs, then renames it over
    `path`: the file is whole or as it was, whatever stops the process. Errors propagate as
    they are (the callers say them in their own words); the temporary file is removed."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else "utf-8") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:  # (a folder made read-only keeps its half-written hidden temp file)
                pass
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """write_atomic of a text; an OSError (a full disk, a read-only folder) is one WriteError."""
    try:
        return write_atomic(path, lambda f: f.write(text))
    except OSError as exc:
        raise WriteError(f"cannot write {path}: {exc.strerror or exc}") from None
