"""register_dataset: a table of image pairs -> one result row per pair, as they finish.

Built for cohorts (every visit of an eye against the baseline and the previous visit),
FIRE-style folders and montages, where one image appears in many pairs, and for runs of
hours that must lose nothing under faults:

- **Each image is detected once.** Its features go to an on-disk cache keyed by the
  file's sha256 and the detector's settings and weights (:mod:`fundusfeat.pipeline.cache`;
  every entry carries its key and is verified when read, a damaged or foreign one is
  deleted and recomputed). Detection runs first, per image; then every pair is
  registered from the cache (:func:`fundusfeat.pipeline.register.register_features`,
  exactly what :func:`fundusfeat.register` does after detecting).
- **Bounded memory.** Nothing holds the dataset: images are read when detected,
  features are read back when a pair needs them (a small LRU keeps the last few).
- **A journal.** Each row is one write to the output CSV (:mod:`fundusfeat.pipeline.journal`,
  fsynced at checkpoints); a rerun with the same output and settings does only the rows
  missing (a partial last line is cut off and redone), so an interrupted run plus a
  rerun gives the rows of one uninterrupted run. A rerun with other settings is refused
  unless ``restart``; ``retry_failed`` redoes the rows that failed for a reason that can
  change (an input or runtime error, never a refusal by the verification).
- **One run at a time** per output and per cache (:mod:`fundusfeat.pipeline.locks`).
- **Parallel.** ``workers=N`` runs N processes on one machine (torch threads split
  evenly); ``dask="local:N"`` starts a ``dask.distributed.LocalCluster`` and
  ``dask="tcp://host:port"`` uses an existing scheduler (the optional ``dask`` extra);
  the cache must then be on storage every worker sees. Workers die with the run
  (:mod:`fundusfeat.pipeline.executors`). The rows equal a serial run's bit for bit when
  the torch thread count per detection is the same.

Bad input (a missing, empty, undecodable or too small image, a malformed row) and any
error in a pair's work become that row's ``success=False`` with the reason; the run goes
on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fundusfeat.features.feature2d import R2D2Fundus
from fundusfeat.io.progress import Progress
from fundusfeat.io.user_cache import user_cache_dir
from fundusfeat.pipeline.batch_work import Job, detect_image, register_cached
from fundusfeat.pipeline.cache import (
    cache_key,
    detector_digest,
    detector_settings,
    file_digest,
    load_features,
    remove_temporaries,
    save_features,
)
from fundusfeat.pipeline.executors import ExecutorError, make_executor
from fundusfeat.pipeline.journal import Journal, JournalError
from fundusfeat.pipeline.locks import LockedError, RunLock
from fundusfeat.pipeline.register import Options, RegistrationResult
from fundusfeat.pipeline.rows import (
    COLUMNS,
    RETRYABLE,
    output_columns,
    reason_kind,
    result_row,
)
from fundusfeat.pipeline.table import BatchInputError, Pair, read_pairs, table_digest

__all__ = [
    "COLUMNS",
    "BatchInputError",
    "BatchSummary",
    "Pair",
    "cache_key",
    "detector_digest",
    "file_digest",
    "load_features",
    "read_pairs",
    "register_dataset",
    "result_row",
    "save_features",
]

logger = logging.getLogger(__name__)


@dataclass
class BatchSummary:
    """What a run did.

    Attributes:
        pairs: rows in the table.
        skipped: rows that already were in the output (resumed).
        registered: rows written in this run.
        successes: of those, how many succeeded.
        skipped_successes: of the rows already there, how many succeeded.
        failures: failure reasons (the part before any ``:`` or number) and counts.
        duplicates: rows whose two images (by content) an earlier row has (registered
            once, written for each row).
        missing: rows not written (the run was interrupted or its workers lost).
        images_detected: images detected in this run (each at most once).
        images_cached: images whose features were already in the cache (verified).
        seconds: wall time.
    """

    pairs: int = 0
    skipped: int = 0
    registered: int = 0
    successes: int = 0
    failures: Counter = field(default_factory=Counter)
    duplicates: int = 0
    missing: int = 0
    images_detected: int = 0
    images_cached: int = 0
    seconds: float = 0.0
    skipped_successes: int = 0

    @property
    def pairs_per_second(self) -> float:
        return self.registered / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        dup = f", {self.duplicates} duplicate rows" if self.duplicates else ""
        out = [
            f"pairs: {self.pairs} ({self.skipped} already done, {self.registered} registered "
            f"now{dup}); succeeded: {self.skipped_successes + self.successes} of "
            f"{self.skipped + self.registered} written ({self.successes} of them now)",
            f"images: {self.images_detected} detected, {self.images_cached} from the cache",
            f"time: {self.seconds:.1f} s ({self.pairs_per_second:.2f} pairs/s)",
        ]
        out += [f"failed ({n}): {reason}" for reason, n in self.failures.most_common()]
        if self.missing:
            out.append(f"MISSING: {self.missing} rows not written; rerun to resume")
        return out


def run_meta(table: Sequence[Pair], detector: R2D2Fundus, options: Options) -> dict:
    """What the rows of a run depend on (recorded beside the output, compared on resume)."""
    return {
        "format": 1,
        "columns": list(output_columns(table)),
        "table_sha256": table_digest(table),
        "detector": detector_settings(detector),
        "options": _options_record(options),
    }


def _options_record(options: Options) -> dict:
    """The options as the sidecar records them (``transform_model`` under its earlier
    name ``model``, so that runs of earlier versions still resume)."""
    record = dataclasses.asdict(options)
    record["model"] = record.pop("transform_model")
    return record


def register_dataset(
    pairs: str | Path | Sequence[Pair],
    out: str | Path,
    detector: R2D2Fundus | None = None,
    *,
    cache: str | Path | None = None,
    workers: int = 1,
    dask: str | None = None,
    options: Options | None = None,
    restart: bool = False,
    retry_failed: bool = False,
    progress: Progress | None = None,
    on_result: Callable[[Pair, RegistrationResult | None], None] | None = None,
) -> BatchSummary:
    """Register a table of pairs, each image detected once, rows written as they finish.

    Args:
        pairs: a CSV table or folder (:func:`read_pairs`) or the pairs themselves (their
            position in the sequence becomes their ``index``).
        out: the output CSV (columns :data:`COLUMNS`, then the table's other columns,
            :func:`fundusfeat.pipeline.rows.output_columns`), a journal: the rows already there
            are kept and not redone, if they were made with the same settings and table
            (recorded in ``<out>.meta.json``).
        detector: an ``R2D2Fundus`` (default ``R2D2Fundus.create()``).
        cache: folder of the feature cache, kept (default: :func:`default_cache`, a
            folder of the user's cache dir that a rerun of an interrupted run reuses and
            that a complete run removes); on a cluster, a folder every worker sees.
        workers: processes on this machine (>= 1; torch threads split evenly).
        dask: ``"local:N"`` or a scheduler address (instead of ``workers``).
        options: registration options (:class:`fundusfeat.pipeline.register.Options`).
        restart: discard the rows already in ``out`` (needed to change settings).
        retry_failed: redo the rows that failed with an input or runtime error
            (:data:`RETRYABLE`); refusals by the verification are kept.
        progress: called ``(done, total, label)`` after each image and pair.
        on_result: called with each pair and its result (None for a failed row without
            a registration), e.g. to draw figures.

    Returns:
        The :class:`BatchSummary` (``missing`` > 0 when rows were not written).

    Raises:
        BatchInputError: unreadable table or header, an output that is not writable, not
            a results table, in use by another run, or made with other settings; a cache
            that is not a folder or in use; a bad ``dask`` address.
        TypeError, ValueError: invalid arguments.
        KeyboardInterrupt: passed on after the workers are stopped and the rows written
            so far are synced.
    """
    start = time.perf_counter()
    if isinstance(pairs, (str, Path)):
        table = read_pairs(pairs)
    else:
        table = [dataclasses.replace(p, index=i) for i, p in enumerate(pairs)]
    if len({tuple(name for name, _ in p.extra) for p in table}) > 1:
        raise ValueError("pairs: every pair must carry the same extra columns")
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    if dask is not None and not isinstance(dask, str):
        raise TypeError(f"dask must be None or an address string, got {dask!r}")
    detector = detector if detector is not None else R2D2Fundus.create()
    if not isinstance(detector, R2D2Fundus):
        raise TypeError("detector must be an R2D2Fundus (its features are cached)")
    options = options or Options()
    out = Path(out)
    if out.is_dir():
        raise BatchInputError(
            f"--out {out} is a folder: name the results file, e.g. {out / 'results.csv'}"
        )
    locks: list[RunLock] = []
    temporary: Path | None = None
    complete = False
    try:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            locks.append(RunLock(out.with_name(out.name + ".lock"), str(out)).acquire())
        except LockedError as err:
            raise BatchInputError(str(err)) from err
        except OSError as err:
            raise BatchInputError(f"cannot write {out}: {err}") from err
        if cache is None:
            temporary = default_cache(out)
            cache = temporary
        cache_dir = _cache_folder(Path(cache), locks)
        try:
            journal = Journal.open(
                out,
                output_columns(table),
                run_meta(table, detector, options),
                restart=restart,
                drop=(lambda r: r["failure"] in RETRYABLE) if retry_failed else None,
            )
        except JournalError as err:
            raise BatchInputError(str(err)) from err
        except OSError as err:
            raise BatchInputError(f"cannot write {out}: {err}") from err
        try:
            done = _done_indices(journal.rows, table, out)
            todo = [p for p in table if p.index not in done]
            summary = BatchSummary(
                pairs=len(table),
                skipped=len(table) - len(todo),
                skipped_successes=sum(r.get("success") == "True" for r in journal.rows),
            )
            job = Job(detector, options, cache_dir, detector_digest(detector))
            try:
                executor = make_executor(job, workers, dask)
            except ExecutorError as err:
                raise BatchInputError(str(err)) from err
            aborted = True
            try:
                _run(job, todo, executor, journal, summary, progress, on_result)
                aborted = False
            except BrokenProcessPool as err:
                logger.error("the worker processes died (%s); rerun to resume", err)
            finally:
                executor.close(abort=aborted)
            summary.missing = len(todo) - summary.registered
            complete = not aborted and summary.missing == 0
        finally:
            journal.close()
    finally:
        for lock in reversed(locks):
            lock.release()
        if temporary is not None and complete:
            shutil.rmtree(temporary, ignore_errors=True)
    summary.seconds = time.perf_counter() - start
    return summary


def default_cache(out: Path) -> Path:
    """The feature cache of a run given no ``cache``: a folder of the user's cache dir
    (:func:`fundusfeat.io.user_cache.user_cache_dir`) named by the output's absolute
    path, so that a rerun of an interrupted run finds the images it detected; removed
    when a run ends with every row written."""
    digest = hashlib.sha256(str(Path(out).resolve()).encode()).hexdigest()[:20]
    return user_cache_dir("batch", digest)


def _cache_folder(cache: Path, locks: list[RunLock]) -> Path:
    """The cache folder, made if needed, locked, without a killed writer's leftovers."""
    if cache.exists() and not cache.is_dir():
        raise BatchInputError(f"--cache {cache} is a file, not a folder")
    try:
        cache.mkdir(parents=True, exist_ok=True)
        locks.append(RunLock(cache / ".lock", f"the cache {cache}").acquire())
    except LockedError as err:
        raise BatchInputError(str(err)) from err
    except OSError as err:
        raise BatchInputError(f"cannot use {cache} as the cache folder: {err}") from err
    removed = remove_temporaries(cache)
    if removed:
        logger.info("%s: removed %d temporary files of a killed run", cache, removed)
    return cache


