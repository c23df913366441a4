"""Longitudinal comparison: what changed between two visits of one eye.

Stages (each a function over plain data, the result keeps what each decided):
registration (:func:`fundusfeat.pipeline.register.register`, baseline -> follow-up) ->
alignment (:func:`fundusfeat.pipeline.alignment.align_to_frame`: warp, overlap,
illumination and colour matched per channel) -> tolerant difference (:func:`tolerant_difference`) ->
regions (:func:`find_changes`, hysteresis thresholds).

What is not a change, and how it is kept out:

- illumination and colour between visits: a local gain and offset per channel fitted on
  the overlap outside the vessels (:func:`~fundusfeat.pipeline.alignment.match_illumination`);
- the registration's residual at vessel edges: a pixel differs only by how far it lies
  outside the *range* (local min .. max within ``tolerance`` px) of the other visit, in
  both directions; the dilated vessel band is further down-weighted;
- blur and noise: the difference is smoothed and expressed in units of its robust
  standard deviation over the overlap; regions need a seed above ``high`` and a minimum
  area;
- the FOV rim: the overlap is eroded;
- clipped channels and reflections: the difference weights each channel (B, G, R) by
  :data:`~fundusfeat.pipeline.alignment.LUMA_BGR` and by its headroom below clipping in
  both visits (:func:`~fundusfeat.pipeline.alignment.channel_weights`); a clipped red
  channel, common in real cameras, only shifts the weight to green and blue, and a
  pixel is left out only where green is clipped too.

Coordinates: ``(x, y)`` baseline pixels, x right, y down, pixel centres at integers.
The painted-lesion ground truth of the benchmark is :mod:`fundusfeat.evaluation.lesions`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from fundusfeat.features.feature2d import R2D2Fundus
from fundusfeat.features.fov import FieldOfView
from fundusfeat.geometry.fitting import compose
from fundusfeat.geometry.transforms import Transform
from fundusfeat.pipeline.alignment import (
    Alignment,
    BaselineFrame,
    align_to_frame,
    baseline_frame,
    masked_blur,
)
from fundusfeat.pipeline.register import (
    Options,
    RegistrationResult,
    check_detector,
    check_matcher,
    default_matcher,
    image_features,
    make_options,
    register_features,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChangeParams:
    """The change detector's parameters.

    ``high``, ``low`` and ``min_radius`` were chosen by ``fundusfeat evaluate --changes
    training/splits/train.txt --calibrate --pairs 20`` (training images only): the most
    painted lesions found in the worst of the four variants (as taken, red clipped, dark
    corner, halo) with false regions at most 10 % of the regions and at most 0.2 regions
    per control pair (docs/benchmarks.md, "Comparison of visits").

    Attributes:
        high: seed threshold, in robust standard deviations of the difference.
        low: region threshold (hysteresis), same units, ``<= high``.
        min_radius: smallest change, as the radius of a disc in fractions of the FOV
            diameter (0.002 of a 1400-px FOV is about 3 px).
        tolerance: half-width (analysis px) of the local min/max range that absorbs the
            registration residual.
        vessel_weight: factor on the difference inside the dilated vessel band.
        smooth: Gaussian sigma (analysis px) of the difference.
        side: long side (px) of the analysis copies.
        rim: the overlap is eroded by this fraction of the FOV diameter.
        noise_window: the difference is measured in units of its local noise level over
            Gaussian windows of this fraction of the FOV diameter (never below the
            global level); 0: the global level only.
    """

    high: float = 3.5
    low: float = 3.0
    min_radius: float = 0.002
    tolerance: int = 2
    vessel_weight: float = 0.5
    smooth: float = 1.0
    side: int = 1536
    rim: float = 0.03
    noise_window: float = 0.1

    def __post_init__(self) -> None:
        if not 0 < self.low <= self.high:
            raise ValueError(f"low, high: expected 0 < low <= high, got {self.low}, {self.high}")
        if min(self.min_radius, self.tolerance, self.smooth, self.rim, self.noise_window) < 0:
            raise ValueError("min_radius, tolerance, smooth, rim and noise_window must be >= 0")
        if not 0 <= self.vessel_weight <= 1:
            raise ValueError(f"vessel_weight: expected in [0, 1], got {self.vessel_weight}")
        if self.side < 64:
            raise ValueError(f"side: expected >= 64, got {self.side}")


@dataclass(frozen=True)
class Change:
    """One changed region (baseline pixels).

    Attributes:
        x, y: centroid.
        area: pixels.
        bbox: ``(x, y, width, height)`` of the bounding box.
        polarity: ``"brighter"`` or ``"darker"`` in the follow-up.
        contrast: mean signed difference (follow-up minus baseline, [0, 1] intensity).
        score: peak difference in robust standard deviations.
    """

    x: float
    y: float
    area: float
    bbox: tuple[int, int, int, int]
    polarity: str
    contrast: float
    score: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields."""
        return {
            "x": round(self.x, 2),
            "y": round(self.y, 2),
            "area_px": round(self.area, 1),
            "bbox": list(self.bbox),
            "polarity": self.polarity,
            "contrast": round(self.contrast, 4),
            "score": round(self.score, 2),
        }


