"""Several images' detection at once on the CPU, torch's threads shared among them.

Two images detected one after the other each use every torch thread, but the network's
small full-resolution convolutions do not scale with threads (the keypoint branch at
832 x 997 px: 51-64 ms on one thread of an AMD EPYC, 36 ms on two). Run side by side,
one thread each, the two images keep both cores busy. The results do not change: every
operation of the detection gives bitwise the same values at any thread count
(``tests/test_determinism.py``).

Torch's thread count is one setting of the process: :func:`run_shared` lowers it while
its workers run and restores it after, so torch work run by other threads of the
process at that moment gets the lowered count (the results, again, are the same).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

T = TypeVar("T")

_LOCK = threading.Lock()
"""One :func:`run_shared` at a time changes torch's thread count (others run serially)."""


def run_shared(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run ``calls`` side by side, torch's CPU threads divided among them.

    With ``n = torch.get_num_threads()`` and ``k = min(len(calls), n)`` workers, each
    worker runs its share of the calls (in order) at ``n // k`` torch threads; with one
    call, one thread, or while another :func:`run_shared` is running, the calls run one
    after the other in the caller's thread. An exception of a call is raised here (the
    first in call order) after every worker has finished.

    Args:
        calls: functions of no arguments; each runs its own ``torch.inference_mode`` or
            ``no_grad`` if it needs one (grad mode is per thread).

    Returns:
        The calls' results, in order.
    """
    total = torch.get_num_threads()
    workers = min(len(calls), total)
    if workers < 2 or not _LOCK.acquire(blocking=False):
        return [call() for call in calls]
    try:
        torch.set_num_threads(total // workers)
        # fresh threads: each takes torch's thread count as it is now, at its first op
        outcomes: list[list[tuple[T | None, BaseException | None]]] = [[] for _ in range(workers)]
        threads = [
            threading.Thread(target=_run_all, args=(calls[w::workers], outcomes[w]))
            for w in range(workers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        torch.set_num_threads(total)
        _LOCK.release()
    ordered: list[tuple[T | None, BaseException | None]] = [(None, None)] * len(calls)
    for w, outcome in enumerate(outcomes):
        ordered[w::workers] = outcome
    for _, error in ordered:
        if error is not None:
            raise error
    return [value for value, _ in ordered]  # type: ignore[misc]


def _run_all(
    calls: Sequence[Callable[[], T]], out: list[tuple[T | None, BaseException | None]]
) -> None:
    """Run ``calls`` in order, appending ``(result, None)`` or ``(None, exception)``."""
    for call in calls:
        try:
            out.append((call(), None))
        except BaseException as err:  # noqa: BLE001 - re-raised by run_shared
            out.append((None, err))