def _done_indices(rows: list[dict], table: Sequence[Pair], out: Path) -> set[int]:
    """The table rows that the journal's rows are (each must match its table row)."""
    done: set[int] = set()
    for row in rows:
        try:
            index = int(row["index"])
            pair = table[index]
        except (ValueError, IndexError):
            raise BatchInputError(
                f"{out}: row index {row['index']!r} is not in the table; pass --restart"
            ) from None
        if (pair.image1, pair.image2) != (row["image1"], row["image2"]) or index in done:
            raise BatchInputError(
                f"{out}: the row of index {index} does not match the table "
                "or is there twice; pass --restart"
            )
        done.add(index)
    return done


def _run(
    job: Job,
    todo: list[Pair],
    executor: Any,
    journal: Journal,
    summary: BatchSummary,
    progress: Progress | None,
    on_result: Callable[[Pair, RegistrationResult | None], None] | None,
) -> None:
    """Detect the images of ``todo`` (once each), then register its pairs."""
    images = list(
        dict.fromkeys(p for pair in todo if not pair.problem for p in (pair.path1, pair.path2))
    )
    keys: dict[Path, str] = {}
    problems: dict[Path, tuple[str, str]] = {}
    total = len(images) + len(todo)
    done = 0
    for (path,), value, error in executor.map_unordered(detect_image, [(p,) for p in images]):
        key, status, problem, kind = value if value is not None else ("", "", error, "error")
        if key:
            keys[path] = key
            if status == "cached":
                summary.images_cached += 1
            else:
                summary.images_detected += 1
        else:
            problems[path] = (problem, kind)
        done += 1
        if progress is not None:
            progress(done, total, path.name)

    def write(pair: Pair, result: RegistrationResult | None, problem: str, kind: str) -> None:
        nonlocal done
        journal.write(result_row(pair, result, problem, kind))
        summary.registered += 1
        if result is not None and result.success:
            summary.successes += 1
        else:
            summary.failures[reason_kind(problem or (result.reason if result else ""))] += 1
        if on_result is not None:
            on_result(pair, result)
        done += 1
        if progress is not None:
            progress(done, total, f"{pair.image1} {pair.image2}")

    by_keys: dict[tuple[str, str], list[Pair]] = {}
    for pair in todo:
        if pair.problem:
            write(pair, None, pair.problem, "input")
            continue
        bad = problems.get(pair.path1) or problems.get(pair.path2)
        if bad:
            write(pair, None, *bad)
            continue
        group = by_keys.setdefault((keys[pair.path1], keys[pair.path2]), [])
        summary.duplicates += bool(group)
        group.append(pair)
    for item, value, error in executor.map_unordered(register_cached, list(by_keys)):
        result, problem = value if value is not None else (None, f"worker error: {error}")
        for pair in by_keys[item]:
            write(pair, result, problem, "error")