@dataclass
class ComparisonResult:
    """Outcome of :func:`compare`.

    Attributes:
        registration: the follow-up registered to the baseline (baseline px -> follow-up px).
        success: False when the registration failed: then there is no change map.
        reason: ``"ok"`` or why not.
        aligned: ``(h, w, 3)`` float32 BGR in [0, 1], the follow-up in the baseline frame,
            normalised to its illumination (analysis resolution, ``factors``), or None.
        baseline: the baseline at the same resolution, or None.
        difference: ``(h, w)`` float32 signed difference in robust standard deviations
            (follow-up minus baseline, 0 outside the overlap), or None.
        change_mask: ``(H, W)`` bool at the baseline's full resolution, or None.
        overlap: ``(h, w)`` bool analysis region, or None.
        changes: the regions, strongest first.
        factors: ``(sx, sy)`` baseline px -> analysis px.
        params: the detector's parameters.
        timings: seconds of ``register``, ``align``, ``detect``.
    """

    registration: RegistrationResult
    success: bool
    reason: str
    aligned: np.ndarray | None = None
    baseline: np.ndarray | None = None
    difference: np.ndarray | None = None
    change_mask: np.ndarray | None = None
    overlap: np.ndarray | None = None
    changes: list[Change] = field(default_factory=list)
    factors: tuple[float, float] = (1.0, 1.0)
    params: ChangeParams = field(default_factory=ChangeParams)
    timings: dict[str, float] = field(default_factory=dict)


