"""register(): the whole pipeline from two images to a verified transform.

1. detect + describe both images (any Feature2D-like detector, R2D2Fundus by default);
2. match: mutual nearest neighbours (FundusMatcher for float descriptors,
   ``cv2.BFMatcher(NORM_HAMMING, crossCheck=True)`` for binary ones) of the
   :data:`GLOBAL_KEYPOINTS` strongest keypoints of each image;
3. a robust homography of those matches (MAGSAC++ by default);
4. guided re-matching of *all* keypoints around it and the choice of the transform
   model per pair (:func:`fundusfeat.geometry.guided.refine`);
5. verification: evidence -> calibrated confidence (:mod:`fundusfeat.geometry.verification`);
   ``success = confidence >= threshold``.

A pair that cannot be registered gives ``success=False`` with a reason, never an
exception; invalid arguments raise ``TypeError``/``ValueError`` naming the argument.
"""

from __future__ import annotations

import functools
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fundusfeat.features.detector import Detector, Features
from fundusfeat.features.feature2d import KeypointSequence, R2D2Fundus
from fundusfeat.features.fov import FieldOfView, estimate_fov_checked
from fundusfeat.features.prepare import Prepared
from fundusfeat.features.threads import run_shared
from fundusfeat.geometry.estimation import (
    DEFAULT_RANSAC_THRESHOLD,
    METHODS,
    homography_is_plausible,
    keypoints_to_array,
    robust_homography,
)
from fundusfeat.geometry.guided import descriptor_distances, refine
from fundusfeat.geometry.matching import FundusMatcher, as_dmatches
from fundusfeat.geometry.transforms import MODELS, Transform, homography_transform
from fundusfeat.geometry.verification import (
    DEFAULT_THRESHOLD,
    Evidence,
    confidence,
    gather_evidence,
    vessel_image,
    weakest_evidence,
)
from fundusfeat.io.arrays import to_uint8
from fundusfeat.io.validation import validate_image, validate_mask

DEFAULT_METHOD = "magsac"
"""Robust estimator of :func:`register`. MAGSAC++ (``cv2.USAC_MAGSAC``) gives much lower
errors than plain RANSAC with the hundreds of matches of the learned features (see
docs/benchmarks.md, which reports both); :func:`estimate_projective` keeps
``cv2.findHomography``'s RANSAC default."""

DEFAULT_MIN_INLIERS = 8
"""Fewest inliers worth verifying (below, the pair fails without further evidence)."""

GLOBAL_KEYPOINTS = 1500
"""Strongest keypoints per image that enter the global (all-against-all) matching; all
keypoints take part in the guided re-matching around its estimate. 1500 (3000 until
2026-12-07) keeps every held-out table of the default model within 0.001 AUC, no
impostor accepted, and makes the mutual matching about 4x cheaper (docs/benchmarks.md,
"Fewer keypoints in the global matching")."""

TRANSFORM_MODELS = ("auto", *MODELS)

_HAMMING_NORMS = (cv2.NORM_HAMMING, cv2.NORM_HAMMING2)


