"""register_dataset: a table of image pairs -> one result row per pair, as they finish.

Built for cohorts (every visit of an eye against the baseline and the previous visit),
FIRE-style folders and montages, where one image appears in many pairs:

- **Each image is detected once.** Its features (keypoints, descriptors, keypoint
  region, vessel image: :class:`fundusfeat.pipeline.register.ImageFeatures`) go to an
  on-disk cache keyed by the file's sha256 and the detector's settings and weights
  (:func:`cache_key`), so a changed image or changed weights never reuse stale
  features. Detection runs first, per image; then every pair is registered from the
  cache (:func:`fundusfeat.pipeline.register.register_features`, exactly what
  :func:`fundusfeat.register` does after detecting).
- **Bounded memory.** Nothing holds the dataset: images are read when detected,
  features are read back when a pair needs them (a small LRU keeps the last few).
- **Rows as they finish, resumable.** Each pair's row is appended to the output CSV and
  flushed when the pair is done; a rerun with the same output skips the pairs that
  already have a row, so an interrupted run plus a rerun gives the rows of one
  uninterrupted run.
- **Parallel.** ``workers=N`` runs N processes on one machine (torch threads split
  evenly); ``dask="local:N"`` starts a ``dask.distributed.LocalCluster`` and
  ``dask="tcp://host:port"`` uses an existing scheduler (the optional ``dask`` extra);
  the cache must then be on storage every worker sees. The rows equal a serial run's
  bit for bit when the torch thread count per detection is the same; with a different
  count, some CPUs (oneDNN on AMX) sum convolutions in another order, and H can differ
  in its last float32 digits.

Bad input (a missing file, an unreadable image, a malformed row) becomes a row with
``success=False`` and the reason; the run goes on.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fundusfeat.features.detector import Features
from fundusfeat.features.feature2d import KeypointSequence, R2D2Fundus
from fundusfeat.io.images import IMAGE_SUFFIXES, read_image
from fundusfeat.pipeline.register import (
    ImageFeatures,
    Options,
    RegistrationResult,
    _default_matcher,
    image_features,
    register_features,
)

logger = logging.getLogger(__name__)

COLUMNS = (
    "image1",
    "image2",
    "success",
    "reason",
    "num_inliers",
    "confidence",
    "model",
    "H",
    "transform",
)
"""Columns of the output CSV. ``H``: 9 numbers, row-major, image 1 -> image 2 (empty when
not registered); ``transform``: the transform's JSON (``Transform.to_dict``)."""

_CACHE_VERSION = 1
_LRU_SIZE = 8


class BatchInputError(ValueError):
    """The table of pairs or the output cannot be used at all (exit code 2)."""


@dataclass(frozen=True)
class Pair:
    """One row of the input: the two image paths as written and as resolved.

    Attributes:
        image1, image2: the paths as the table gives them (they key the output rows).
        path1, path2: resolved paths.
        problem: why the row is unusable ("" when it is fine).
    """

    image1: str
    image2: str
    path1: Path | None
    path2: Path | None
    problem: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return self.image1, self.image2


