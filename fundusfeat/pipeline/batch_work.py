"""The work of :func:`fundusfeat.pipeline.batch.register_dataset`'s workers: one image
detected into the feature cache, one pair registered from it.

Both run in any process (:mod:`fundusfeat.pipeline.executors` pickles a :class:`Job`
and these functions) and return plain values; an error becomes a reason, never an
exception that would end the run.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from fundusfeat.features.feature2d import R2D2Fundus
from fundusfeat.io.images import read_image
from fundusfeat.pipeline.cache import (
    cache_key,
    entry_path,
    load_entry,
    load_features,
    save_features,
)
from fundusfeat.pipeline.register import (
    ImageFeatures,
    Options,
    RegistrationResult,
    default_matcher,
    image_features,
    register_features,
)

_LRU_SIZE = 8


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


def register_cached(job: Job, key1: str, key2: str) -> tuple[RegistrationResult | None, str]:
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
