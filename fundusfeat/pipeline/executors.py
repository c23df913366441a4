"""Where :func:`fundusfeat.pipeline.batch.register_dataset`'s tasks run: this process,
worker processes on this machine, or a Dask cluster.

Each executor runs ``fn(job, *item)`` for every item and yields ``(item, value, error)``
as tasks finish (``error`` is "" or why the task itself failed: a lost Dask worker after
its retries, an exception). The job (detector, options, cache) reaches each worker once.

Workers die with their parent: a worker process asks the kernel for SIGKILL when its
parent dies (``prctl(PR_SET_PDEATHSIG)`` on Linux), and :meth:`close` with
``abort=True`` (after SIGTERM/SIGINT, an exception) terminates the workers instead of
waiting for their tasks. Dask tasks are retried (:data:`DASK_RETRIES`) when a worker is
lost.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pickle
import re
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

logger = logging.getLogger(__name__)

DASK_RETRIES = 3
"""Times a Dask task is resubmitted when the worker running it is lost."""

DASK_CONNECT_TIMEOUT_S = 20
"""Seconds to wait for a ``tcp://`` scheduler before giving up (exit 2)."""

_PR_SET_PDEATHSIG = 1


class ExecutorError(ValueError):
    """The executor cannot be started (a bad ``dask`` address, no scheduler there)."""


def die_with_parent(parent_pid: int | None = None) -> None:
    """Make this process receive SIGKILL when its parent dies (Linux; elsewhere nothing).

    ``parent_pid``: the parent's pid when this process started; if it is already gone
    (the parent died before this call), exit at once.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no prctl
            logger.debug("prctl(PR_SET_PDEATHSIG) unavailable")
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


class Serial:
    """``workers=1``: this process, in order."""

    def __init__(self, job: Any) -> None:
        self.job = job

    def map_unordered(self, fn: Callable, items: Sequence[tuple]) -> Iterable[tuple]:
        for item in items:
            yield item, fn(self.job, *item), ""

    def close(self, abort: bool = False) -> None:
        pass


_process_job: Any = None


def _init_process(job: bytes, threads: int, parent_pid: int) -> None:
    """A worker's start: first die with the parent, then unpickle the job (importing
    torch takes seconds: the job comes as bytes so that nothing runs before the prctl)."""
    global _process_job
    die_with_parent(parent_pid)
    import torch

    torch.set_num_threads(threads)
    _process_job = pickle.loads(job)


def _in_process(fn: Callable, *item: Any) -> Any:
    return fn(_process_job, *item)


_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class ThreadLimit:
    """Worker processes started while this is active get ``threads`` BLAS/OpenMP threads
    (set in the environment they inherit: numpy's BLAS reads it only at start-up, and N
    processes each spinning up every core's worth of threads would fight)."""

    def __init__(self, threads: int) -> None:
        self.saved = {k: os.environ.get(k) for k in _THREAD_VARIABLES}
        os.environ.update({k: str(threads) for k in _THREAD_VARIABLES})

    def restore(self) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Processes:
    """``workers`` processes on this machine, each with ``threads`` torch threads."""

    def __init__(self, job: Any, workers: int, threads: int) -> None:
        import multiprocessing

        self.limit = ThreadLimit(threads)
        self.pool = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_process,
            initargs=(pickle.dumps(job), threads, os.getpid()),
        )

    def map_unordered(self, fn: Callable, items: Sequence[tuple]) -> Iterable[tuple]:
        futures = {self.pool.submit(_in_process, fn, *item): item for item in items}
        for future in as_completed(futures):
            try:
                value = future.result()
            except BrokenProcessPool:
                raise
            except Exception as err:  # the task's own exception
                yield futures[future], None, f"{type(err).__name__}: {err}"
                continue
            yield futures[future], value, ""

    def close(self, abort: bool = False) -> None:
        if abort:
            # the pool's own shutdown waits for running tasks; kill the workers instead
            processes = list(getattr(self.pool, "_processes", {}).values())
            self.pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.kill()
        else:
            self.pool.shutdown()
        self.limit.restore()


def _with_threads(threads: int | None, fn: Callable, *args: Any) -> Any:
    """``fn(*args)`` with ``threads`` torch threads (a Dask nanny starts its workers with
    one thread whatever the environment says; None keeps the worker's setting)."""
    if threads is not None:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    return fn(*args)


def _die_with_parent_plugin() -> Any:
    """A Dask worker plugin: each worker of a LocalCluster (restarted ones too) dies with
    this process."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class DieWithParent(WorkerPlugin):
        name = "fundusfeat-die-with-parent"

        def setup(self, worker: Any) -> None:
            die_with_parent()

    return DieWithParent()


class Dask:
    """Tasks on a Dask cluster: ``local:N`` (a LocalCluster of N single-threaded worker
    processes) or the address of a running scheduler (``tcp://host:port``)."""

    def __init__(self, job: Any, address: str) -> None:
        match = re.fullmatch(r"local:(\d+)", address)
        if match is None and not re.fullmatch(r"[a-z]+://\S+|[\w.-]+:\d+", address):
            raise ExecutorError(
                f"--dask must be local:N or a scheduler address (tcp://host:port), got {address!r}"
            )
        if match is not None and int(match.group(1)) < 1:
            raise ExecutorError(f"--dask local:N needs N >= 1 workers, got {address!r}")
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError as err:  # the optional extra
            raise ExecutorError("dask is not installed: pip install fundusfeat[dask]") from err
        self.cluster, self.limit, self.threads = None, None, None
        if match:
            n = int(match.group(1))
            self.threads = max(1, (os.cpu_count() or n) // n)
            self.limit = ThreadLimit(self.threads)
            self.cluster = LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None
            )
            self.client = Client(self.cluster)
            self.client.register_plugin(_die_with_parent_plugin())
        else:
            try:
                self.client = Client(address, timeout=DASK_CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError, ValueError) as err:
                raise ExecutorError(f"cannot reach the Dask scheduler at {address}: {err}") from err
        self.job = self.client.scatter(job, broadcast=True)

    def map_unordered(self, fn: Callable, items: Sequence[tuple]) -> Iterable[tuple]:
        from dask.distributed import as_completed as dask_completed

        futures = {
            self.client.submit(
                _with_threads,
                self.threads,
                fn,
                self.job,
                *item,
                pure=False,
                retries=DASK_RETRIES,
            ): item
            for item in items
        }
        for future in dask_completed(futures):
            try:
                value = future.result()
            except Exception as err:  # KilledWorker after the retries, the task's error
                yield futures[future], None, f"{type(err).__name__}: {err}"
                continue
            yield futures[future], value, ""

    def close(self, abort: bool = False) -> None:
        try:
            self.client.close()
            if self.cluster is not None:
                self.cluster.close()
        finally:
            if self.limit is not None:
                self.limit.restore()


def make_executor(job: Any, workers: int, dask: str | None) -> Any:
    """The executor of ``workers`` processes, or of the Dask address ``dask``."""
    if dask is not None:
        return Dask(job, dask)
    if workers == 1:
        return Serial(job)
    threads = max(1, (os.cpu_count() or workers) // workers)
    return Processes(job, workers, threads)