def read_pairs(source: str | Path) -> list[Pair]:
    """The pairs of a CSV table (columns ``image1,image2``, paths relative to the table)
    or of a folder of FIRE-style ``<name>_1.<ext>`` / ``<name>_2.<ext>`` images.

    Raises:
        BatchInputError: no such table or folder, or a header without both columns.
    """
    source = Path(source)
    if source.is_dir():
        images = {p.stem: p for p in sorted(source.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
        return [
            Pair(images[s].name, images[s[:-2] + "_2"].name, images[s], images[s[:-2] + "_2"])
            for s in sorted(images)
            if s.endswith("_1") and s[:-2] + "_2" in images
        ]
    if not source.is_file():
        raise BatchInputError(f"no such pairs table or folder: {source}")
    with source.open(newline="", encoding="utf-8") as fh:
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
            if not a or not b:
                out.append(
                    Pair(
                        a, b, None, None, f"line {number}: malformed row (needs image1 and image2)"
                    )
                )
                continue
            out.append(Pair(a, b, _resolve(source.parent, a), _resolve(source.parent, b)))
    return out


def _resolve(base: Path, text: str) -> Path:
    path = Path(text)
    return path if path.is_absolute() else base / path


# ----------------------------------------------------------------------------- the cache
def detector_digest(detector: R2D2Fundus) -> str:
    """sha256 of everything that changes a detector's features: model, weights, settings,
    backend, and the registration options that the features carry (none today)."""
    from fundusfeat.features.onnx import state_digest

    core = detector.core
    text = json.dumps(
        {
            "model": core.spec.name,
            "weights": state_digest(core.state_dict),
            "config": {k: getattr(core.config, k) for k in core.config.field_names()},
            "backend": core.backend,
            "version": _CACHE_VERSION,
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def file_digest(path: Path) -> str:
    """Hex sha256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_key(path: Path, detector_hash: str) -> str:
    """The cache key of an image: sha256 of its content and the detector's digest."""
    return hashlib.sha256(f"{file_digest(path)}:{detector_hash}".encode()).hexdigest()[:40]


def save_features(features: ImageFeatures, path: Path) -> None:
    """Write :class:`ImageFeatures` compactly (``.npz``; the region bit-packed, written to
    a temporary name and renamed, so a killed run never leaves half a file)."""
    kps = features.keypoints
    if isinstance(kps, KeypointSequence):
        raw = kps.features
    else:
        raw = Features(
            xy=features.xy,
            size=np.array([k.size for k in kps], np.float32),
            response=np.array([k.response for k in kps], np.float32),
            octave=np.array([k.octave for k in kps], np.int64),
            desc=features.desc,
        )
    vessels, factors = features.vessels
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(
        tmp,
        xy=raw.xy,
        size=raw.size,
        response=raw.response,
        octave=raw.octave,
        desc=raw.desc,
        region=np.packbits(features.region, axis=None),
        region_shape=np.array(features.region.shape),
        vessels=vessels,
        factors=np.array(factors),
    )
    os.replace(tmp, path)


def load_features(path: Path) -> ImageFeatures:
    """Read :func:`save_features`'s file back (bitwise the same arrays)."""
    with np.load(path) as data:
        raw = Features(data["xy"], data["size"], data["response"], data["octave"], data["desc"])
        shape = tuple(int(v) for v in data["region_shape"])
        region = np.unpackbits(data["region"], count=shape[0] * shape[1]).reshape(shape)
        vessels = (data["vessels"], tuple(float(v) for v in data["factors"]))
    return ImageFeatures(KeypointSequence(raw), raw.xy, raw.desc, region.astype(bool), vessels)


# ----------------------------------------------------------------------------- the work
@dataclass(frozen=True)
class Job:
    """What a worker needs: the detector (pickled), options, cache folder."""

    detector: R2D2Fundus
    options: Options
    cache: Path
    detector_hash: str


def detect_image(job: Job, path: Path) -> tuple[str, str]:
    """Detect one image into the cache (unless it is there).

    Returns:
        ``(cache key, "")``, or ``("", why)`` when the image cannot be read.
    """
    try:
        if not path.is_file():
            raise FileNotFoundError(f"image not found: {path}")
        key = cache_key(path, job.detector_hash)
        target = job.cache / f"{key}.npz"
        if not target.is_file():
            image = read_image(path)
            (features,) = image_features(job.detector, (image,), (None,))
            save_features(features, target)
        return key, ""
    except (FileNotFoundError, ValueError, OSError) as err:
        return "", f"cannot read image {path}: {err}"


class _FeatureLRU:
    """The last few images' features, read from the cache on demand."""

    def __init__(self, cache: Path, size: int = _LRU_SIZE) -> None:
        self.cache, self.size = cache, size
        self.items: OrderedDict[str, ImageFeatures] = OrderedDict()

    def get(self, key: str) -> ImageFeatures:
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        value = load_features(self.cache / f"{key}.npz")
        self.items[key] = value
        while len(self.items) > self.size:
            self.items.popitem(last=False)
        return value


_worker_lru: _FeatureLRU | None = None


def register_pair(job: Job, key1: str, key2: str) -> RegistrationResult:
    """Register one pair from cached features (what ``register()`` does after detecting)."""
    global _worker_lru
    if _worker_lru is None or _worker_lru.cache != job.cache:
        _worker_lru = _FeatureLRU(job.cache)
    f1, f2 = _worker_lru.get(key1), _worker_lru.get(key2)
    start = time.perf_counter()
    result = register_features(f1, f2, _default_matcher(job.detector), job.options, {"detect": 0.0})
    result.timings["total"] = time.perf_counter() - start
    return result


def result_row(pair: Pair, result: RegistrationResult | None, problem: str = "") -> dict[str, str]:
    """The output row of a pair (a failed row when ``result`` is None)."""
    if result is None:
        values = [pair.image1, pair.image2, "False", problem, "0", "0.0", "", "", ""]
        return dict(zip(COLUMNS, values, strict=True))
    H = "" if result.H is None else " ".join(f"{v:.12g}" for v in np.asarray(result.H).ravel())
    transform = "" if result.transform is None else json.dumps(result.transform.to_dict())
    values = [
        pair.image1,
        pair.image2,
        str(bool(result.success)),
        result.reason,
        str(result.num_inliers),
        f"{result.confidence:.6f}",
        "" if result.transform is None else result.transform.model,
        H,
        transform,
    ]
    return dict(zip(COLUMNS, values, strict=True))


# -------------------------------------------------------------------------- executors
# Each executor runs ``fn(job, *item)`` for every item and yields ``(item, result)`` as
# results come; the job (detector, options, cache) reaches each worker once.
class _Serial:
    """The executor of ``workers=1``: this process, in order."""

    def __init__(self, job: Job) -> None:
        self.job = job

    def map_unordered(self, fn: Callable, items: Sequence[tuple]) -> Iterable[tuple[Any, Any]]:
        for item in items:
            yield item, fn(self.job, *item)

    def close(self) -> None:
        pass


_process_job: Job | None = None


def _init_process(job: Job, threads: int) -> None:
    import torch

    global _process_job
    torch.set_num_threads(threads)
    _process_job = job


def _in_process(fn: Callable, *item: Any) -> Any:
    return fn(_process_job, *item)


_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class _ThreadLimit:
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


class _Processes:
    """``workers`` processes on this machine, each with ``threads`` torch threads."""

    def __init__(self, job: Job, workers: int, threads: int) -> None:
        import multiprocessing

        self.limit = _ThreadLimit(threads)
        self.pool = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_process,
            initargs=(job, threads),
        )

    def map_unordered(self, fn: Callable, items: Sequence[tuple]) -> Iterable[tuple[Any, Any]]:
        futures = {self.pool.submit(_in_process, fn, *item): item for item in items}
        for future in as_completed(futures):
            yield futures[future], future.result()

    def close(self) -> None:
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


class _Dask:
    """Tasks on a Dask cluster: ``local:N`` (a LocalCluster of N single-threaded worker
    processes) or the address of a running scheduler."""

    def __init__(self, job: Job, address: str) -> None:
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError as err:  # the optional extra
            raise BatchInputError("dask is not installed: pip install fundusfeat[dask]") from err
        self.cluster, self.limit, self.threads = None, None, None
        match = re.fullmatch(r"local:(\d+)", address)
        if match:
            n = int(match.group(1))
            self.threads = max(1, (os.cpu_count() or n) // n)
            self.limit = _ThreadLimit(self.threads)
            self.cluster = LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
            )
            self.client = Client(self.cluster)
        else:
            self.client = Client(address)
        self.job = self.client.scatter(job, broadcast=True)

    def map_unordered(self, fn: Callable, items: Sequence[tuple]) -> Iterable[tuple[Any, Any]]:
        from dask.distributed import as_completed as dask_completed

        futures = {
            self.client.submit(_with_threads, self.threads, fn, self.job, *item, pure=False): item
            for item in items
        }
        for future in dask_completed(futures):
            yield futures[future], future.result()

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        if self.limit is not None:
            self.limit.restore()


# ---------------------------------------------------------------------------- the run
@dataclass
class BatchSummary:
    """What a run did.

    Attributes:
        pairs: pairs in the table.
        skipped: pairs that already had a row (resumed).
        registered: pairs registered in this run.
        successes: of those, how many succeeded.
        failures: failure reasons (the part before any ``:`` or number) and counts.
        images_detected: images detected in this run (each at most once).
        images_cached: images whose features were already in the cache.
        seconds: wall time.
    """

    pairs: int = 0
    skipped: int = 0
    registered: int = 0
    successes: int = 0
    failures: Counter = field(default_factory=Counter)
    images_detected: int = 0
    images_cached: int = 0
    seconds: float = 0.0

    @property
    def pairs_per_second(self) -> float:
        return self.registered / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        out = [
            f"pairs: {self.pairs} ({self.skipped} already done, {self.registered} registered "
            f"now, {self.successes} succeeded)",
            f"images: {self.images_detected} detected, {self.images_cached} from the cache",
            f"time: {self.seconds:.1f} s ({self.pairs_per_second:.2f} pairs/s)",
        ]
        out += [f"failed ({n}): {reason}" for reason, n in self.failures.most_common()]
        return out


def _reason_kind(reason: str) -> str:
    """The kind of a failure reason: its text before any number, ``(`` or ``:`` (after a
    ``line N:`` prefix), e.g. "low confidence", "too few inliers", "malformed row"."""
    reason = re.sub(r"^line \d+: ", "", reason)
    return re.split(r"[:(\d]", reason, maxsplit=1)[0].strip() or reason


def done_rows(out: Path) -> dict[tuple[str, str], dict[str, str]]:
    """Rows already in the output (an unreadable or foreign file is an input error)."""
    if not out.is_file() or out.stat().st_size == 0:
        return {}
    with out.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise BatchInputError(f"{out} exists and is not a results table of this command")
        return {(r["image1"], r["image2"]): r for r in reader}


def register_dataset(
    pairs: str | Path | Sequence[Pair],
    out: str | Path,
    detector: R2D2Fundus | None = None,
    *,
    cache: str | Path | None = None,
    workers: int = 1,
    dask: str | None = None,
    options: Options | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    on_result: Callable[[Pair, RegistrationResult | None], None] | None = None,
) -> BatchSummary:
    """Register a table of pairs, each image detected once, rows written as they finish.

    Args:
        pairs: a CSV table or folder (:func:`read_pairs`) or the pairs themselves.
        out: the output CSV (columns :data:`COLUMNS`); existing rows are kept and their
            pairs skipped.
        detector: an ``R2D2Fundus`` (default ``R2D2Fundus.create()``).
        cache: folder of the feature cache (default: a temporary folder removed at the
            end); on a cluster, a folder every worker sees.
        workers: processes on this machine (>= 1; torch threads split evenly).
        dask: ``"local:N"`` or a scheduler address (instead of ``workers``).
        options: registration options (:class:`fundusfeat.pipeline.register.Options`).
        progress: called ``(done, total, label)`` after each image and pair.
        on_result: called with each pair and its result (None for a bad row), e.g. to
            draw figures.

    Returns:
        The :class:`BatchSummary`.

    Raises:
        BatchInputError: unreadable table or header, an output that is not writable or
            not a results table.
        TypeError, ValueError: invalid arguments.
    """
    start = time.perf_counter()
    table = read_pairs(pairs) if isinstance(pairs, (str, Path)) else list(pairs)
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    detector = detector if detector is not None else R2D2Fundus.create()
    if not isinstance(detector, R2D2Fundus):
        raise TypeError("detector must be an R2D2Fundus (its features are cached)")
    options = options or Options()
    out = Path(out)
    done = done_rows(out)
    todo = [p for p in dict.fromkeys(table) if p.key not in done]
    summary = BatchSummary(pairs=len(table), skipped=len(table) - len(todo))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        handle = out.open("a", newline="", encoding="utf-8")
    except OSError as err:
        raise BatchInputError(f"cannot write {out}: {err}") from err
    temporary = None
    if cache is None:
        temporary = tempfile.TemporaryDirectory(prefix="fundusfeat-cache-")
        cache = temporary.name
    cache_dir = Path(cache)
    cache_dir.mkdir(parents=True, exist_ok=True)
    job = Job(detector, options, cache_dir, detector_digest(detector))
    executor = _make_executor(job, workers, dask)
    try:
        with handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            if not done:
                writer.writeheader()
                handle.flush()
            _run(job, todo, executor, writer, handle, summary, progress, on_result)
    finally:
        executor.close()
        if temporary is not None:
            temporary.cleanup()
    summary.seconds = time.perf_counter() - start
    return summary


def _make_executor(job: Job, workers: int, dask: str | None) -> Any:
    if dask is not None:
        return _Dask(job, dask)
    if workers == 1:
        return _Serial(job)
    threads = max(1, (os.cpu_count() or workers) // workers)
    return _Processes(job, workers, threads)


def _run(
    job: Job,
    todo: list[Pair],
    executor: Any,
    writer: csv.DictWriter,
    handle: Any,
    summary: BatchSummary,
    progress: Callable[[int, int, str], None] | None,
    on_result: Callable[[Pair, RegistrationResult | None], None] | None,
) -> None:
    """Detect the images of ``todo`` (once each), then register its pairs."""
    images = list(
        dict.fromkeys(p for pair in todo if not pair.problem for p in (pair.path1, pair.path2))
    )
    cached = {p: cache_key(p, job.detector_hash) for p in images if p.is_file()}
    cached = {p: k for p, k in cached.items() if (job.cache / f"{k}.npz").is_file()}
    summary.images_cached = len(cached)
    keys: dict[Path, str] = dict(cached)
    problems: dict[Path, str] = {}
    total = len(images) - len(cached) + len(todo)
    done = 0
    missing = [(p,) for p in images if p not in cached]
    for (path,), (key, problem) in executor.map_unordered(detect_image, missing):
        if key:
            keys[path] = key
            summary.images_detected += 1
        else:
            problems[path] = problem
        done += 1
        if progress is not None:
            progress(done, total, path.name)

    def write(pair: Pair, result: RegistrationResult | None, problem: str = "") -> None:
        nonlocal done
        writer.writerow(result_row(pair, result, problem))
        handle.flush()
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
        problem = pair.problem or problems.get(pair.path1, "") or problems.get(pair.path2, "")
        if problem:
            write(pair, None, problem)
        else:
            by_keys.setdefault((keys[pair.path1], keys[pair.path2]), []).append(pair)
    for item, result in executor.map_unordered(register_pair, list(by_keys)):
        for pair in by_keys[item]:
            write(pair, result)
