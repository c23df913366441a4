"""The output CSV of ``register-batch`` as a journal: rows appended whole, resumable.

- **One row, one write.** Each row is one physical line (newlines inside values become
  spaces) written with a single ``os.write`` on a file opened ``O_APPEND``; the file is
  fsynced at checkpoints (every :data:`SYNC_ROWS` rows or :data:`SYNC_SECONDS` seconds)
  and when the run ends.
- **A partial last line is cut off** on resume (a kill during a write), and its pair is
  redone; every line before it is checked to be a whole row of :data:`columns`.
- **One header, ever**: written when the file is empty, never again.
- **It knows what made it.** A sidecar ``<out>.meta.json`` records the settings the rows
  depend on (detector model, weights sha256 and settings, registration options, the
  table's content hash). A resume with other settings is refused, naming what differs,
  unless ``restart`` empties the journal first.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SYNC_ROWS = 64
"""Rows between two fsyncs of the journal (at most)."""

SYNC_SECONDS = 5.0
"""Seconds between two fsyncs of the journal (at most, while rows come)."""


class JournalError(ValueError):
    """The output cannot be resumed: foreign, damaged in the middle, or made with other
    settings (the message says which and how to go on)."""


def meta_path(out: Path) -> Path:
    """The sidecar file recording what produced ``out``."""
    return out.with_name(out.name + ".meta.json")


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: value}


def differences(old: dict, new: dict) -> list[str]:
    """``"name: old -> new"`` for every (dotted) setting that differs."""
    a, b = _flat(old), _flat(new)
    return [
        f"{k}: {a.get(k, '(none)')} -> {b.get(k, '(none)')}"
        for k in sorted(set(a) | set(b))
        if a.get(k, "(none)") != b.get(k, "(none)")
    ]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it over ``path``;
    the file gets the mode a new file gets under the user's umask (not mkstemp's 0600)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def format_line(values: Sequence[str]) -> bytes:
    """One CSV line (``\\n``-terminated) of ``values``, newlines inside values as spaces."""
    buffer = io.StringIO()
    clean = [str(v).replace("\r", " ").replace("\n", " ") for v in values]
    csv.writer(buffer, lineterminator="\n").writerow(clean)
    return buffer.getvalue().encode("utf-8")


class Journal:
    """An open results journal (see the module docstring).

    Use :meth:`open`; then :meth:`write` each row and :meth:`close` at the end.

    Attributes:
        path: the output CSV.
        columns: its header.
        rows: the whole rows that were already there, in file order (dicts).
    """

    def __init__(self, path: Path, columns: Sequence[str], fd: int, rows: list[dict]) -> None:
        self.path, self.columns, self.fd, self.rows = path, tuple(columns), fd, rows
        self.unsynced, self.synced_at = 0, time.monotonic()

    @classmethod
    def open(
        cls,
        path: str | Path,
        columns: Sequence[str],
        meta: dict,
        *,
        restart: bool = False,
        drop: Callable[[dict], bool] | None = None,
    ) -> Journal:
        """Open (or create) the journal at ``path`` for rows made with ``meta``.

        Args:
            path: the output CSV.
            columns: its header.
            meta: JSON-able record of what the rows depend on (compared with the sidecar).
            restart: start over: the existing rows are discarded.
            drop: rows to discard and redo (``--retry-failed``); the file is rewritten
                without them (atomically).

        Raises:
            JournalError: a file that is not such a journal, a damaged line before the
                last, or rows made with other settings (the differences are named).
            OSError: the file cannot be read or written.
        """
        path = Path(path)
        columns = tuple(columns)
        data = path.read_bytes() if path.is_file() else b""
        header = format_line(columns)
        if data and not header.startswith(data[: len(header)]) and not data.startswith(header):
            first = data.split(b"\n", 1)[0][:200].decode("utf-8", "replace")
            raise JournalError(
                f"{path} exists and is not a results table of this command (first line "
                f"{first!r}); choose another --out"
            )
        if restart:
            data = b""
            if path.is_file() and path.stat().st_size:
                _write_atomic(path, data)  # emptied before the new settings are recorded
        elif data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            logger.warning(
                "%s: cut off a partial last line (%d bytes, a run killed while writing); "
                "its pair is redone",
                path,
                len(data) - cut,
            )
            data = data[:cut]
        rows = cls._parse(path, data, columns)
        sidecar = meta_path(path)
        if rows:
            if not sidecar.is_file():
                raise JournalError(
                    f"{path} has rows but no record of the settings that made them "
                    f"({sidecar}); pass --restart to start over"
                )
            try:
                old = json.loads(sidecar.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                raise JournalError(f"{sidecar} is unreadable ({err}); pass --restart") from err
            diff = differences(old, meta)
            if diff:
                raise JournalError(
                    f"{path} was made with other settings ({'; '.join(diff)}): resume "
                    "with the same ones, or pass --restart to start over"
                )
        else:
            _write_atomic(sidecar, json.dumps(meta, indent=1, sort_keys=True).encode())
        if drop is not None and any(drop(r) for r in rows):
            kept = [r for r in rows if not drop(r)]
            logger.info("%s: %d rows to redo", path, len(rows) - len(kept))
            rows = kept
            data = header + b"".join(format_line([r[c] for c in columns]) for r in rows)
            _write_atomic(path, data)
        elif len(data) != (path.stat().st_size if path.is_file() else -1):
            _write_atomic(path, data)  # created, restarted or cut
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        journal = cls(path, columns, fd, rows)
        if not data:
            os.write(fd, header)
            os.fsync(fd)
        return journal

    @staticmethod
    def _parse(path: Path, data: bytes, columns: tuple[str, ...]) -> list[dict]:
        lines = data.decode("utf-8", "replace").split("\n")[:-1]
        rows = []
        for number, line in enumerate(lines[1:], start=2):  # line 1: the header
            values = next(csv.reader([line]), [])
            if len(values) != len(columns):
                raise JournalError(
                    f"{path}, line {number}: not a whole row ({len(values)} of "
                    f"{len(columns)} fields): the file was edited or damaged; pass --restart"
                )
            rows.append(dict(zip(columns, values, strict=True)))
        return rows

    def write(self, row: dict) -> None:
        """Append one row (a single write), fsyncing at checkpoints."""
        line = format_line([row[c] for c in self.columns])
        written = os.write(self.fd, line)
        while written < len(line):  # a short write (disk nearly full, a signal)
            written += os.write(self.fd, line[written:])
        self.unsynced += 1
        now = time.monotonic()
        if self.unsynced >= SYNC_ROWS or now - self.synced_at >= SYNC_SECONDS:
            self.sync()

    def sync(self) -> None:
        """fsync the journal (a checkpoint)."""
        if self.fd is not None and self.unsynced:
            os.fsync(self.fd)
        self.unsynced, self.synced_at = 0, time.monotonic()

    def close(self) -> None:
        if self.fd is not None:
            self.sync()
            os.close(self.fd)
            self.fd = None
