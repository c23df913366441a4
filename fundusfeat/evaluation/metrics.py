"""The FIRE Registration Score: per-pair control-point error, success curve and its AUC.

Direction of the error (FIRE, Hernandez-Matas et al. 2017, and the paper): a pair has a
*fixed* image (FIRE's ``_1``, our ``img1``) and a *moving* image (``_2``, ``img2``); the
registration brings the moving image onto the fixed one. Our transform ``T`` maps
image-1 pixels onto image 2 (for a homography, ``p2 ~ H p1``), so the moving control
points are mapped into the fixed image with ``T.inverse`` (``inv(H)``) and compared
there::

    error = mean_i || fixed_i - T^-1(moving_i) ||_2        (fixed-image pixels)

Success curve: ``F(t) = #{pairs with error <= t} / #pairs`` for thresholds ``t`` in
``[0, 25]`` px. A failed pair (no transform, or points sent to infinity) has an infinite
error: it counts in the denominator and never succeeds.

Integration rule: the Registration Score is the *exact* area under the step function
``F`` over ``[0, T]`` divided by ``T`` (``T = 25`` px). For one pair with error ``e`` the
area of ``1[e <= t]`` is ``max(0, T - e)``, so::

    AUC = mean_i max(0, 1 - e_i / T)        (in [0, 1]; 1 = every pair exact)

A uniform grid of thresholds with the trapezoid rule converges to this value as the
step shrinks (a 0.1 px step differs by less than 0.002).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from fundusfeat.geometry.homography import transform_points
from fundusfeat.geometry.transforms import Transform, homography_transform

MAX_THRESHOLD = 25.0
"""Upper end (pixels) of the success curve and of the Registration Score's integral."""

SUCCESS_THRESHOLDS = (5.0, 10.0, 25.0)
"""Thresholds (pixels) at which success rates are reported."""

FIRE_CATEGORIES = ("S", "P", "A")
"""FIRE's categories: S (high overlap), P (low overlap), A (anatomical changes)."""

SUPERRETINA_EXCLUDED = ("P37",)
"""Pairs left out by the SuperRetina convention (Liu et al. 2022)."""


def pair_error(
    transform: Transform | np.ndarray | None, points_fixed: np.ndarray, points_moving: np.ndarray
) -> float:
    """Mean control-point error of one registered pair (FIRE's definition).

    Args:
        transform: the :class:`~fundusfeat.geometry.transforms.Transform` (or a (3, 3) homography)
            mapping fixed-image (image 1) pixels onto the moving image (image 2), or None
            for a failed registration.
        points_fixed: (N, 2) float (x, y) control points in the fixed image (pixels).
        points_moving: (N, 2) float the corresponding points in the moving image.

    Returns:
        ``mean_i ||fixed_i - T^-1(moving_i)||`` in fixed-image pixels; ``inf`` if there
        is no transform, it is singular or non-finite, or a point has no preimage.

    Raises:
        ValueError: if the point arrays are not (N, 2) with the same N >= 1.
    """
    fixed = np.asarray(points_fixed, dtype=np.float64)
    moving = np.asarray(points_moving, dtype=np.float64)
    if fixed.ndim != 2 or fixed.shape[1] != 2 or fixed.shape != moving.shape or len(fixed) == 0:
        raise ValueError(
            "points_fixed, points_moving: expected two (N, 2) arrays with the same N >= 1, "
            f"got {fixed.shape} and {moving.shape}"
        )
    if transform is None:
        return math.inf
    if not isinstance(transform, Transform):
        H = np.asarray(transform, dtype=np.float64)
        if H.shape != (3, 3) or not np.all(np.isfinite(H)) or abs(H[2, 2]) < 1e-12:
            return math.inf
        transform = homography_transform(H)
    try:
        mapped = transform.inverse(moving)
    except np.linalg.LinAlgError:
        return math.inf
    err = float(np.mean(np.linalg.norm(fixed - mapped, axis=1)))
    return err if math.isfinite(err) else math.inf


def _errors(errors: Iterable[float]) -> np.ndarray:
    e = np.asarray(list(errors), dtype=np.float64).reshape(-1)
    if np.any(np.isnan(e)) or np.any(e < 0):
        raise ValueError("errors: expected non-negative numbers or inf (failed pairs)")
    return e


def registration_score(errors: Iterable[float], max_threshold: float = MAX_THRESHOLD) -> float:
    """Area under the success curve over ``[0, max_threshold]``, normalised to [0, 1].

    The exact area of the step function (see the module docstring):
    ``mean_i max(0, 1 - e_i / max_threshold)``; ``inf`` errors contribute 0.

    Args:
        errors: per-pair errors (pixels), ``inf`` for failures.
        max_threshold: the upper threshold ``T`` (pixels, > 0).

    Returns:
        The score in [0, 1]; ``nan`` for no pairs.
    """
    if not max_threshold > 0:
        raise ValueError(f"max_threshold must be > 0, got {max_threshold}")
    e = _errors(errors)
    if len(e) == 0:
        return math.nan
    return float(np.mean(np.clip(1.0 - e / max_threshold, 0.0, 1.0)))