@dataclass(frozen=True)
class ImageFeatures:
    """What every stage needs of one image, computed once (:func:`image_features`).

    Registration, the montage, the comparison and the feature cache of
    ``register-batch`` take it; none of them detects the image or estimates its field of
    view again. Coordinates are the image's input pixels ``(x, y)``, the centre of the
    top-left pixel at (0, 0).

    Attributes:
        keypoints: its keypoints (``cv2.KeyPoint``; built on first access for R2D2Fundus).
        xy: ``(N, 2)`` float64 keypoint positions.
        desc: ``(N, D)`` descriptors (float32, or packed uint8 for binary ones).
        region: ``(H, W)`` bool keypoint region (field of view AND mask).
        vessels: :func:`fundusfeat.geometry.verification.vessel_image` of the image: a
            float32 ``(h, w)`` map at :data:`~fundusfeat.geometry.verification.PHOTOMETRIC_SIDE`
            px and its resize factors ``(sx, sy)`` from input px.
        fov: the image's :class:`~fundusfeat.features.fov.FieldOfView` (mask ``(H, W)``
            at the input scale; estimated even where a detector setting keeps keypoints
            outside it).
    """

    keypoints: Sequence[cv2.KeyPoint]
    xy: np.ndarray
    desc: np.ndarray
    region: np.ndarray
    vessels: tuple[np.ndarray, tuple[float, float]]
    fov: FieldOfView

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the image."""
        return self.region.shape[1], self.region.shape[0]


@dataclass(frozen=True)
class RegistrationResult:
    """Outcome of :func:`register`.

    Attributes:
        H: 3x3 float64 homography mapping image-1 pixels onto image 2 (the transform's
            best projective approximation, for cv2 code), or None when not registered.
        success: True when the confidence reached the threshold.
        reason: ``"ok"`` or why the registration failed (the evidence against it).
        keypoints1: keypoints of image 1 (a sequence of ``cv2.KeyPoint``).
        keypoints2: keypoints of image 2.
        matches: list of ``cv2.DMatch`` of the final model (queryIdx -> keypoints1,
            trainIdx -> keypoints2).
        inliers: uint8 ``(len(matches), 1)``, 1 for the matches the transform explains.
        timings: seconds spent in ``detect``, ``match``, ``estimate``, ``refine``,
            ``verify`` and ``total``.
        transform: the :class:`~fundusfeat.geometry.transforms.Transform` (image-1 px -> image-2
            px; ``apply``, ``inverse``, ``warp``, ``model``), or None when not registered.
        confidence: calibrated probability that the registration is right, in [0, 1].
        evidence: what the confidence rests on (None when it was not reached).
    """

    H: np.ndarray | None
    success: bool
    reason: str
    keypoints1: Sequence[cv2.KeyPoint] = ()
    keypoints2: Sequence[cv2.KeyPoint] = ()
    matches: list[cv2.DMatch] = field(default_factory=list)
    inliers: np.ndarray = field(default_factory=lambda: np.zeros((0, 1), np.uint8))
    timings: dict[str, float] = field(default_factory=dict)
    transform: Transform | None = None
    confidence: float = 0.0
    evidence: Evidence | None = None

    @property
    def num_inliers(self) -> int:
        """Number of inliers of the final model."""
        return int(np.count_nonzero(self.inliers))

    def __reduce__(self) -> tuple:
        """Pickle support (cv2.KeyPoint and cv2.DMatch do not pickle): keypoints and
        matches travel as arrays and come back as the same cv2 objects."""
        fields = {
            name: getattr(self, name)
            for name in ("H", "success", "reason", "inliers", "timings", "transform")
        }
        fields.update(confidence=self.confidence, evidence=self.evidence)
        matches = np.array(
            [(m.queryIdx, m.trainIdx, m.imgIdx, m.distance) for m in self.matches], np.float64
        ).reshape(-1, 4)
        return (
            _rebuild_result,
            (fields, _keypoint_arrays(self.keypoints1), _keypoint_arrays(self.keypoints2), matches),
        )


def _keypoint_arrays(keypoints: Sequence[cv2.KeyPoint]) -> Any:
    """Keypoints as picklable data (a KeypointSequence pickles its arrays itself)."""
    if isinstance(keypoints, KeypointSequence):
        return keypoints
    return np.array(
        [(*k.pt, k.size, k.angle, k.response, k.octave, k.class_id) for k in keypoints],
        np.float64,
    ).reshape(-1, 7)


def _keypoints_back(data: Any) -> Sequence[cv2.KeyPoint]:
    if isinstance(data, KeypointSequence):
        return data
    return tuple(
        cv2.KeyPoint(x, y, s, a, r, int(o), int(c)) for x, y, s, a, r, o, c in data.tolist()
    )


def _rebuild_result(
    fields: dict[str, Any], kps1: Any, kps2: Any, matches: np.ndarray
) -> RegistrationResult:
    dmatches = [cv2.DMatch(int(q), int(t), int(i), float(d)) for q, t, i, d in matches.tolist()]
    return RegistrationResult(
        keypoints1=_keypoints_back(kps1),
        keypoints2=_keypoints_back(kps2),
        matches=dmatches,
        **fields,
    )


_PACKAGE_DIR = str(Path(__file__).resolve().parents[1])


def _outside_package() -> int:
    """The ``stacklevel`` of a warning issued by the caller: the first frame outside the
    fundusfeat package (where the user's code called it)."""
    frame, level = sys._getframe(2), 2
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(
        _PACKAGE_DIR
    ):
        frame, level = frame.f_back, level + 1
    return level


def deprecated_model(model: str | None, transform_model: str, where: str) -> str:
    """The transform model of a call: ``transform_model``, or the value of its deprecated
    name ``model=`` (``model`` names the network in ``R2D2Fundus.create``) with a
    ``DeprecationWarning`` at the caller's line; both given is a TypeError."""
    if model is None:
        return transform_model
    if transform_model != "auto":
        raise TypeError(f"{where}: give transform_model only (model is its deprecated name)")
    warnings.warn(
        f"{where}(model=...) is deprecated: the transform model is transform_model= "
        "(model= names the network in R2D2Fundus.create)",
        DeprecationWarning,
        stacklevel=_outside_package(),
    )
    return model


def renamed_model(kwargs: dict[str, Any], where: str) -> dict[str, Any]:
    """``kwargs`` with the deprecated ``model=`` moved to ``transform_model=``
    (:func:`deprecated_model`); both keys given is a TypeError."""
    if "model" not in kwargs:
        return kwargs
    kwargs = dict(kwargs)
    if "transform_model" in kwargs:
        raise TypeError(f"{where}: give transform_model only (model is its deprecated name)")
    kwargs["transform_model"] = deprecated_model(kwargs.pop("model"), "auto", where)
    return kwargs


def make_options(where: str = "register", **kwargs: Any) -> Options:
    """:class:`Options` of :func:`register`'s keyword options (``model=`` accepted as the
    deprecated name of ``transform_model=``); an unknown keyword is a TypeError naming
    ``where``."""
    kwargs = renamed_model(kwargs, where)
    try:
        return Options(**kwargs)
    except TypeError as exc:
        raise TypeError(f"{where}: {exc}") from exc


@dataclass(frozen=True)
class Options:
    """The validated settings of one registration (see :func:`register`)."""

    ransac_threshold: float = DEFAULT_RANSAC_THRESHOLD
    method: str = DEFAULT_METHOD
    min_inliers: int = DEFAULT_MIN_INLIERS
    seed: int = 0
    transform_model: str = "auto"
    threshold: float = DEFAULT_THRESHOLD
    global_keypoints: int | None = GLOBAL_KEYPOINTS

    def __post_init__(self) -> None:
        for name in ("ransac_threshold", "min_inliers", "seed", "threshold", "global_keypoints"):
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{name} must be a number, not a bool: got {value!r}")
        s = self.seed
        if not isinstance(s, (int, np.integer)):
            raise TypeError(f"seed must be an int, got {type(s).__name__} {s!r}")
        if not 0 <= s < 2**31:
            raise ValueError(f"seed must be an int in [0, 2**31), got {s!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {sorted(METHODS)}, got {self.method!r}")
        t = self.ransac_threshold
        if not isinstance(t, (int, float, np.number)) or not (np.isfinite(t) and t > 0):
            raise ValueError(f"ransac_threshold must be a number > 0, got {t!r}")
        if not isinstance(self.min_inliers, (int, np.integer)) or self.min_inliers < 4:
            raise ValueError(f"min_inliers must be an int >= 4, got {self.min_inliers!r}")
        if self.transform_model not in TRANSFORM_MODELS:
            raise ValueError(
                f"transform_model must be one of {TRANSFORM_MODELS}, got {self.transform_model!r}"
            )
        c = self.threshold
        if not isinstance(c, (int, float, np.number)) or not 0.0 <= c <= 1.0:
            raise ValueError(f"threshold must be a confidence in [0, 1], got {c!r}")
        g = self.global_keypoints
        if g is not None and (not isinstance(g, (int, np.integer)) or g < 4):
            raise ValueError(f"global_keypoints must be None or an int >= 4, got {g!r}")


# ------------------------------------------------------------------------------ inputs
def check_detector(detector: Any) -> Any:
    """``detector`` when it is a ``cv2.Feature2D``-like object, else a TypeError."""
    for method in ("detectAndCompute", "defaultNorm"):
        if not callable(getattr(detector, method, None)):
            raise TypeError(f"detector must be a cv2.Feature2D-like object with {method}()")
    return detector


def check_matcher(matcher: Any) -> Any:
    """``matcher`` (or None) when it has ``match()``, else a TypeError."""
    if matcher is not None and not callable(getattr(matcher, "match", None)):
        raise TypeError("matcher must have a match(descriptors1, descriptors2) method")
    return matcher


def default_matcher(detector: Any) -> Any:
    """Cross-checked brute force for binary descriptors, else :class:`FundusMatcher`."""
    if detector.defaultNorm() in _HAMMING_NORMS:
        return cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
    return FundusMatcher.create(crossCheck=True)


def _check_inputs(img: Any, mask: Any, index: int) -> tuple[np.ndarray, np.ndarray | None]:
    """A validated image as uint8 BGR (what every cv2.Feature2D accepts) and its mask."""
    checked = validate_image(img, f"img{index}")
    m = validate_mask(mask, checked.shape, f"mask{index}")
    return to_uint8(checked), m


def _r2d2_features(prep: Prepared, feats: Features) -> ImageFeatures:
    """:class:`ImageFeatures` of an image prepared and detected by the detector core."""
    return ImageFeatures(
        keypoints=KeypointSequence(feats),
        xy=feats.xy,
        desc=feats.desc,
        region=prep.region,
        vessels=vessel_image(prep.image),
        fov=prep.fov if prep.fov is not None else estimate_fov_checked(prep.image),
    )


def _detected_alone(
    core: Detector, image: Any, mask: Any, name: str, mask_name: str
) -> ImageFeatures:
    """One image prepared, detected and described (one call of :func:`run_shared`)."""
    prep = core.prepare(image, mask, name, mask_name)
    return _r2d2_features(prep, core.extract([prep])[0])


def image_features(
    detector: Any, images: Sequence[Any], masks: Sequence[Any]
) -> list[ImageFeatures]:
    """:class:`ImageFeatures` of images, each validated once and its field of view
    estimated once.

    An ``R2D2Fundus`` prepares the images itself (errors name ``img1``, ``mask1``, ...)
    and extracts them in one call (batched on CUDA); any other detector gets the
    validated images as uint8 BGR, its keypoint region being the estimated field of view
    and the mask.
    """
    if isinstance(detector, R2D2Fundus):
        core = detector.core
        named = [
            (img, mask, f"img{i}", f"mask{i}")
            for i, (img, mask) in enumerate(zip(images, masks, strict=True), 1)
        ]
        if core.shares_threads:  # each image prepared, detected and described side by side
            return run_shared([functools.partial(_detected_alone, core, *args) for args in named])
        prepared = [core.prepare(*args) for args in named]
        return [
            _r2d2_features(prep, feats)
            for prep, feats in zip(prepared, core.extract(prepared), strict=True)
        ]
    out = []
    for i, (img, mask) in enumerate(zip(images, masks, strict=True), 1):
        im, m = _check_inputs(img, mask, i)
        fov = estimate_fov_checked(im)
        region = fov.mask
        if m is not None:
            region = region & m
        kps, desc = detector.detectAndCompute(im, None if m is None else m.astype(np.uint8) * 255)
        kps = tuple(kps)
        if desc is None or not kps:
            kps, desc = (), np.empty((0, detector.descriptorSize() or 1), np.float32)
        out.append(
            ImageFeatures(
                kps, keypoints_to_array(kps).astype(np.float64), desc, region, vessel_image(im), fov
            )
        )
    return out


# ------------------------------------------------------------------------------ stages
def _global_matches(
    f1: ImageFeatures, f2: ImageFeatures, matcher: Any, limit: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """``(query, train)`` of the matcher on the ``limit`` strongest keypoints of each
    image (all of them for None). R2D2Fundus keypoints come strongest first; others are
    ranked by ``response``."""
    chosen = []
    for f in (f1, f2):
        idx = np.arange(len(f.xy))
        if limit is not None and len(idx) > limit:
            if isinstance(f.keypoints, KeypointSequence):
                idx = idx[:limit]
            else:
                response = np.array([k.response for k in f.keypoints])
                idx = np.sort(np.argsort(-response, kind="stable")[:limit])
        chosen.append(idx)
    query, train = matched_indices(matcher, f1.desc[chosen[0]], f2.desc[chosen[1]])
    return chosen[0][query], chosen[1][train]


def matched_indices(
    matcher: Any, desc1: np.ndarray, desc2: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(query, train)`` int64 index arrays of ``matcher.match(desc1, desc2)``.

    A :class:`FundusMatcher` (whose ``match`` is not overridden) gives them directly
    (``match_indices``, no ``cv2.DMatch`` objects built); any other matcher's
    ``cv2.DMatch`` list is read.
    """
    if isinstance(matcher, FundusMatcher) and type(matcher).match is FundusMatcher.match:
        return matcher.match_indices(desc1, desc2)
    matches = matcher.match(desc1, desc2)
    query = np.array([m.queryIdx for m in matches], dtype=np.int64)
    train = np.array([m.trainIdx for m in matches], dtype=np.int64)
    return query, train


def _dmatches(
    f1: ImageFeatures, f2: ImageFeatures, query: np.ndarray, train: np.ndarray
) -> list[cv2.DMatch]:
    binary = f1.desc.dtype == np.uint8
    dist = descriptor_distances(f1.desc[query], f2.desc[train], binary)
    if not binary:
        dist = np.sqrt(dist)
    return as_dmatches(query, train, dist)


def _fail(
    reason: str, f1: ImageFeatures, f2: ImageFeatures, timings: dict, **extra: Any
) -> RegistrationResult:
    return RegistrationResult(
        None, False, reason, f1.keypoints, f2.keypoints, timings=timings, **extra
    )


def register_features(
    f1: ImageFeatures,
    f2: ImageFeatures,
    matcher: Any,
    options: Options,
    timings: dict[str, float] | None = None,
) -> RegistrationResult:
    """Steps 2-5 of :func:`register` on already extracted features.

    Args:
        f1, f2: the two images' :class:`ImageFeatures`.
        matcher: object with ``match(desc1, desc2)``.
        options: the :class:`Options`.
        timings: stage times so far (``detect``); the others are added.
    """
    timings = dict(timings or {})
    for stage in ("match", "estimate", "refine", "verify"):
        timings.setdefault(stage, 0.0)
    if len(f1.xy) < 4 or len(f2.xy) < 4:
        return _fail("too few keypoints", f1, f2, timings)
    t0 = time.perf_counter()
    query, train = _global_matches(f1, f2, matcher, options.global_keypoints)
    timings["match"] = time.perf_counter() - t0
    if len(query) < max(4, options.min_inliers):
        matches = _dmatches(f1, f2, query, train)
        zeros = np.zeros((len(matches), 1), np.uint8)
        return _fail(
            f"too few matches ({len(query)})", f1, f2, timings, matches=matches, inliers=zeros
        )
    t0 = time.perf_counter()
    H, mask = robust_homography(
        f1.xy[query], f2.xy[train], options.ransac_threshold, options.method, seed=options.seed
    )
    timings["estimate"] = time.perf_counter() - t0
    initial = mask.ravel().astype(bool)
    if H is None or initial.sum() < options.min_inliers:
        matches = _dmatches(f1, f2, query, train)
        return _fail(
            f"too few inliers ({int(initial.sum())})",
            f1,
            f2,
            timings,
            matches=matches,
            inliers=mask,
        )
    t0 = time.perf_counter()
    q0, r0 = query[initial], train[initial]
    binary = f1.desc.dtype == np.uint8
    limit = float(np.percentile(descriptor_distances(f1.desc[q0], f2.desc[r0], binary), 95))
    try:
        start = homography_transform(H)
        refined = refine(
            f1.xy,
            f1.desc,
            f2.xy,
            f2.desc,
            start,
            options.ransac_threshold,
            options.transform_model,
            max_distance=limit,
        )
    except (ValueError, np.linalg.LinAlgError):
        refined = None
    timings["refine"] = time.perf_counter() - t0
    if refined is None:
        matches = _dmatches(f1, f2, query, train)
        return _fail(
            "no transform fits the guided matches", f1, f2, timings, matches=matches, inliers=mask
        )
    matches = _dmatches(f1, f2, refined.query, refined.train)
    inliers = refined.inliers.astype(np.uint8).reshape(-1, 1)
    t0 = time.perf_counter()
    transform = refined.transform
    approx = transform.homography()
    ok, why = homography_is_plausible(approx, f1.size)
    if not ok:
        timings["verify"] = time.perf_counter() - t0
        return _fail(
            f"implausible transform: {why}", f1, f2, timings, matches=matches, inliers=inliers
        )
    evidence = gather_evidence(
        transform,
        f1.xy,
        f2.xy,
        (q0, r0),
        len(query),
        (f1.region, f2.region),
        (f1.vessels, f2.vessels),
        options.ransac_threshold,
        options.seed,
    )
    conf = confidence(evidence)
    timings["verify"] = time.perf_counter() - t0
    if conf < options.threshold:
        reason = f"low confidence {conf:.2f} < {options.threshold:g}: {weakest_evidence(evidence)}"
        return _fail(
            reason,
            f1,
            f2,
            timings,
            matches=matches,
            inliers=inliers,
            confidence=conf,
            evidence=evidence,
        )
    return RegistrationResult(
        approx,
        True,
        "ok",
        f1.keypoints,
        f2.keypoints,
        matches,
        inliers,
        timings,
        transform,
        conf,
        evidence,
    )


# ------------------------------------------------------------------------------- API
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
    transform_model: str = "auto",
    threshold: float = DEFAULT_THRESHOLD,
    global_keypoints: int | None = GLOBAL_KEYPOINTS,
    **deprecated: Any,
) -> RegistrationResult:
    """Register two fundus images: find the transform from image 1 to image 2.

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
        method: estimator of the first homography: ``"magsac"`` (default,
            cv2.USAC_MAGSAC), ``"ransac"`` or ``"lmeds"``.
        min_inliers: fewest inliers worth verifying (>= 4).
        seed: seed of the robust estimators (deterministic results).
        transform_model: ``"auto"`` (per pair, the homography or the quadratic model,
            whichever predicts held-out matches better), or ``"homography"``,
            ``"quadratic"``, ``"affine"``, ``"similarity"``. (``model=`` is its deprecated
            name: ``model`` names the network in ``R2D2Fundus.create``.)
        threshold: confidence at or above which the registration succeeds
            (:data:`fundusfeat.geometry.verification.DEFAULT_THRESHOLD`).
        global_keypoints: strongest keypoints per image in the global matching (None =
            all); every keypoint takes part in the guided re-matching.

    Returns:
        :class:`RegistrationResult`; ``transform`` maps image-1 pixels to image 2 and
        ``H`` is its best homography.
    """
    t_start = time.perf_counter()
    unknown = set(deprecated) - {"model"}
    if unknown:
        raise TypeError(f"register() got unexpected keyword arguments {sorted(unknown)}")
    options = Options(
        ransac_threshold,
        method,
        min_inliers,
        seed,
        deprecated_model(deprecated.get("model"), transform_model, "register"),
        threshold,
        global_keypoints,
    )
    detector = check_detector(detector if detector is not None else R2D2Fundus.create())
    matcher = check_matcher(matcher) or default_matcher(detector)
    t0 = time.perf_counter()
    f1, f2 = image_features(detector, (img1, img2), (mask1, mask2))
    result = register_features(f1, f2, matcher, options, {"detect": time.perf_counter() - t0})
    result.timings["total"] = time.perf_counter() - t_start
    return result


def register_many(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    detector: Any = None,
    matcher: Any = None,
    **options: Any,
) -> list[RegistrationResult]:
    """Register many in-memory pairs, each image's features extracted once per pair.

    For datasets on disk (an image in several pairs detected once, bounded memory,
    resumable), use :func:`fundusfeat.pipeline.batch.register_dataset`.

    Args:
        pairs: sequence of ``(img1, img2)``.
        detector, matcher: as in :func:`register`.
        options: keyword options of :func:`register`.

    Returns:
        One :class:`RegistrationResult` per pair, in order (equal to :func:`register`'s).
    """
    if not isinstance(pairs, Sequence) or not all(
        isinstance(p, (tuple, list)) and len(p) == 2 for p in pairs
    ):
        raise TypeError("pairs must be a sequence of (img1, img2) tuples")
    opts = make_options("register_many", **options)
    detector = check_detector(detector if detector is not None else R2D2Fundus.create())
    matcher = check_matcher(matcher) or default_matcher(detector)
    results = []
    for img1, img2 in pairs:
        t_start = time.perf_counter()
        f1, f2 = image_features(detector, (img1, img2), (None, None))
        res = register_features(f1, f2, matcher, opts, {"detect": time.perf_counter() - t_start})
        res.timings["total"] = time.perf_counter() - t_start
        results.append(res)
    return results
