"""register-batch's journal and locks: --restart empties the rows before it records the
new settings, files get the user's umask, a finished run removes its lock file."""

from __future__ import annotations

import os

import pytest

from fundusfeat.pipeline import journal as journal_module
from fundusfeat.pipeline.journal import Journal, JournalError, meta_path
from fundusfeat.pipeline.locks import LockedError, RunLock

COLUMNS = ("index", "value")


def _journal_with_rows(path, meta):
    j = Journal.open(path, COLUMNS, meta)
    for k in range(3):
        j.write({"index": str(k), "value": "x"})
    j.close()


def test_restart_empties_the_rows_before_recording_the_new_settings(tmp_path, monkeypatch):
    out = tmp_path / "r.csv"
    _journal_with_rows(out, {"model": "a"})
    real = journal_module._write_atomic

    def killed_at_the_sidecar(path, data):
        if path == meta_path(out):
            raise KeyboardInterrupt  # the run is killed between the two writes
        real(path, data)

    monkeypatch.setattr(journal_module, "_write_atomic", killed_at_the_sidecar)
    with pytest.raises(KeyboardInterrupt):
        Journal.open(out, COLUMNS, {"model": "b"}, restart=True)
    monkeypatch.setattr(journal_module, "_write_atomic", real)
    # no old row can be accepted under the new settings
    assert out.read_bytes() == b""
    j = Journal.open(out, COLUMNS, {"model": "b"})
    assert j.rows == []
    j.close()


def test_old_rows_with_other_settings_are_refused(tmp_path):
    out = tmp_path / "r.csv"
    _journal_with_rows(out, {"model": "a"})
    with pytest.raises(JournalError, match="other settings"):
        Journal.open(out, COLUMNS, {"model": "b"})


def test_files_get_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "r.csv"
        _journal_with_rows(out, {"model": "a"})
        Journal.open(out, COLUMNS, {"model": "a"}, restart=True).close()
        assert out.stat().st_mode & 0o777 == 0o644
        assert meta_path(out).stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)


def test_a_released_lock_removes_its_file_and_can_be_taken_again(tmp_path):
    path = tmp_path / "o.csv.lock"
    lock = RunLock(path, "o.csv").acquire()
    with pytest.raises(LockedError, match=f"pid {os.getpid()}"):
        RunLock(path, "o.csv").acquire()
    lock.release()
    assert not path.exists()
    again = RunLock(path, "o.csv").acquire()
    assert path.read_text().strip() == str(os.getpid())
    again.release()
    assert not path.exists()