def success_curve(errors: Iterable[float], thresholds: Sequence[float]) -> np.ndarray:
    """Fraction of pairs with ``error <= t`` for each threshold ``t``.

    Returns:
        (len(thresholds),) float64 in [0, 1] (``nan`` for no pairs).
    """
    e = _errors(errors)
    t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if len(e) == 0:
        return np.full(len(t), math.nan)
    return (e[None, :] <= t[:, None]).mean(axis=1)


@dataclass(frozen=True)
class Score:
    """Registration Score and companions for one set of pairs.

    Attributes:
        auc: Registration Score (exact normalised area, thresholds 0..25 px).
        num_pairs: number of pairs scored.
        num_failures: pairs without a transform (infinite error).
        median_error: median error in pixels (``inf`` if half or more failed).
        success: ``{threshold: fraction of pairs with error <= threshold}`` for
            :data:`SUCCESS_THRESHOLDS`.
    """

    auc: float
    num_pairs: int
    num_failures: int
    median_error: float
    success: dict[float, float]

    @classmethod
    def from_errors(cls, errors: Iterable[float]) -> Score:
        """Score a set of per-pair errors (pixels; ``inf`` = failed)."""
        e = _errors(errors)
        rates = success_curve(e, SUCCESS_THRESHOLDS)
        return cls(
            auc=registration_score(e),
            num_pairs=len(e),
            num_failures=int(np.sum(~np.isfinite(e))),
            median_error=float(np.median(e)) if len(e) else math.nan,
            success={t: float(r) for t, r in zip(SUCCESS_THRESHOLDS, rates, strict=True)},
        )


@dataclass(frozen=True)
class Conventions:
    """Both published conventions of the FIRE Registration Score for one method.

    Attributes:
        pooled: the paper's convention: all pairs pooled.
        by_category: per-category scores (categories present among the pairs).
        mauc: SuperRetina's convention: mean of the S, P, A AUCs present, computed with
            the pairs in :data:`SUPERRETINA_EXCLUDED` left out (``nan`` if no category).
        mauc_categories: the categories averaged into ``mauc``.
    """

    pooled: Score
    by_category: dict[str, Score]
    mauc: float
    mauc_categories: tuple[str, ...]


def score_conventions(
    names: Sequence[str],
    categories: Sequence[str],
    errors: Sequence[float],
    excluded: Sequence[str] = SUPERRETINA_EXCLUDED,
) -> Conventions:
    """Score one method's per-pair errors under both conventions.

    Args:
        names: pair names (e.g. ``"P37"``), aligned with ``errors``.
        categories: pair categories (``"S"``, ``"P"``, ``"A"`` or others), aligned.
        errors: per-pair errors in pixels, ``inf`` for failures.
        excluded: pair names left out of the SuperRetina mAUC.

    Returns:
        The :class:`Conventions`.
    """
    if not len(names) == len(categories) == len(errors):
        raise ValueError("names, categories and errors must have the same length")
    e = _errors(errors)
    cats = np.asarray(categories, dtype=object)
    present = sorted(set(categories), key=_category_order)
    by_category = {c: Score.from_errors(e[cats == c]) for c in present}
    kept = ~np.isin(np.asarray(names, dtype=object), list(excluded))
    averaged = tuple(c for c in FIRE_CATEGORIES if np.any((cats == c) & kept))
    aucs = [registration_score(e[(cats == c) & kept]) for c in averaged]
    return Conventions(
        pooled=Score.from_errors(e),
        by_category=by_category,
        mauc=float(np.mean(aucs)) if aucs else math.nan,
        mauc_categories=averaged,
    )


def _category_order(category: str) -> tuple[int, str]:
    rank = FIRE_CATEGORIES.index(category) if category in FIRE_CATEGORIES else 99
    return rank, category


def mean_corner_error(H_est: np.ndarray, H_true: np.ndarray, width: int, height: int) -> float:
    """Mean distance (image-2 pixels) between the four image-1 corners mapped by each H.

    Args:
        H_est, H_true: (3, 3) homographies mapping image-1 pixels onto image 2.
        width, height: size of image 1 (pixels).

    Returns:
        The mean Euclidean corner error; ``inf`` if ``H_est`` sends a corner to infinity.
    """
    corners = np.array(
        [[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], np.float64
    )
    err = np.linalg.norm(
        transform_points(H_est, corners) - transform_points(H_true, corners), axis=1
    )
    return float(np.mean(err)) if np.all(np.isfinite(err)) else math.inf
