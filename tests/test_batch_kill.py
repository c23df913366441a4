"""A real kill -9 of ``fundusfeat register-batch`` at seeded random moments, then a resume:
the output has every pair exactly once, every line whole, and the rows of an
uninterrupted run with the same worker setting and OMP_NUM_THREADS=1 (issue 21).

By default two kill points of a serial run (about 25 s); one per parallel mode and the
sweep of >= 20 kills are marked slow.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fundusfeat.evaluation.cohort import make_cohort
from fundusfeat.pipeline.batch import COLUMNS

ROOT = Path(__file__).resolve().parents[1]
MODES = {"serial": [], "workers2": ["--workers", "2"], "dask2": ["--dask", "local:2"]}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, demo_pair) -> Path:
    """1 eye x 4 visits at 256 px: 4 images, 6 pairs."""
    return make_cohort([demo_pair[0]], 4, tmp_path_factory.mktemp("k"), seed=5, long_side=256)


def _argv(table: Path, out: Path, cache: Path, mode: str) -> list[str]:
    argv = [sys.executable, "-m", "fundusfeat", "register-batch", str(table), "--out", str(out)]
    return argv + [
        "--cache",
        str(cache),
        "--device",
        "cpu",
        "--quiet",
        "--max-keypoints",
        "400",
        *MODES[mode],
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _rows(path: Path) -> dict[str, list[str]]:
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "", "the last line is not whole"
    assert lines[0] == ",".join(COLUMNS) and lines.count(lines[0]) == 1
    out: dict[str, list[str]] = {}
    for values in csv.reader(lines[1:-1]):
        assert len(values) == len(COLUMNS), values
        assert values[0] not in out, f"pair {values[0]} twice"
        out[values[0]] = values
    return out


_references: dict[str, tuple[dict, float]] = {}


def _reference(cohort: Path, tmp: Path, mode: str) -> tuple[dict, float]:
    """An uninterrupted run's rows, and the seconds from its output's creation to its end."""
    if mode not in _references:
        out = tmp / f"ref-{mode}.csv"
        proc = subprocess.Popen(_argv(cohort, out, tmp / f"ref-cache-{mode}", mode), env=_env())
        while proc.poll() is None and not out.exists():
            time.sleep(0.02)
        began = time.monotonic()
        assert proc.wait(timeout=600) == 0
        _references[mode] = (_rows(out), time.monotonic() - began)
    return _references[mode]


def kill_and_resume(cohort: Path, tmp: Path, mode: str, seed: int, kills: int) -> None:
    reference, span = _reference(cohort, tmp, mode)
    assert len(reference) == 6
    rng = np.random.default_rng(seed)
    out, cache = tmp / f"run-{mode}-{seed}.csv", tmp / f"cache-{mode}-{seed}"
    for _ in range(kills):  # each resumed run is killed again
        proc = subprocess.Popen(_argv(cohort, out, cache, mode), env=_env())
        while proc.poll() is None and not out.exists():
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, span))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    done = subprocess.run(_argv(cohort, out, cache, mode), env=_env(), timeout=600)
    assert done.returncode == 0
    assert _rows(out) == reference


@pytest.mark.parametrize(
    "mode",
    [
        "serial",
        pytest.param("workers2", marks=pytest.mark.slow),
        pytest.param("dask2", marks=pytest.mark.slow),
    ],
)
def test_kill_9_then_resume_gives_the_uninterrupted_rows(cohort, tmp_path_factory, mode):
    if mode.startswith("dask"):
        pytest.importorskip("dask.distributed")
    kill_and_resume(cohort, tmp_path_factory.mktemp(mode), mode, seed=1, kills=2)


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(MODES))
def test_kill_9_sweep(cohort, tmp_path_factory, mode):
    """7 seeded kills per mode (21 in all), each followed by a resume that is killed again."""
    if mode.startswith("dask"):
        pytest.importorskip("dask.distributed")
    tmp = tmp_path_factory.mktemp(f"sweep-{mode}")
    for seed in (11, 12):
        kill_and_resume(cohort, tmp, mode, seed=seed, kills=4 if seed == 11 else 3)
