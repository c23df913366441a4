"""register(): the whole pipeline from two images to a projective transform.

detect + describe (any Feature2D-like detector, R2D2Fundus by default) -> match
(FundusMatcher for float descriptors, ``cv2.BFMatcher(NORM_HAMMING, crossCheck=True)``
for binary ones) -> :func:`~fundusfeat.geometry.estimate_projective` -> plausibility
check. A pair that cannot be registered gives ``success=False`` with a reason, never an
exception; invalid arguments raise ``TypeError``/``ValueError``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from fundusfeat.feature2d import R2D2Fundus, to_keypoints
from fundusfeat.geometry import (
    DEFAULT_RANSAC_THRESHOLD,
    METHODS,
    estimate_projective,
    homography_is_plausible,
)
from fundusfeat.imageops import to_uint8
from fundusfeat.matching import FundusMatcher
from fundusfeat.preprocess import validate_image, validate_mask

DEFAULT_METHOD = "magsac"
"""Robust estimator of :func:`register`. MAGSAC++ (``cv2.USAC_MAGSAC``) gives much lower
errors than plain RANSAC with the hundreds of matches of the learned features (see
docs/benchmarks.md, which reports both); :func:`estimate_projective` keeps
``cv2.findHomography``'s RANSAC default."""

DEFAULT_MIN_INLIERS = 8
_HAMMING_NORMS = (cv2.NORM_HAMMING, cv2.NORM_HAMMING2)

Features = tuple[tuple[cv2.KeyPoint, ...], np.ndarray]


@dataclass(frozen=True)
class RegistrationResult:
    """Outcome of :func:`register`.

    Attributes:
        H: 3x3 float64 homography mapping image-1 pixels onto image 2, or None.
        success: True when ``H`` was estimated and passed the plausibility checks.
        reason: ``"ok"`` or why the registration failed.
        keypoints1: keypoints of image 1 (tuple of ``cv2.KeyPoint``).
        keypoints2: keypoints of image 2.
        matches: list of ``cv2.DMatch`` (queryIdx -> keypoints1, trainIdx -> keypoints2).
        inliers: uint8 ``(len(matches), 1)``, 1 for RANSAC inliers.
        timings: seconds spent in ``detect``, ``match``, ``estimate`` and ``total``.
    """

    H: np.ndarray | None
    success: bool
    reason: str
    keypoints1: tuple[cv2.KeyPoint, ...] = ()
    keypoints2: tuple[cv2.KeyPoint, ...] = ()
    matches: list[cv2.DMatch] = field(default_factory=list)
    inliers: np.ndarray = field(default_factory=lambda: np.zeros((0, 1), np.uint8))
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def num_inliers(self) -> int:
        """Number of RANSAC inliers."""
        return int(np.count_nonzero(self.inliers))


def _check_detector(detector: Any) -> Any:
    for method in ("detectAndCompute", "defaultNorm"):
        if not callable(getattr(detector, method, None)):
            raise TypeError(f"detector must be a cv2.Feature2D-like object with {method}()")
    return detector


def _check_matcher(matcher: Any) -> Any:
    if matcher is not None and not callable(getattr(matcher, "match", None)):
        raise TypeError("matcher must have a match(descriptors1, descriptors2) method")
    return matcher


def _default_matcher(detector: Any) -> Any:
    if detector.defaultNorm() in _HAMMING_NORMS:
        return cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
    return FundusMatcher.create(crossCheck=True)


def _features(detector: Any, image: np.ndarray, mask: np.ndarray | None) -> Features:
    """detectAndCompute with None descriptors normalised to an empty array."""
    kps, desc = detector.detectAndCompute(image, mask)
    return _normalise_features(kps, desc)


