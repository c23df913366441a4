"""Several images' detection at once on the CPU, torch's threads shared among them.

Two images detected one after the other each use every torch thread, but the network's
small full-resolution convolutions do not scale with threads (the keypoint branch at
832 x 997 px: 51-64 ms on one thread of an AMD EPYC, 36 ms on two). Run side by side,
one thread each, the two images keep both cores busy. The results do not change: every
operation of the detection gives bitwise the same values at any thread count
(``tests/test_determinism.py``).

The caller's thread runs its share itself and the others run in worker threads kept for
the life of the process (one pool per process, rebuilt after a fork). Threads made for
each call cost more than their creation: a forward in a new thread took 1.3x the time of
the same forward in the main thread (equal with glibc's arenas limited to one: a new
thread's memory arena is faulted in again), and 2-core runs of the bench's nine pairs measured
``register()`` at 0.163-0.187 s per pair with kept workers against 0.181-0.209 s with
new threads, whose exits also slowed the SIFT-CLAHE pipeline run after them in the same
process (0.14-0.16 s per pair, up to 0.23 s).

Torch's thread count is one setting of the process: :func:`run_shared` lowers it while
its workers run and restores it after, so torch work run by other threads of the
process at that moment gets the lowered count (the results, again, are the same).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TypeVar

import torch

T = TypeVar("T")

_LOCK = threading.Lock()
"""One :func:`run_shared` at a time changes torch's thread count (others run serially)."""

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_pid = 0


def _workers(n: int) -> ThreadPoolExecutor:
    """The process's pool of at least ``n`` kept worker threads (called under _LOCK)."""
    global _pool, _pool_size, _pool_pid
    if _pool is None or _pool_pid != os.getpid() or _pool_size < n:
        if _pool is not None and _pool_pid == os.getpid():
            _pool.shutdown(wait=False)
        _pool = ThreadPoolExecutor(n, thread_name_prefix="fundusfeat-shared")
        _pool_size, _pool_pid = n, os.getpid()
    return _pool


def run_shared(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run ``calls`` side by side, torch's CPU threads divided among them.

    With ``n = torch.get_num_threads()`` and ``k = min(len(calls), n)`` workers, each
    worker runs its share of the calls (in order) at ``n // k`` torch threads: the
    caller's thread the first share, kept worker threads the others; with one call, one
    thread, or while another :func:`run_shared` is running, the calls run one after the
    other in the caller's thread. An exception of a call is raised here (the first in
    call order) after every worker has finished.

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
    each = total // workers
    outcomes: list[list[tuple[T | None, BaseException | None]]] = [[] for _ in range(workers)]
    futures: list[Future] = []
    try:
        pool = _workers(workers - 1)
        futures = [
            pool.submit(_run_all, calls[w::workers], outcomes[w], each) for w in range(1, workers)
        ]
        _run_all(calls[0::workers], outcomes[0], each)
    finally:
        wait(futures)
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
    calls: Sequence[Callable[[], T]],
    out: list[tuple[T | None, BaseException | None]],
    threads: int,
) -> None:
    """Run ``calls`` in order at ``threads`` torch threads, appending ``(result, None)``
    or ``(None, exception)``. The count is set in this thread for every share: a thread
    takes torch's count once, at its first op, and a kept worker outlives the call."""
    torch.set_num_threads(threads)
    for call in calls:
        try:
            out.append((call(), None))
        except BaseException as err:  # noqa: BLE001 - re-raised by run_shared
            out.append((None, err))
