"""Exclusive run locks: one ``register-batch`` run per output file and per cache folder.

:class:`RunLock` holds ``fcntl.flock`` on a small lock file (``<out>.lock``, or
``.lock`` inside the cache folder) for the length of a run and writes its pid there, so a
second run on the same output or cache fails at once with the holder's pid instead of
interleaving rows. A run that ends normally removes its lock file. The lock is released
when the process ends, however it ends (the kernel drops it with the file descriptor,
kill -9 included), so a stale lock file never blocks a later run. Where ``fcntl`` does
not exist (Windows) no lock is taken.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

logger = logging.getLogger(__name__)

_ATTEMPTS = 5


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open ``fd`` is still the file at ``path``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino)


class LockedError(OSError):
    """Another process holds the lock (its pid in the message)."""


class RunLock:
    """An exclusive, non-blocking lock on ``path`` (created if needed).

    Args:
        path: the lock file.
        what: what it protects, for the error message (e.g. the output's path).

    Raises (from :meth:`acquire`):
        LockedError: another process holds it; the message names its pid.
        OSError: the lock file cannot be created.
    """

    def __init__(self, path: Path, what: str) -> None:
        self.path, self.what = Path(path), what
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        for _ in range(_ATTEMPTS):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if fcntl is None:  # pragma: no cover
                logger.warning("no file locking on this platform: %s is not protected", self.what)
                self.fd = fd
                return self
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise LockedError(
                    f"{self.what} is in use by another run (pid {holder}; lock {self.path})"
                ) from None
            if _same_file(fd, self.path):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                self.fd = fd
                return self
            os.close(fd)  # its holder removed it as we locked it: lock the new one
        raise OSError(f"cannot take the lock {self.path}: it keeps being replaced")

    def release(self) -> None:
        """Remove the lock file, then drop the lock (a run that opened the old file sees
        that it was removed and locks a new one)."""
        if self.fd is not None:
            if fcntl is not None and _same_file(self.fd, self.path):
                self.path.unlink(missing_ok=True)
            os.close(self.fd)  # drops the flock
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
