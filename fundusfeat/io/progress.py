"""A progress line for long commands (evaluate, bench, register-batch); the CLI prints it."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

Progress = Callable[[int, int, str], None]
"""A progress callback ``(done, total, label)``, called after each unit of work (an image,
a pair); :class:`ProgressLine` is one."""


class ProgressLine:
    """A one-line progress bar on stderr: ``[#####.....] 12/36 label  eta 1m05s``.

    Args:
        enabled: False draws nothing.
        width: characters of the bar.
    """

    def __init__(self, enabled: bool = True, width: int = 24) -> None:
        self.enabled, self.width, self.start = enabled, width, time.monotonic()

    def __call__(self, done: int, total: int, label: str) -> None:
        if not self.enabled:
            return
        filled = self.width * done // max(total, 1)
        elapsed = time.monotonic() - self.start
        eta = int(elapsed / done * (total - done)) if done else 0
        bar = "#" * filled + "." * (self.width - filled)
        line = f"\r[{bar}] {done}/{total} {label[:40]:<40} eta {eta // 60}m{eta % 60:02d}s"
        end = "\n" if done >= total else ""
        print(line, end=end, file=sys.stderr, flush=True)
