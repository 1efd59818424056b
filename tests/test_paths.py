"""lshx.paths: atomic writes keep the old file whole, whatever stops the write."""
import os

import pytest

from lshx.errors import WriteError
from lshx.paths import write_atomic, write_text_atomic


class Crash(Exception):
    pass


def test_an_interrupted_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "r.json"
    write_text_atomic(path, "old")

    def half(f):
        f.write("half of the new")
        raise Crash

    with pytest.raises(Crash):
        write_atomic(path, half)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["r.json"]
    write_atomic(tmp_path / "sub" / "b.bin", lambda f: f.write(b"\x00\x01"), binary=True)
    assert (tmp_path / "sub" / "b.bin").read_bytes() == b"\x00\x01"


def test_a_read_only_folder_is_one_write_error(tmp_path, monkeypatch):
    """(As root a chmod 500 folder stays writable: the refusal is simulated where it happens.)"""
    import errno
    import tempfile

    def refused(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    with pytest.raises(WriteError, match=r"cannot write .*x\.json: Permission denied"):
        write_text_atomic(tmp_path / "x.json", "{}")


def test_a_full_disk_is_one_write_error(tmp_path, monkeypatch):
    import errno

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(WriteError, match="cannot write .*x.json: No space left on device"):
        write_text_atomic(tmp_path / "x.json", "{}")
    assert os.listdir(tmp_path) == []
