"""Fitting transforms to correspondences, choosing a pair's model, composing transforms.

:func:`fit` (least squares, or robust with a threshold), :func:`choose_model` (per pair,
by held-out residual: k-fold cross-validation on the inliers) and :func:`compose` (one
transform after another, refitted on a grid). Points are ``(x, y)`` pixels, the centre
of the top-left pixel at (0, 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from fundusfeat.geometry.transforms import (
    MIN_POINTS,
    MODELS,
    ProjectiveTransform,
    QuadraticTransform,
    Transform,
    as_points,
)


def fit(
    model: str,
    points1: Any,
    points2: Any,
    threshold: float | None = None,
) -> Transform | None:
    """Fit a transform to correspondences ``points1[i] -> points2[i]``.

    Args:
        model: one of :data:`MODELS`.
        points1, points2: ``(N, 2)`` corresponding points.
        threshold: None = least squares on all points; else a robust fit that treats
            points with a residual above ``threshold`` px as outliers (cv2's MAGSAC++
            for the homography and the affine model, RANSAC for the similarity, all
            LM-refined; ``scipy.optimize.least_squares`` with a ``soft_l1`` loss of
            scale ``threshold / 3`` for the quadratic). Robust projective fits are
            deterministic given ``cv2.setRNGSeed``.

    Returns:
        The transform, or None when it cannot be determined (too few or degenerate
        points).
    """
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    p1, p2 = as_points(points1, "points1"), as_points(points2, "points2")
    if len(p1) != len(p2):
        raise ValueError(f"points1 and points2 differ in length: {len(p1)} and {len(p2)}")
    if len(p1) < MIN_POINTS[model]:
        return None
    if model == "quadratic":
        return _fit_quadratic(p1, p2, threshold)
    return _fit_projective(model, p1, p2, threshold)


def _fit_projective(
    model: str, p1: np.ndarray, p2: np.ndarray, threshold: float | None
) -> ProjectiveTransform | None:
    """cv2's fits: least squares (LM-refined) without a threshold; MAGSAC++ (RANSAC for
    the similarity, which cv2 fits with nothing else) with one."""
    src, dst = p1.astype(np.float32), p2.astype(np.float32)
    robust = threshold is not None
    if model == "homography":
        method = cv2.USAC_MAGSAC if robust else 0
        M, _ = cv2.findHomography(src, dst, method, threshold or 3.0, maxIters=2000)
    else:
        if model == "similarity":
            estimate, method = cv2.estimateAffinePartial2D, cv2.RANSAC
        else:
            estimate, method = cv2.estimateAffine2D, cv2.USAC_MAGSAC if robust else cv2.RANSAC
        # without a threshold every point is an inlier: the LM-refined least squares
        M, _ = estimate(src, dst, method=method, ransacReprojThreshold=threshold or 1e9)
        if M is not None:
            M = np.vstack([M, [0.0, 0.0, 1.0]])
    if M is None or not np.isfinite(M).all() or abs(M[2, 2]) < 1e-12:
        return None
    try:
        out = ProjectiveTransform(M, model)
        np.linalg.inv(out.matrix)
    except (ValueError, np.linalg.LinAlgError):
        return None
    return out


def least_squares_svd(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, int]:
    """``np.linalg.lstsq(a, b, rcond=None)``'s solution and rank, from numpy's thin SVD.

    The same minimum-norm least-squares solution and the same rank rule (singular values
    at most ``eps * max(M, N)`` times the largest count as zero), equal to ``lstsq``'s up
    to float64 rounding, in a fraction of its time on tall matrices (a ``(1660, 6)``
    design: 0.45 ms against 1.3-6.6 ms, LAPACK's ``gelsd`` being slow to set up).

    Args:
        a: ``(M, N)`` float64 matrix.
        b: ``(M,)`` or ``(M, K)`` right-hand sides.

    Returns:
        ``(x, rank)``: ``x`` of shape ``(N,)`` or ``(N, K)``.
    """
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    limit = np.finfo(np.float64).eps * max(a.shape) * (s[0] if len(s) else 0.0)
    rank = int((s > limit).sum())
    inv = np.zeros_like(s)
    inv[:rank] = 1.0 / s[:rank]
    ub = u.T @ b
    x = vt.T @ (ub * (inv if ub.ndim == 1 else inv[:, None]))
    return x, rank


def _normalisation(p: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
    """Centroid and RMS distance per point (the same scale on both axes)."""
    centre = p.mean(axis=0)
    scale = max(float(np.sqrt(((p - centre) ** 2).sum(axis=1).mean() / 2.0)), 1e-6)
    return (float(centre[0]), float(centre[1])), (scale, scale)


def _fit_quadratic(
    p1: np.ndarray, p2: np.ndarray, threshold: float | None
) -> QuadraticTransform | None:
    c1, s1 = _normalisation(p1)
    c2, s2 = _normalisation(p2)
    u, v = (p1 - np.asarray(c1)) / np.asarray(s1), (p2 - np.asarray(c2)) / np.asarray(s2)
    x, y = u[:, 0], u[:, 1]
    design = np.stack([x * x, x * y, y * y, x, y, np.ones_like(x)], axis=1)
    coef, rank = least_squares_svd(design, v)  # (6, 2)
    if rank < 6:
        return None
    if threshold is not None:
        from scipy.optimize import least_squares  # ~0.1 s to import: only where used

        def residual(theta: np.ndarray) -> np.ndarray:
            return (design @ theta.reshape(2, 6).T - v).ravel(order="F")

        block = np.zeros((2 * len(design), 12))
        block[: len(design), :6] = design
        block[len(design) :, 6:] = design
        solution = least_squares(
            residual,
            coef.T.ravel(),
            jac=lambda _theta: block,
            loss="soft_l1",
            f_scale=threshold / 3.0 / s2[0],
            method="trf",
            x_scale="jac",
            tr_solver="exact",
        )
        coef = solution.x.reshape(2, 6).T
    region = (*p1.min(axis=0), *p1.max(axis=0))
    return QuadraticTransform(
        coefficients=coef.T,
        centre1=c1,
        scale1=s1,
        centre2=c2,
        scale2=s2,
        region=tuple(float(v) for v in region),
    )


@dataclass(frozen=True)
class ModelChoice:
    """The outcome of :func:`choose_model`.

    Attributes:
        model: the chosen model.
        held_out: ``{model: median held-out residual (px)}`` of every candidate.
    """

    model: str
    held_out: dict[str, float]


def held_out_residual(
    model: str, points1: np.ndarray, points2: np.ndarray, folds: int, seed: int = 0
) -> float:
    """Median residual of ``folds``-fold cross-validation: each fold is predicted by the
    least-squares ``model`` fitted on the other folds (``inf`` when a fit fails)."""
    n = len(points1)
    order = np.random.default_rng(seed).permutation(n)
    errors = np.empty(n)
    for k in range(folds):
        test = order[k::folds]
        train = np.setdiff1d(order, test, assume_unique=True)
        t = fit(model, points1[train], points2[train])
        if t is None:
            return math.inf
        errors[test] = t.residuals(points1[test], points2[test])
    return float(np.median(errors))


def choose_model(
    points1: Any,
    points2: Any,
    candidates: Sequence[str] = ("homography", "quadratic"),
    folds: int = 4,
    margin: float = 0.9,
    min_points: int = 40,
) -> ModelChoice:
    """Choose the transform model of a pair by held-out residual.

    Each candidate is scored by :func:`held_out_residual` on the (inlier)
    correspondences. A model with more degrees of freedom replaces the simpler one only
    when its held-out residual is below ``margin`` times the simpler one's, so a pair
    that a homography relates exactly keeps the homography (the quadratic only adds
    variance there).

    Args:
        points1, points2: ``(N, 2)`` inlier correspondences.
        candidates: models in increasing order of freedom; the first is the fallback.
        folds: cross-validation folds.
        margin: how much better (as a ratio) a richer model must predict.
        min_points: below this many points the simplest candidate is kept (too few
            points to judge a richer model).

    Returns:
        The :class:`ModelChoice`.
    """
    p1, p2 = as_points(points1, "points1"), as_points(points2, "points2")
    if not candidates:
        raise ValueError("candidates must not be empty")
    if len(p1) < max(min_points, folds * MIN_POINTS[candidates[-1]]):
        return ModelChoice(candidates[0], {})
    held = {m: held_out_residual(m, p1, p2, folds) for m in candidates}
    best = candidates[0]
    for m in candidates[1:]:
        if held[m] < margin * held[best]:
            best = m
    return ModelChoice(best, held)


def compose(
    first: Transform,
    second: Transform,
    box: tuple[float, float, float, float],
    samples: int = 32,
) -> Transform | None:
    """``second`` after ``first``, refitted on a grid (a quadratic and a homography have no
    closed-form composition in one of the models).

    Args:
        first: frame-1 px -> frame-2 px.
        second: frame-2 px -> frame-3 px.
        box: ``(x0, y0, x1, y1)`` frame-1 box where the composition must hold.
        samples: grid nodes per axis.

    Returns:
        A transform (quadratic when either is, else a homography) fitted by least squares
        to the ``samples x samples`` grid of ``box`` mapped through both, or None when
        undefined (too few finite points, a degenerate fit).
    """
    x0, y0, x1, y1 = box
    ys, xs = np.mgrid[y0 : y1 : samples * 1j, x0 : x1 : samples * 1j]
    grid = np.stack([xs.ravel(), ys.ravel()], 1)
    mapped = second.apply(first.apply(grid))
    ok = np.isfinite(mapped).all(axis=1)
    model = "quadratic" if "quadratic" in (first.model, second.model) else "homography"
    return fit(model, grid[ok], mapped[ok])
