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

import csv
import dataclasses
import hashlib
import json
import logging
import re
import tempfile
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fundusfeat.features.feature2d import R2D2Fundus
from fundusfeat.io.images import IMAGE_SUFFIXES, read_image
from fundusfeat.pipeline.cache import (
    cache_key,
    detector_digest,
    detector_settings,
    entry_path,
    file_digest,
    load_entry,
    load_features,
    remove_temporaries,
    save_features,
)
from fundusfeat.pipeline.executors import ExecutorError, make_executor
from fundusfeat.pipeline.journal import Journal, JournalError
from fundusfeat.pipeline.locks import LockedError, RunLock
from fundusfeat.pipeline.register import (
    ImageFeatures,
    Options,
    RegistrationResult,
    default_matcher,
    image_features,
    register_features,
)

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

COLUMNS = (
    "index",
    "image1",
    "image2",
    "success",
    "failure",
    "reason",
    "num_keypoints1",
    "num_keypoints2",
    "num_matches",
    "num_inliers",
    "confidence",
    "model",
    "H",
    "transform",
)
"""Columns of the output CSV.

``index``: the pair's row in the input (0 = the first row after the header; rows are
written as they finish, so sort by it for input order). ``success``: ``True``/``False``.
``failure``: "" on success, ``refused`` (registered, but the verification did not accept
it, or too few matches: rerunning gives the same), ``input`` (a missing, empty,
undecodable or too small image, a malformed row) or ``error`` (a runtime error, a lost
worker); ``input`` and ``error`` rows are redone by ``retry_failed``. ``reason``: why it
failed. ``num_keypoints1/2``, ``num_matches``, ``num_inliers``: as
``fundusfeat register --json`` (empty when not computed). ``confidence``: the
verification's confidence. ``model``: the transform model. ``H``: the best homography,
9 numbers, row-major (``H[0,0] H[0,1] ... H[2,2]``), mapping image-1 pixels to image-2
pixels (``p2 ~ H @ [x1, y1, 1]``, OpenCV's pixel convention), empty when not registered.
``transform``: the transform's JSON (``Transform.to_dict``). Every float is written the
same way: the shortest text that reads back to the same float64 (Python's ``repr``)."""

FAILURE_KINDS = ("refused", "input", "error")
"""Values of the ``failure`` column of a failed row."""

RETRYABLE = ("input", "error")
"""Failure kinds whose cause can change, redone by ``retry_failed``."""

_LRU_SIZE = 8
_CSV_FIELD_LIMIT = 2**31 - 1


class BatchInputError(ValueError):
    """The table of pairs, the output, the cache or an option cannot be used at all
    (exit code 2)."""


@dataclass(frozen=True)
class Pair:
    """One row of the input: the two image paths as written and as resolved.

    Attributes:
        image1, image2: the paths as the table gives them.
        path1, path2: resolved paths.
        problem: why the row is unusable ("" when it is fine).
        index: the row's position in the table (0 = the first row after the header).
    """

    image1: str
    image2: str
    path1: Path | None
    path2: Path | None
    problem: str = ""
    index: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return self.image1, self.image2