def _detect_pair(
    detector: Any, img1: Any, img2: Any, mask1: Any, mask2: Any
) -> tuple[Features, Features, tuple[int, int]]:
    """Features of both images and image 1's ``(width, height)``; each image validated once.

    An ``R2D2Fundus`` prepares both images itself (the errors name ``img1``/``mask1``...)
    and extracts them in one call (one batch on CUDA); any other detector gets the
    validated images as uint8 BGR and masks as uint8.
    """
    if isinstance(detector, R2D2Fundus):
        core = detector.core
        prepared = [
            core.prepare(img, mask, f"img{i}", f"mask{i}")
            for i, (img, mask) in enumerate(((img1, mask1), (img2, mask2)), 1)
        ]
        f1, f2 = (_normalise_features(*to_keypoints(f)) for f in core.extract(prepared))
        return f1, f2, prepared[0].input_size
    (im1, m1), (im2, m2) = _check_inputs(img1, mask1, 1), _check_inputs(img2, mask2, 2)
    return _features(detector, im1, m1), _features(detector, im2, m2), im1.shape[1::-1]


def _normalise_features(kps: Any, desc: Any) -> Features:
    kps = tuple(kps)
    if desc is None or not kps:
        return (), np.empty((0, 0), np.float32)
    return kps, desc


def _check_inputs(img: Any, mask: Any, index: int) -> tuple[np.ndarray, np.ndarray | None]:
    """A validated image as uint8 BGR (what every cv2.Feature2D accepts) and its mask."""
    checked = validate_image(img, f"img{index}")
    m = validate_mask(mask, checked.shape, f"mask{index}")
    return to_uint8(checked), None if m is None else m.astype(np.uint8) * 255


def _check_options(ransac_threshold: float, method: str, min_inliers: int) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    if not (np.isfinite(ransac_threshold) and ransac_threshold > 0):
        raise ValueError(f"ransac_threshold must be > 0, got {ransac_threshold!r}")
    if not isinstance(min_inliers, (int, np.integer)) or min_inliers < 4:
        raise ValueError(f"min_inliers must be an int >= 4, got {min_inliers!r}")


def _match_and_estimate(
    f1: Features,
    f2: Features,
    matcher: Any,
    image_size: tuple[int, int],
    ransac_threshold: float,
    method: str,
    min_inliers: int,
    seed: int,
    timings: dict[str, float],
) -> RegistrationResult:
    """Match two feature sets and estimate a checked homography (image 1 -> image 2)."""
    (kps1, d1), (kps2, d2) = f1, f2
    fail = {"keypoints1": kps1, "keypoints2": kps2, "timings": timings}
    if len(kps1) < 4 or len(kps2) < 4:
        return RegistrationResult(None, False, "too few keypoints", **fail)
    t0 = time.perf_counter()
    matches = list(matcher.match(d1, d2))
    timings["match"] = time.perf_counter() - t0
    fail["matches"] = matches
    fail["inliers"] = np.zeros((len(matches), 1), np.uint8)
    if len(matches) < max(4, min_inliers):
        return RegistrationResult(None, False, f"too few matches ({len(matches)})", **fail)
    t0 = time.perf_counter()
    H, inliers = estimate_projective(
        kps1, kps2, matches, ransac_threshold=ransac_threshold, method=method, seed=seed
    )
    timings["estimate"] = time.perf_counter() - t0
    fail["inliers"] = inliers
    n_in = int(np.count_nonzero(inliers))
    if H is None or n_in < min_inliers:
        return RegistrationResult(None, False, f"too few inliers ({n_in})", **fail)
    ok, why = homography_is_plausible(H, image_size)
    if not ok:
        return RegistrationResult(None, False, f"implausible homography: {why}", **fail)
    return RegistrationResult(H, True, "ok", **fail)


