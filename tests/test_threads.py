"""Tests for fundusfeat.features.threads: several images detected side by side."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from fundusfeat import R2D2Fundus
from fundusfeat.features.threads import run_shared


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_results_in_call_order_and_threads_divided(two_threads) -> None:
    seen = []

    def call(i: int):
        seen.append((threading.current_thread(), torch.get_num_threads()))
        return i * i

    out = run_shared([lambda i=i: call(i) for i in range(5)])
    assert out == [0, 1, 4, 9, 16]
    assert {count for _, count in seen} == {1}  # two workers, one torch thread each
    workers = {thread for thread, _ in seen}
    assert len(workers) == 2 and threading.current_thread() in workers  # the caller's share
    assert torch.get_num_threads() == 2


def test_worker_threads_are_kept_and_rebuilt_after_a_fork(two_threads, monkeypatch) -> None:
    """The other share runs in the same kept thread call after call; in a process with
    another pid (a forked child, whose parent's threads did not come along) a new pool
    is made."""
    from fundusfeat.features import threads

    def workers():
        return run_shared([threading.current_thread] * 2)

    first, again = workers(), workers()
    assert first[0] is threading.current_thread() and first[1] is not first[0]
    assert again[1] is first[1]
    pid = threads.os.getpid()
    monkeypatch.setattr(threads.os, "getpid", lambda: pid + 1)
    assert workers()[1] is not first[1]


def test_first_error_in_call_order_is_raised_and_threads_restored(two_threads) -> None:
    ran = []

    def fail(name: str):
        ran.append(name)
        raise ValueError(name)

    calls = [lambda: ran.append("a"), lambda: fail("b"), lambda: fail("c"), lambda: 3]
    with pytest.raises(ValueError, match="^b$"):
        run_shared(calls)
    assert sorted(ran) == ["a", "b", "c"]  # every call ran
    assert torch.get_num_threads() == 2


def test_one_thread_runs_in_the_callers_thread() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        idents = run_shared([threading.get_ident, threading.get_ident])
    finally:
        torch.set_num_threads(before)
    assert idents == [threading.get_ident()] * 2


def test_extract_side_by_side_equals_one_after_the_other(demo_pair, two_threads) -> None:
    """The detector's images side by side (one torch thread each) give bitwise the
    features of the serial run at two threads."""
    a, b, _ = demo_pair
    det = R2D2Fundus.create(device="cpu", target_diameter=384)
    core = det.core
    prepared = [core.prepare(a, None), core.prepare(b, None), core.prepare(a[::-1].copy(), None)]
    shared = core.extract(prepared)
    core.share_threads = False
    serial = core.extract(prepared)
    for x, y in zip(shared, serial, strict=True):
        assert len(x.xy) > 50
        for u, v in zip(x, y, strict=True):
            assert np.array_equal(u, v)
