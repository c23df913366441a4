"""Where fundusfeat keeps what it computes for later runs: the user's cache folder.

``$FUNDUSFEAT_CACHE_DIR`` when set, else the platform's per-user cache folder
(``$XDG_CACHE_HOME`` or ``~/.cache`` on Linux, ``~/Library/Caches`` on macOS,
``%LOCALAPPDATA%`` on Windows), then ``fundusfeat/``. Nothing in it is needed: deleting
it costs only recomputation.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV_CACHE_DIR = "FUNDUSFEAT_CACHE_DIR"
"""Environment variable that replaces the whole cache folder (tests, clusters)."""


def user_cache_dir(*parts: str) -> Path:
    """The cache folder (``parts`` joined below it); not created."""
    override = os.environ.get(ENV_CACHE_DIR)
    if override:
        base = Path(override)
    elif sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
        base = base / "fundusfeat"
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches" / "fundusfeat"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fundusfeat"
    return base.joinpath(*parts)
