"""The on-disk feature cache of :func:`fundusfeat.pipeline.batch.register_dataset`.

One ``<key>.npz`` file per image, where the key (:func:`cache_key`) is the sha256 of the
image file's content and of the detector's digest (:func:`detector_digest`: model,
weights, settings, backend). Every entry carries its key inside; :func:`load_entry`
checks it, so a damaged file (truncated, zero bytes, random bytes) or a foreign one (a
valid entry of another image under this name) is never used: it is logged, deleted and
its image detected again. Files are read with ``allow_pickle=False`` only, and written to
a unique temporary name in the cache folder, then renamed (:func:`os.replace`), so a
killed run or two writers never leave half a file under an entry's name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from fundusfeat.features.detector import Features
from fundusfeat.features.feature2d import KeypointSequence, R2D2Fundus
from fundusfeat.features.fov import FieldOfView
from fundusfeat.pipeline.register import ImageFeatures

logger = logging.getLogger(__name__)

CACHE_VERSION = 3
"""Format of an entry (2: the key stored inside; 3: the field of view stored with it)."""

TEMP_SUFFIX = ".tmp.npz"
"""Ending of the temporary files an entry is written to before its rename."""


def detector_settings(detector: R2D2Fundus) -> dict:
    """What changes a detector's features, as plain JSON values: model, weights sha256
    (of the state dict's names, shapes, dtypes and values), settings and backend."""
    from fundusfeat.features.onnx import state_digest

    core = detector.core
    return {
        "model": core.spec.name,
        "weights_sha256": state_digest(core.state_dict),
        "config": {k: _plain(getattr(core.config, k)) for k in core.config.field_names()},
        "backend": str(core.backend),
    }


def _plain(value: object) -> object:
    """A JSON value of a setting (tuples as lists, numpy scalars as Python numbers)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def detector_digest(detector: R2D2Fundus) -> str:
    """sha256 of :func:`detector_settings` and the cache format."""
    text = json.dumps({**detector_settings(detector), "version": CACHE_VERSION}, sort_keys=True)
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


def entry_path(cache: Path, key: str) -> Path:
    """The file of the entry ``key``."""
    return cache / f"{key}.npz"


def save_features(features: ImageFeatures, path: Path, key: str = "") -> None:
    """Write :class:`ImageFeatures` compactly (``.npz``, the FOV mask bit-packed, the
    region too where it differs from it) with its ``key`` inside, to a unique temporary
    name in the same folder, then renamed."""
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
    fov = features.fov
    region = (
        np.zeros(0, np.uint8)
        if np.array_equal(features.region, fov.mask)
        else np.packbits(features.region, axis=None)
    )
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(
                fh,
                key=np.array(key),
                version=np.array(CACHE_VERSION),
                xy=raw.xy,
                size=raw.size,
                response=raw.response,
                octave=raw.octave,
                desc=raw.desc,
                region=region,
                region_shape=np.array(features.region.shape),
                fov_mask=np.packbits(fov.mask, axis=None),
                fov_circle=np.array([*fov.center, fov.radius, float(fov.found)], np.float64),
                vessels=vessels,
                factors=np.array(factors),
            )
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class DamagedEntryError(ValueError):
    """A cache file that cannot be used: unreadable, incomplete, or another key's."""


def load_features(path: Path, key: str | None = None) -> ImageFeatures:
    """Read :func:`save_features`'s file back (bitwise the same arrays).

    Args:
        path: the entry's file.
        key: the key it must carry (None: not checked).

    Raises:
        DamagedEntryError: the file is not a whole entry (truncated, zero bytes, random bytes,
            missing arrays, pickled objects), or carries another key (the message names
            the file).
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            stored = str(data["key"]) if "key" in data.files else None
            if key is not None and stored != key:
                raise DamagedEntryError(
                    f"{path}: entry of another image or detector (key {stored})"
                )
            raw = Features(data["xy"], data["size"], data["response"], data["octave"], data["desc"])
            shape = tuple(int(v) for v in data["region_shape"])
            count = shape[0] * shape[1]
            mask = np.unpackbits(data["fov_mask"], count=count).reshape(shape).astype(bool)
            cx, cy, radius, found = (float(v) for v in data["fov_circle"])
            fov = FieldOfView(mask, (cx, cy), radius, bool(found))
            packed = data["region"]
            region = (
                np.unpackbits(packed, count=count).reshape(shape).astype(bool)
                if packed.size
                else mask
            )
            vessels = (data["vessels"], tuple(float(v) for v in data["factors"]))
    except DamagedEntryError:
        raise
    except Exception as err:  # BadZipFile, EOFError, ValueError (pickled data), KeyError...
        why = f"{type(err).__name__}: {err}"
        if "pickle" in why:  # numpy's hint to load unsafely is no advice for a cache
            why = "holds pickled objects, which are never loaded"
        raise DamagedEntryError(f"{path}: damaged cache entry ({why})") from err
    return ImageFeatures(KeypointSequence(raw), raw.xy, raw.desc, region, vessels, fov)


def load_entry(cache: Path, key: str) -> ImageFeatures | None:
    """The entry ``key`` of the cache, or None when there is none or it was damaged or
    foreign (then it is logged and deleted, so that its image is detected again)."""
    path = entry_path(cache, key)
    if not path.is_file():
        return None
    try:
        return load_features(path, key)
    except DamagedEntryError as err:
        logger.warning("%s; deleted, the image is detected again", err)
        path.unlink(missing_ok=True)
        return None


def remove_temporaries(cache: Path) -> int:
    """Delete the temporary files a killed writer left (call while holding the cache's
    lock); returns how many."""
    count = 0
    for tmp in cache.glob("*" + TEMP_SUFFIX):
        tmp.unlink(missing_ok=True)
        count += 1
    return count