def read_pairs(source: str | Path) -> list[Pair]:
    """The pairs of a CSV table (columns ``image1,image2``, paths relative to the table;
    UTF-8 with or without a byte-order mark) or of a folder of FIRE-style
    ``<name>_1.<ext>`` / ``<name>_2.<ext>`` images, each with its ``index``.

    Raises:
        BatchInputError: no such table or folder, or a header without both columns.
    """
    source = Path(source)
    if source.is_dir():
        images = {p.stem: p for p in sorted(source.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
        stems = [s for s in sorted(images) if s.endswith("_1") and s[:-2] + "_2" in images]
        if not stems:
            raise BatchInputError(f"{source}: no <name>_1 / <name>_2 image pairs in this folder")
        return [
            Pair(
                images[s].name,
                images[s[:-2] + "_2"].name,
                images[s],
                images[s[:-2] + "_2"],
                index=i,
            )
            for i, s in enumerate(stems)
        ]
    if not source.is_file():
        raise BatchInputError(f"no such pairs table or folder: {source}")
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    try:
        with source.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip() for f in (reader.fieldnames or [])]
            if "image1" not in fields or "image2" not in fields:
                raise BatchInputError(
                    f"{source}: the header must name the columns image1,image2, got {fields}"
                )
            reader.fieldnames = fields
            out = []
            for number, row in enumerate(reader, start=2):
                a, b = ((row.get(k) or "").strip() for k in ("image1", "image2"))
                i = len(out)
                if not a or not b:
                    why = f"line {number}: malformed row (needs image1 and image2)"
                    out.append(Pair(a, b, None, None, why, index=i))
                    continue
                out.append(
                    Pair(a, b, _resolve(source.parent, a), _resolve(source.parent, b), index=i)
                )
    except UnicodeDecodeError as err:
        raise BatchInputError(f"{source}: not a UTF-8 CSV table ({err})") from err
    except csv.Error as err:
        raise BatchInputError(f"{source}: not a CSV table ({err})") from err
    if not out:
        raise BatchInputError(f"{source}: no pairs (a header and no rows)")
    return out


def _resolve(base: Path, text: str) -> Path:
    path = Path(text)
    return path if path.is_absolute() else base / path


def table_digest(table: Sequence[Pair]) -> str:
    """sha256 of a table's rows (the paths as written, and each row's problem)."""
    text = json.dumps([[p.image1, p.image2, p.problem] for p in table])
    return hashlib.sha256(text.encode()).hexdigest()


# ----------------------------------------------------------------------------- the work
@dataclass(frozen=True)
class Job:
    """What a worker needs: the detector (pickled), options, cache folder."""

    detector: R2D2Fundus
    options: Options
    cache: Path
    detector_hash: str


def _failure_kind(err: BaseException) -> str:
    return "input" if isinstance(err, (FileNotFoundError, ValueError, OSError)) else "error"


def detect_image(job: Job, path: Path) -> tuple[str, str, str, str]:
    """Detect one image into the cache, unless a verified entry is there.

    Returns:
        ``(key, "detected" or "cached", "", "")``, or ``("", "", why, kind)`` when the
        image cannot be used (kind ``input``: missing, empty, undecodable, too small;
        ``error``: anything else).
    """
    try:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: {'a folder' if path.is_dir() else 'no such file'}")
        key = cache_key(path, job.detector_hash)
        if load_entry(job.cache, key) is not None:
            return key, "cached", "", ""
        image = read_image(path)
        (features,) = image_features(job.detector, (image,), (None,))
        save_features(features, entry_path(job.cache, key), key)
        return key, "detected", "", ""
    except Exception as err:  # every per-image error is that image's rows' reason
        text = str(err).replace("img1", "image")
        if str(path) not in text:
            text = f"{path}: {text}"
        return "", "", f"cannot use image {text}", _failure_kind(err)


class _FeatureLRU:
    """The last few images' features, read (and verified) from the cache on demand."""

    def __init__(self, cache: Path, size: int = _LRU_SIZE) -> None:
        self.cache, self.size = cache, size
        self.items: OrderedDict[str, ImageFeatures] = OrderedDict()

    def get(self, key: str) -> ImageFeatures:
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        value = load_features(entry_path(self.cache, key), key)
        self.items[key] = value
        while len(self.items) > self.size:
            self.items.popitem(last=False)
        return value


_worker_lru: _FeatureLRU | None = None


def register_pair(job: Job, key1: str, key2: str) -> tuple[RegistrationResult | None, str]:
    """Register one pair from cached features (what ``register()`` does after detecting).

    Returns:
        ``(result, "")``, or ``(None, why)`` when the work itself failed (a cache entry
        damaged since its detection, a runtime error).
    """
    global _worker_lru
    try:
        if _worker_lru is None or _worker_lru.cache != job.cache:
            _worker_lru = _FeatureLRU(job.cache)
        f1, f2 = _worker_lru.get(key1), _worker_lru.get(key2)
        start = time.perf_counter()
        matcher = default_matcher(job.detector)
        result = register_features(f1, f2, matcher, job.options, {"detect": 0.0})
        result.timings["total"] = time.perf_counter() - start
        return result, ""
    except Exception as err:
        return None, f"registration error: {type(err).__name__}: {err}"


def _number(value: float) -> str:
    """A float as the shortest text that reads back to the same float64."""
    return repr(float(value))


def result_row(
    pair: Pair, result: RegistrationResult | None, problem: str = "", kind: str = "input"
) -> dict[str, str]:
    """The output row of a pair (a failed row of failure ``kind`` when ``result`` is
    None; see :data:`COLUMNS`)."""
    if result is None:
        row = dict.fromkeys(COLUMNS, "")
        row.update(
            index=str(pair.index),
            image1=pair.image1,
            image2=pair.image2,
            success="False",
            failure=kind,
            reason=problem,
        )
        return row
    H = "" if result.H is None else " ".join(_number(v) for v in np.asarray(result.H).ravel())
    transform = "" if result.transform is None else json.dumps(result.transform.to_dict())
    return {
        "index": str(pair.index),
        "image1": pair.image1,
        "image2": pair.image2,
        "success": str(bool(result.success)),
        "failure": "" if result.success else "refused",
        "reason": result.reason,
        "num_keypoints1": str(len(result.keypoints1)),
        "num_keypoints2": str(len(result.keypoints2)),
        "num_matches": str(len(result.matches)),
        "num_inliers": str(int(result.num_inliers)),
        "confidence": _number(result.confidence),
        "model": "" if result.transform is None else result.transform.model,
        "H": H,
        "transform": transform,
    }


# ---------------------------------------------------------------------------- the run
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


def _reason_kind(reason: str) -> str:
    """The kind of a failure reason: its text before any number, ``(`` or ``:`` (after a
    ``line N:`` prefix), e.g. "low confidence", "too few inliers", "malformed row"."""
    reason = re.sub(r"^line \d+: ", "", reason)
    return re.split(r"[:(\d]", reason, maxsplit=1)[0].strip() or reason


def run_meta(table: Sequence[Pair], detector: R2D2Fundus, options: Options) -> dict:
    """What the rows of a run depend on (recorded beside the output, compared on resume)."""
    return {
        "format": 1,
        "columns": list(COLUMNS),
        "table_sha256": table_digest(table),
        "detector": detector_settings(detector),
        "options": dataclasses.asdict(options),
    }


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
    progress: Callable[[int, int, str], None] | None = None,
    on_result: Callable[[Pair, RegistrationResult | None], None] | None = None,
) -> BatchSummary:
    """Register a table of pairs, each image detected once, rows written as they finish.

    Args:
        pairs: a CSV table or folder (:func:`read_pairs`) or the pairs themselves (their
            position in the sequence becomes their ``index``).
        out: the output CSV (columns :data:`COLUMNS`), a journal: the rows already there
            are kept and not redone, if they were made with the same settings and table
            (recorded in ``<out>.meta.json``).
        detector: an ``R2D2Fundus`` (default ``R2D2Fundus.create()``).
        cache: folder of the feature cache (default: a temporary folder removed at the
            end); on a cluster, a folder every worker sees.
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
    temporary = None
    try:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            locks.append(RunLock(out.with_name(out.name + ".lock"), str(out)).acquire())
        except LockedError as err:
            raise BatchInputError(str(err)) from err
        except OSError as err:
            raise BatchInputError(f"cannot write {out}: {err}") from err
        if cache is None:
            temporary = tempfile.TemporaryDirectory(prefix="fundusfeat-cache-")
            cache = temporary.name
        cache_dir = _cache_folder(Path(cache), locks)
        try:
            journal = Journal.open(
                out,
                COLUMNS,
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
        finally:
            journal.close()
    finally:
        for lock in reversed(locks):
            lock.release()
        if temporary is not None:
            temporary.cleanup()
    summary.seconds = time.perf_counter() - start
    return summary


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
    progress: Callable[[int, int, str], None] | None,
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
            summary.failures[_reason_kind(problem or (result.reason if result else ""))] += 1
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
    for item, value, error in executor.map_unordered(register_pair, list(by_keys)):
        result, problem = value if value is not None else (None, f"worker error: {error}")
        for pair in by_keys[item]:
            write(pair, result, problem, "error")