def register(
    img1: np.ndarray,
    img2: np.ndarray,
    detector: Any = None,
    matcher: Any = None,
    *,
    mask1: np.ndarray | None = None,
    mask2: np.ndarray | None = None,
    ransac_threshold: float = DEFAULT_RANSAC_THRESHOLD,
    method: str = DEFAULT_METHOD,
    min_inliers: int = DEFAULT_MIN_INLIERS,
    seed: int = 0,
) -> RegistrationResult:
    """Register two fundus images with a projective transform.

    Args:
        img1: image 1 (``(H, W[, 3])`` uint8 BGR, gray, or float in [0, 1]).
        img2: image 2.
        detector: ``R2D2Fundus`` (default: ``R2D2Fundus.create()``) or any
            ``cv2.Feature2D`` such as ``cv2.SIFT_create()``.
        matcher: object with ``match(desc1, desc2)``; default ``FundusMatcher`` (cross
            check), or ``cv2.BFMatcher(NORM_HAMMING, crossCheck=True)`` when the
            detector's ``defaultNorm()`` is a Hamming norm.
        mask1: None or ``(H1, W1)`` uint8/bool keypoint mask of image 1.
        mask2: likewise for image 2.
        ransac_threshold: inlier threshold in pixels of image 2.
        method: ``"magsac"`` (default, cv2.USAC_MAGSAC), ``"ransac"`` or ``"lmeds"``.
        min_inliers: fewest inliers accepted as a registration (>= 4).
        seed: RANSAC seed (deterministic results).

    Returns:
        :class:`RegistrationResult`; ``H`` maps image-1 pixels to image 2.
    """
    t_start = time.perf_counter()
    _check_options(ransac_threshold, method, min_inliers)
    detector = _check_detector(detector if detector is not None else R2D2Fundus.create())
    matcher = _check_matcher(matcher) or _default_matcher(detector)
    t0 = time.perf_counter()
    f1, f2, size1 = _detect_pair(detector, img1, img2, mask1, mask2)
    timings = {"detect": time.perf_counter() - t0, "match": 0.0, "estimate": 0.0}
    res = _match_and_estimate(
        f1, f2, matcher, size1, ransac_threshold, method, min_inliers, seed, timings
    )
    timings["total"] = time.perf_counter() - t_start
    return res


def register_many(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    detector: Any = None,
    matcher: Any = None,
    *,
    ransac_threshold: float = DEFAULT_RANSAC_THRESHOLD,
    method: str = DEFAULT_METHOD,
    min_inliers: int = DEFAULT_MIN_INLIERS,
    seed: int = 0,
) -> list[RegistrationResult]:
    """Register many pairs; features of all images are extracted in one batched call.

    With an ``R2D2Fundus`` detector all images go through one ``detectAndCompute`` on
    a list (batched on CUDA); other detectors are called image by image. The
    ``detect`` timing of each result is the per-pair share of the extraction time.

    Args:
        pairs: sequence of ``(img1, img2)``.
        detector, matcher, ransac_threshold, method, min_inliers, seed: as in
            :func:`register`.

    Returns:
        One :class:`RegistrationResult` per pair, in order.
    """
    if not isinstance(pairs, Sequence) or not all(
        isinstance(p, (tuple, list)) and len(p) == 2 for p in pairs
    ):
        raise TypeError("pairs must be a sequence of (img1, img2) tuples")
    _check_options(ransac_threshold, method, min_inliers)
    images = [_check_inputs(img, None, k + 1)[0] for pair in pairs for k, img in enumerate(pair)]
    detector = _check_detector(detector if detector is not None else R2D2Fundus.create())
    matcher = _check_matcher(matcher) or _default_matcher(detector)
    t0 = time.perf_counter()
    feats = _extract_all(detector, images)
    share = (time.perf_counter() - t0) / max(1, len(pairs))
    results = []
    for i in range(len(pairs)):
        t_start = time.perf_counter()
        timings = {"detect": share, "match": 0.0, "estimate": 0.0}
        img1 = images[2 * i]
        res = _match_and_estimate(
            feats[2 * i], feats[2 * i + 1], matcher, img1.shape[1::-1],
            ransac_threshold, method, min_inliers, seed, timings,
        )  # fmt: skip
        timings["total"] = share + time.perf_counter() - t_start
        results.append(res)
    return results


def _extract_all(detector: Any, images: list[np.ndarray]) -> list[Features]:
    if isinstance(detector, R2D2Fundus):
        return [_normalise_features(k, d) for k, d in detector.detectAndCompute(images, None)]
    return [_features(detector, img, None) for img in images]