def weighted_sum(image: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``(h, w)`` float32 per-pixel sum of ``image``'s channels times ``weights``."""
    return np.einsum("hwc,hwc->hw", image, weights).astype(np.float32)


def _range_excess(a: np.ndarray, b: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """How far ``a`` lies outside the local range of ``b`` (signed, 0 inside it)."""
    lo, hi = cv2.erode(b, kernel), cv2.dilate(b, kernel)
    return np.where(a > hi, a - hi, np.where(a < lo, a - lo, 0.0)).astype(np.float32)


def tolerant_difference(alignment: Alignment, params: ChangeParams) -> tuple[np.ndarray, float]:
    """The signed change image in robust standard deviations, and the global deviation.

    Each pixel's unit is the larger of the global robust deviation and the local one
    (:func:`local_deviation`).

    The follow-up's weighted channel sum (``alignment.weights``: green-heavy, clipped
    channels left out) must lie outside the baseline's local range *and* the baseline
    outside the follow-up's (same sign) for a pixel to differ: a vessel edge moved by
    less than ``tolerance`` px differs by 0.

    Returns:
        ``((h, w) float32, sigma)``: 0 outside the overlap and on reflections.
    """
    a = weighted_sum(alignment.aligned, alignment.weights)
    b = weighted_sum(alignment.baseline, alignment.weights)
    valid = alignment.overlap & ~alignment.reflections
    k = 2 * params.tolerance + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    e1 = _range_excess(a, b, kernel)
    e2 = -_range_excess(b, a, kernel)
    same = np.sign(e1) == np.sign(e2)
    diff = np.where(same, np.sign(e1) * np.minimum(np.abs(e1), np.abs(e2)), 0.0)
    diff = diff.astype(np.float32)
    if params.smooth > 0:
        diff = cv2.GaussianBlur(diff, (0, 0), params.smooth)
    quiet = valid & ~alignment.vessels
    residual = a - b
    raw = residual[quiet]
    if raw.size == 0:
        return np.zeros_like(diff), 1.0
    centre = float(np.median(raw))
    sigma = max(1.4826 * float(np.median(np.abs(raw - centre))), 1e-3)
    if params.noise_window > 0:
        window = params.noise_window * alignment.diameter
        z = diff / np.maximum(local_deviation(residual - centre, quiet, sigma, window), sigma)
    else:
        z = diff / sigma
    z[alignment.vessels] *= params.vessel_weight
    z[~valid] = 0.0
    return z, sigma


def local_deviation(
    residual: np.ndarray, where: np.ndarray, sigma: float, window: float
) -> np.ndarray:
    """``(h, w)`` local standard deviation of ``residual`` over the pixels ``where``:
    the Gaussian-weighted (``window`` px) mean absolute residual times 1.2533 (a normal
    law's ratio), each residual clipped at ``4 sigma`` first so that a lesion barely
    raises its own noise level. Where a visit is darker (a dark corner, a vignette) its
    noise is amplified by the illumination match, and the local level says so."""
    clipped = np.minimum(np.abs(residual), 4.0 * sigma).astype(np.float32)
    return 1.2533 * masked_blur(clipped, where.astype(np.float32), max(2.0, window))


def find_changes(
    z: np.ndarray, contrast: np.ndarray, params: ChangeParams, min_area: float
) -> tuple[np.ndarray, list[tuple[np.ndarray, str, float, float]]]:
    """Hysteresis regions of ``z``: ``|z| >= low`` components holding a ``|z| >= high`` seed.

    Args:
        z: ``(h, w)`` float32 signed difference in robust standard deviations.
        contrast: ``(h, w)`` float32 signed difference in intensity units.
        params: the thresholds.
        min_area: fewest pixels of a region.

    Returns:
        ``(labels, regions)``: ``(h, w)`` int32 labels (0 = none) and, per region,
        ``(pixel mask indices (N, 2) as (y, x), polarity, mean contrast, peak |z|)``.
    """
    labels = np.zeros(z.shape, np.int32)
    regions = []
    for polarity, sign in (("brighter", 1.0), ("darker", -1.0)):
        s = z * sign
        n, lab, stats, _ = cv2.connectedComponentsWithStats(
            (s >= params.low).astype(np.uint8), connectivity=8
        )
        if n <= 1:
            continue
        peak = np.zeros(n, np.float32)
        np.maximum.at(peak, lab.ravel(), s.ravel())
        keep = np.flatnonzero((peak >= params.high) & (stats[:, cv2.CC_STAT_AREA] >= min_area))
        keep = keep[keep > 0]
        for k in keep:
            ys, xs = np.nonzero(lab == k)
            labels[ys, xs] = len(regions) + 1
            regions.append(
                (np.stack([ys, xs], 1), polarity, float(contrast[ys, xs].mean()), float(peak[k]))
            )
    return labels, regions


def _to_change(
    yx: np.ndarray, polarity: str, contrast: float, score: float, factors: tuple[float, float]
) -> Change:
    sx, sy = factors
    ys, xs = yx[:, 0], yx[:, 1]
    x0, y0 = (xs.min() + 0.5) / sx - 0.5, (ys.min() + 0.5) / sy - 0.5
    x1, y1 = (xs.max() + 0.5) / sx - 0.5, (ys.max() + 0.5) / sy - 0.5
    return Change(
        x=float((xs.mean() + 0.5) / sx - 0.5),
        y=float((ys.mean() + 0.5) / sy - 0.5),
        area=float(len(xs) / (sx * sy)),
        bbox=(
            int(np.floor(x0)),
            int(np.floor(y0)),
            int(np.ceil(x1 - x0)) + 1,
            int(np.ceil(y1 - y0)) + 1,
        ),
        polarity=polarity,
        contrast=contrast,
        score=score,
    )


def difference_maps(alignment: Alignment, params: ChangeParams) -> tuple[np.ndarray, np.ndarray]:
    """``(z, contrast)``: the tolerant difference in noise units
    (:func:`tolerant_difference`) and the signed weighted difference in intensity units,
    both ``(h, w)`` float32 at the analysis resolution. They do not depend on ``high``,
    ``low`` or ``min_radius``."""
    z, _ = tolerant_difference(alignment, params)
    contrast = weighted_sum(alignment.aligned - alignment.baseline, alignment.weights)
    return z, contrast


def changes_from_maps(
    z: np.ndarray, contrast: np.ndarray, alignment: Alignment, params: ChangeParams
) -> tuple[np.ndarray, list[Change]]:
    """``(labels, changes)``: :func:`find_changes` regions of :func:`difference_maps`,
    as :class:`Change` in baseline px, strongest first."""
    min_area = np.pi * (params.min_radius * alignment.diameter) ** 2
    labels, regions = find_changes(z, contrast, params, min_area)
    changes = [_to_change(yx, p, c, s, alignment.factors) for yx, p, c, s in regions]
    order = np.argsort([-c.score for c in changes], kind="stable")
    return labels, [changes[i] for i in order]


def detect_changes(
    alignment: Alignment, params: ChangeParams, full_shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, list[Change]]:
    """Changes of an :class:`Alignment`: ``(difference z, full-resolution mask, changes)``."""
    z, contrast = difference_maps(alignment, params)
    labels, changes = changes_from_maps(z, contrast, alignment, params)
    h, w = full_shape
    mask = cv2.resize((labels > 0).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    return z, mask.astype(bool), changes


def compare(
    baseline: np.ndarray,
    followup: np.ndarray,
    *,
    registration: RegistrationResult | None = None,
    params: ChangeParams | None = None,
    detector: Any = None,
    matcher: Any = None,
    **register_kwargs: Any,
) -> ComparisonResult:
    """Compare a follow-up visit with the baseline: aligned, normalised, what changed.

    Args:
        baseline: the first visit (``(H, W[, 3])`` uint8 BGR, gray, or float in [0, 1]).
        followup: the later visit.
        registration: a registration of ``baseline`` to ``followup`` already made
            (``register(baseline, followup)``); None registers them (each visit detected
            once, its field of view carried into the alignment).
        params: :class:`ChangeParams` (default: the calibrated defaults).
        detector, matcher: as :func:`~fundusfeat.pipeline.register.register`.
        **register_kwargs: further :func:`~fundusfeat.pipeline.register.register`
            options (``mask1``, ``mask2``, ``method``, ``transform_model``, ``threshold``, ...).

    Returns:
        :class:`ComparisonResult`; when the registration failed, ``success`` is False,
        ``reason`` says why and there is no change map.
    """
    params = _check_params(params)
    fovs: tuple = (None, None)
    if registration is None:
        masks = (register_kwargs.pop("mask1", None), register_kwargs.pop("mask2", None))
        options = _options(register_kwargs)
        detector = check_detector(detector if detector is not None else R2D2Fundus.create())
        matcher = check_matcher(matcher) or default_matcher(detector)
        t0 = time.perf_counter()
        f1, f2 = image_features(detector, (baseline, followup), masks)
        registration = _registered(f1, f2, matcher, options, time.perf_counter() - t0)
        fovs = (f1.fov, f2.fov)
    elif not isinstance(registration, RegistrationResult):
        raise TypeError(
            f"registration: expected RegistrationResult, got {type(registration).__name__}"
        )
    return _compared(baseline, followup, registration, params, fovs=fovs)


def _check_params(params: Any) -> ChangeParams:
    params = params if params is not None else ChangeParams()
    if not isinstance(params, ChangeParams):
        raise TypeError(f"params: expected ChangeParams, got {type(params).__name__}")
    return params


def _options(register_kwargs: dict[str, Any]) -> Options:
    return make_options("register_kwargs", **register_kwargs)


def _compared(
    baseline: np.ndarray,
    followup: np.ndarray,
    registration: RegistrationResult,
    params: ChangeParams,
    *,
    frame: BaselineFrame | None = None,
    fovs: tuple = (None, None),
) -> ComparisonResult:
    """The comparison of a registration: a failed one gives no change map."""
    timings = {"register": float(registration.timings.get("total", 0.0))}
    if not registration.success or registration.transform is None:
        return ComparisonResult(
            registration,
            False,
            f"registration failed: {registration.reason}",
            params=params,
            timings=timings,
        )
    return compare_aligned(
        baseline, followup, registration, params, timings, frame=frame, fovs=fovs
    )


def compare_aligned(
    baseline: np.ndarray,
    followup: np.ndarray,
    registration: RegistrationResult,
    params: ChangeParams,
    timings: dict[str, float] | None = None,
    *,
    frame: BaselineFrame | None = None,
    fovs: tuple[FieldOfView | None, FieldOfView | None] = (None, None),
) -> ComparisonResult:
    """The comparison after a successful registration (alignment and change detection).

    Args:
        baseline, followup, registration, params: as :func:`compare`.
        timings: seconds already spent (``register``), carried into the result.
        frame: the baseline's :func:`~fundusfeat.pipeline.alignment.baseline_frame` at
            ``params.side`` when already built (a series builds it once); None builds it.
        fovs: the visits' fields of view when already known (``ImageFeatures.fov``).
    """
    timings = dict(timings or {})
    t0 = time.perf_counter()
    if frame is None:
        frame = baseline_frame(
            baseline, fov=fovs[0], side=params.side, band=max(1, params.tolerance)
        )
    al = align_to_frame(frame, followup, registration.transform, fov=fovs[1], rim=params.rim)
    t1 = time.perf_counter()
    z, mask, changes = detect_changes(al, params, frame.shape)
    timings.update(align=t1 - t0, detect=time.perf_counter() - t1)
    logger.debug("compare: %d changes, %s", len(changes), timings)
    return ComparisonResult(
        registration,
        True,
        "ok",
        aligned=al.aligned,
        baseline=al.baseline,
        difference=z,
        change_mask=mask,
        overlap=al.overlap,
        changes=changes,
        factors=al.factors,
        params=params,
        timings=timings,
    )


def chain(first: Transform, second: Transform, shape: tuple[int, int]) -> Transform | None:
    """``second`` after ``first`` (baseline -> previous -> visit) over the baseline:
    :func:`~fundusfeat.geometry.fitting.compose` on a 32 x 32 grid of the ``(H, W)``
    image, or None when undefined."""
    h, w = shape
    return compose(first, second, (0.0, 0.0, w - 1.0, h - 1.0))


def compare_series(
    images: Sequence[np.ndarray],
    *,
    params: ChangeParams | None = None,
    detector: Any = None,
    matcher: Any = None,
    **register_kwargs: Any,
) -> list[ComparisonResult]:
    """Compare every later visit with the first (the baseline).

    Every visit is detected and its field of view estimated once (in one batch), and the
    baseline's analysis frame is built once. Each later visit is registered to the
    baseline from those features; when that fails it is registered to the previous
    visit and the two transforms are chained (the previous visit must have been placed):
    see :func:`through_previous` for what the chained registration carries. Order the
    visits by date first (:func:`fundusfeat.io.dicom.visit_order` for DICOM files).

    Args:
        images: two or more visits, the baseline first.
        params: as :func:`compare`.
        detector, matcher: as :func:`~fundusfeat.pipeline.register.register`.
        register_kwargs: further :func:`~fundusfeat.pipeline.register.register` options
            (``method``, ``transform_model``, ``threshold``, ...).

    Returns:
        One :class:`ComparisonResult` per later visit (``len(images) - 1``).
    """
    if isinstance(images, np.ndarray) or len(images) < 2:
        raise ValueError("images: expected a sequence of two or more visits")
    params = _check_params(params)
    options = _options(register_kwargs)
    detector = check_detector(detector if detector is not None else R2D2Fundus.create())
    matcher = check_matcher(matcher) or default_matcher(detector)
    t0 = time.perf_counter()
    feats = image_features(detector, list(images), [None] * len(images))
    detect = 2.0 * (time.perf_counter() - t0) / len(images)  # a pair's share
    base = images[0]
    frame: BaselineFrame | None = None
    results: list[ComparisonResult] = []
    for k in range(1, len(images)):
        reg = _registered(feats[0], feats[k], matcher, options, detect)
        prev = results[-1] if results else None
        if not reg.success and prev is not None and prev.success:
            step = _registered(feats[k - 1], feats[k], matcher, options, detect)
            if step.success and step.transform is not None:
                chained = through_previous(prev.registration, step, feats[0].region.shape, options)
                reg = chained if chained is not None else reg
        if reg.success and frame is None:
            frame = baseline_frame(
                base, fov=feats[0].fov, side=params.side, band=max(1, params.tolerance)
            )
        results.append(
            _compared(base, images[k], reg, params, frame=frame, fovs=(feats[0].fov, feats[k].fov))
        )
    return results


def _registered(f1, f2, matcher, options: Options, detect: float) -> RegistrationResult:
    t0 = time.perf_counter()
    res = register_features(f1, f2, matcher, options, {"detect": detect})
    res.timings["total"] = detect + time.perf_counter() - t0
    return res


def through_previous(
    first: RegistrationResult,
    step: RegistrationResult,
    shape: tuple[int, int],
    options: Options | None = None,
) -> RegistrationResult | None:
    """A registration of the baseline to a visit through the previous visit.

    Args:
        first: baseline -> previous visit (succeeded).
        step: previous visit -> this visit (succeeded), from the same features of the
            previous visit as ``first``.
        shape: ``(H, W)`` of the baseline.
        options: the registration settings (inlier threshold, confidence threshold).

    Returns:
        The chained registration, or None when the transforms do not compose. Its
        evidence is its own: ``keypoints1`` are the baseline's, ``keypoints2`` the
        visit's, ``matches`` the inlier matches of ``first`` and ``step`` that meet at
        the same keypoint of the previous visit, ``inliers`` those the chained transform
        explains within the inlier threshold; ``confidence`` is the product of the two
        (both must be right) and ``success`` compares it with the threshold; ``evidence``
        is None (no verification of its own); ``reason`` says it went through the
        previous visit.
    """
    options = options if options is not None else Options()
    chained = chain(first.transform, step.transform, shape)
    if chained is None:
        return None
    to_prev = {
        m.trainIdx: m.queryIdx
        for m, ok in zip(first.matches, first.inliers[:, 0], strict=True)
        if ok
    }
    matches = [
        cv2.DMatch(to_prev[m.queryIdx], m.trainIdx, m.distance)
        for m, ok in zip(step.matches, step.inliers[:, 0], strict=True)
        if ok and m.queryIdx in to_prev
    ]
    p1 = np.array([first.keypoints1[m.queryIdx].pt for m in matches], np.float64).reshape(-1, 2)
    p2 = np.array([step.keypoints2[m.trainIdx].pt for m in matches], np.float64).reshape(-1, 2)
    residual = np.linalg.norm(chained.apply(p1) - p2, axis=1) if len(p1) else np.zeros(0)
    inliers = (residual <= options.ransac_threshold).astype(np.uint8).reshape(-1, 1)
    confidence = float(first.confidence * step.confidence)
    success = confidence >= options.threshold and int(inliers.sum()) >= options.min_inliers
    reason = (
        "ok (through the previous visit)"
        if success
        else (
            f"through the previous visit: confidence {confidence:.3f}, "
            f"{int(inliers.sum())} chained inliers"
        )
    )
    return RegistrationResult(
        H=chained.homography(),
        success=success,
        reason=reason,
        keypoints1=first.keypoints1,
        keypoints2=step.keypoints2,
        matches=matches,
        inliers=inliers,
        timings={"total": float(step.timings.get("total", 0.0))},
        transform=chained,
        confidence=confidence,
        evidence=None,
    )
