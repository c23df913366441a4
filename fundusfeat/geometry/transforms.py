"""Transform: the geometric relation between two fundus images, as a small value object.

Every transform maps image-1 pixels to image-2 pixels (the direction of ``H`` in
``cv2.findHomography(src=kps1, dst=kps2)``), in ``(x, y)`` pixels with the centre of
the top-left pixel at (0, 0). Models:

- ``"similarity"`` (4 dof), ``"affine"`` (6), ``"homography"`` (8): a 3x3 matrix
  (:class:`ProjectiveTransform`); they wrap cv2.
- ``"quadratic"`` (12): each output coordinate a quadratic polynomial of the input
  (Can et al. 2002, "A feature-based, robust, hierarchical algorithm for registering
  pairs of images of the curved human retina"), in normalised coordinates
  (:class:`QuadraticTransform`). It fits a curved retina seen from two camera positions,
  which no homography does.

``apply(points1) -> points2``, ``inverse(points2) -> points1``, ``warp(image2, dsize)``
(image 2 resampled into image 1's frame, as ``cv2.warpPerspective(img2, H, dsize,
flags=cv2.WARP_INVERSE_MAP)`` does for ``H``), ``homography()`` (the best projective
approximation, what cv2 code can use), ``to_dict()`` / :func:`from_dict` (JSON).

Fitting: :func:`fit` (least squares, or robust with a threshold) and :func:`choose_model`
(per pair, by held-out residual: k-fold cross-validation on the inliers).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from scipy.optimize import least_squares

from fundusfeat.geometry.homography import scaling, transform_points

MODELS = ("similarity", "affine", "homography", "quadratic")
"""The transform models, by increasing degrees of freedom."""

MIN_POINTS = {"similarity": 2, "affine": 3, "homography": 4, "quadratic": 6}
"""Fewest correspondences that determine each model."""

_INVERSE_ITERATIONS = 20
_INVERSE_TOLERANCE = 1e-9


def as_points(points: Any, name: str = "points") -> np.ndarray:
    """``(N, 2)`` float64 array of ``(x, y)`` points (an ``(N, 1, 2)`` cv2 layout is fine).

    Raises:
        ValueError: not ``N`` pairs of numbers.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim == 3 and pts.shape[1] == 1:
        pts = pts[:, 0]
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2), got {pts.shape}")
    return pts


class Transform:
    """Image-1 pixels -> image-2 pixels (see the module docstring)."""

    model: str

    def apply(self, points1: Any) -> np.ndarray:
        """``(N, 2)`` float64 image-2 positions of image-1 points (NaN where undefined)."""
        raise NotImplementedError

    def inverse(self, points2: Any) -> np.ndarray:
        """``(N, 2)`` float64 image-1 positions of image-2 points."""
        raise NotImplementedError

    def homography(self) -> np.ndarray:
        """(3, 3) float64 best projective approximation (``H[2, 2] = 1``)."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description; :func:`from_dict` rebuilds the transform."""
        raise NotImplementedError

    @property
    def dof(self) -> int:
        """Degrees of freedom of the model."""
        return {"similarity": 4, "affine": 6, "homography": 8, "quadratic": 12}[self.model]

    def warp(
        self,
        image2: np.ndarray,
        dsize: tuple[int, int],
        interpolation: int = cv2.INTER_LINEAR,
        border_value: float = 0,
    ) -> np.ndarray:
        """Image 2 resampled into image 1's frame.

        Args:
            image2: image 2 (any layout ``cv2.remap`` accepts).
            dsize: ``(width, height)`` of image 1's frame.
            interpolation: cv2 interpolation flag.
            border_value: value where image 2 has no pixel.

        Returns:
            ``(height, width[, C])``: output pixel ``p`` is ``image2`` sampled at
            ``apply(p)``.
        """
        width, height = _check_dsize(dsize)
        ys, xs = np.mgrid[0:height, 0:width]
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
        mapped = self.apply(grid).astype(np.float32)
        mapped[~np.isfinite(mapped)] = -1e6
        map_x = mapped[:, 0].reshape(height, width)
        map_y = mapped[:, 1].reshape(height, width)
        return cv2.remap(
            image2,
            map_x,
            map_y,
            interpolation,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=border_value,
        )

    def in_original_pixels(
        self, factors1: tuple[float, float], factors2: tuple[float, float]
    ) -> Transform:
        """This transform between resized images, expressed between the originals.

        ``self`` maps pixels of image 1 resized by ``factors1 = (sx, sy)`` to pixels of
        image 2 resized by ``factors2`` (``x_resized = (x + 0.5) * s - 0.5``, as
        ``cv2.resize``); the result maps original image-1 pixels to original image-2
        pixels, exactly.
        """
        raise NotImplementedError

    def residuals(self, points1: Any, points2: Any) -> np.ndarray:
        """``(N,)`` distances in image 2 between ``apply(points1)`` and ``points2``."""
        p1, p2 = as_points(points1, "points1"), as_points(points2, "points2")
        err = np.linalg.norm(self.apply(p1) - p2, axis=1)
        return np.where(np.isfinite(err), err, np.inf)


@dataclass(frozen=True, eq=False)
class ProjectiveTransform(Transform):
    """A 3x3 matrix transform: similarity, affine or homography.

    Attributes:
        matrix: (3, 3) float64, normalised so ``matrix[2, 2] = 1``.
        model: ``"similarity"``, ``"affine"`` or ``"homography"``.
    """

    matrix: np.ndarray
    model: str = "homography"

    def __post_init__(self) -> None:
        if self.model not in MODELS[:3]:
            raise ValueError(f"model must be one of {MODELS[:3]}, got {self.model!r}")
        m = np.asarray(self.matrix, dtype=np.float64)
        if m.shape != (3, 3) or not np.isfinite(m).all() or abs(m[2, 2]) < 1e-12:
            raise ValueError(
                f"matrix must be a finite (3, 3) array with matrix[2, 2] != 0, got {m}"
            )
        object.__setattr__(self, "matrix", m / m[2, 2])

    def apply(self, points1: Any) -> np.ndarray:
        return transform_points(self.matrix, as_points(points1, "points1"))

    def inverse(self, points2: Any) -> np.ndarray:
        return transform_points(np.linalg.inv(self.matrix), as_points(points2, "points2"))

    def homography(self) -> np.ndarray:
        return self.matrix.copy()

    def warp(
        self,
        image2: np.ndarray,
        dsize: tuple[int, int],
        interpolation: int = cv2.INTER_LINEAR,
        border_value: float = 0,
    ) -> np.ndarray:
        """``cv2.warpPerspective(image2, matrix, dsize, flags=interpolation |
        cv2.WARP_INVERSE_MAP)``: image 2 resampled into image 1's frame."""
        return cv2.warpPerspective(
            image2,
            self.matrix,
            _check_dsize(dsize),
            flags=interpolation | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=border_value,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "matrix": self.matrix.tolist()}

    def in_original_pixels(
        self, factors1: tuple[float, float], factors2: tuple[float, float]
    ) -> ProjectiveTransform:
        M = np.linalg.inv(scaling(*factors2)) @ self.matrix @ scaling(*factors1)
        return ProjectiveTransform(M, self.model)


@dataclass(frozen=True, eq=False)
class QuadraticTransform(Transform):
    """The 12-parameter quadratic model in normalised coordinates.

    With ``u = (p1 - centre1) / scale1`` and the monomials
    ``m(u) = (u_x^2, u_x u_y, u_y^2, u_x, u_y, 1)``, the image-2 point is
    ``p2 = centre2 + scale2 * coefficients @ m(u)`` (scales per axis).

    Attributes:
        coefficients: (2, 6) float64.
        centre1, centre2: ``(x, y)`` normalisation centres (pixels).
        scale1, scale2: ``(x, y)`` normalisation scales (pixels).
        region: ``(x0, y0, x1, y1)`` image-1 box of the points it was fitted on (where
            :meth:`homography` approximates it and :meth:`inverse` is reliable).
    """

    coefficients: np.ndarray
    centre1: tuple[float, float]
    scale1: tuple[float, float]
    centre2: tuple[float, float]
    scale2: tuple[float, float]
    region: tuple[float, float, float, float]
    model: str = "quadratic"

    def __post_init__(self) -> None:
        c = np.asarray(self.coefficients, dtype=np.float64)
        if c.shape != (2, 6) or not np.isfinite(c).all():
            raise ValueError(f"coefficients must be a finite (2, 6) array, got shape {c.shape}")
        for name in ("scale1", "scale2"):
            scale = tuple(float(v) for v in np.broadcast_to(getattr(self, name), (2,)))
            if not all(v > 0 and math.isfinite(v) for v in scale):
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
            object.__setattr__(self, name, scale)
        object.__setattr__(self, "coefficients", c)

    def _normalise1(self, p: np.ndarray) -> np.ndarray:
        return (p - np.asarray(self.centre1)) / np.asarray(self.scale1)

    def _monomials(self, u: np.ndarray) -> np.ndarray:
        x, y = u[:, 0], u[:, 1]
        return np.stack([x * x, x * y, y * y, x, y, np.ones_like(x)], axis=1)

    def apply(self, points1: Any) -> np.ndarray:
        u = self._normalise1(as_points(points1, "points1"))
        out = self._monomials(u) @ self.coefficients.T
        return np.asarray(self.centre2) + np.asarray(self.scale2) * out

    def _jacobian(self, u: np.ndarray) -> np.ndarray:
        """(N, 2, 2) d(normalised output) / d(normalised input)."""
        x, y = u[:, 0], u[:, 1]
        dx = np.stack([2 * x, y, np.zeros_like(x), np.ones_like(x), np.zeros_like(x), 0 * x], 1)
        dy = np.stack([np.zeros_like(x), x, 2 * y, np.zeros_like(x), np.ones_like(x), 0 * x], 1)
        return np.stack([dx @ self.coefficients.T, dy @ self.coefficients.T], axis=2)

    def inverse(self, points2: Any) -> np.ndarray:
        """Gauss-Newton from the inverse of :meth:`homography` (vectorised; converges in a
        few steps inside the fitted region; NaN where it does not converge)."""
        p2 = as_points(points2, "points2")
        if len(p2) == 0:
            return p2.copy()
        s1, s2 = np.asarray(self.scale1), np.asarray(self.scale2)
        target = (p2 - np.asarray(self.centre2)) / s2
        u = self._normalise1(transform_points(np.linalg.inv(self.homography()), p2))
        u = np.where(np.isfinite(u), u, 0.0)
        for _ in range(_INVERSE_ITERATIONS):
            res = self._monomials(u) @ self.coefficients.T - target
            step = np.linalg.solve(self._jacobian(u) + 1e-12 * np.eye(2), res[..., None])[..., 0]
            u = u - step
            if np.nanmax(np.abs(step)) < _INVERSE_TOLERANCE:
                break
        res = self._monomials(u) @ self.coefficients.T - target
        bad = ~(np.linalg.norm(res * s2, axis=1) < 1e-6)
        out = np.asarray(self.centre1) + s1 * u
        out[bad] = np.nan
        return out

    def homography(self) -> np.ndarray:
        """The least-squares homography of a 20 x 20 grid over :attr:`region` (computed
        once per transform)."""
        cached = self.__dict__.get("_homography")
        if cached is None:
            x0, y0, x1, y1 = self.region
            gx, gy = np.meshgrid(np.linspace(x0, x1, 20), np.linspace(y0, y1, 20))
            src = np.stack([gx.ravel(), gy.ravel()], axis=1)
            H, _ = cv2.findHomography(src, self.apply(src), 0)
            cached = H / H[2, 2]
            object.__setattr__(self, "_homography", cached)
        return cached.copy()

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": "quadratic",
            "coefficients": self.coefficients.tolist(),
            "centre1": list(self.centre1),
            "scale1": list(self.scale1),
            "centre2": list(self.centre2),
            "scale2": list(self.scale2),
            "region": list(self.region),
        }

    def in_original_pixels(
        self, factors1: tuple[float, float], factors2: tuple[float, float]
    ) -> QuadraticTransform:
        f1, f2 = np.asarray(factors1, np.float64), np.asarray(factors2, np.float64)
        offset1, offset2 = 0.5 * f1 - 0.5, 0.5 * f2 - 0.5  # x_resized = f x + offset
        x0, y0, x1, y1 = self.region
        lo = (np.array([x0, y0]) - offset1) / f1
        hi = (np.array([x1, y1]) - offset1) / f1
        return QuadraticTransform(
            coefficients=self.coefficients,
            centre1=tuple((np.asarray(self.centre1) - offset1) / f1),
            scale1=tuple(np.asarray(self.scale1) / f1),
            centre2=tuple((np.asarray(self.centre2) - offset2) / f2),
            scale2=tuple(np.asarray(self.scale2) / f2),
            region=(float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])),
        )


def from_dict(data: Mapping[str, Any]) -> Transform:
    """Rebuild a transform from :meth:`Transform.to_dict`.

    Raises:
        ValueError: an unknown model or malformed fields.
    """
    if not isinstance(data, Mapping) or "model" not in data:
        raise ValueError("transform: expected a dict with a 'model' entry")
    model = data["model"]
    try:
        if model in MODELS[:3]:
            return ProjectiveTransform(np.asarray(data["matrix"], dtype=np.float64), model)
        if model == "quadratic":
            return QuadraticTransform(
                coefficients=np.asarray(data["coefficients"], dtype=np.float64),
                centre1=tuple(float(v) for v in data["centre1"]),
                scale1=tuple(float(v) for v in np.broadcast_to(data["scale1"], (2,))),
                centre2=tuple(float(v) for v in data["centre2"]),
                scale2=tuple(float(v) for v in np.broadcast_to(data["scale2"], (2,))),
                region=tuple(float(v) for v in data["region"]),
            )
    except (KeyError, TypeError) as err:
        raise ValueError(f"transform: malformed {model!r} entry: {err}") from err
    raise ValueError(f"transform: model must be one of {MODELS}, got {model!r}")


def homography_transform(H: np.ndarray) -> ProjectiveTransform:
    """A :class:`ProjectiveTransform` of a homography matrix."""
    return ProjectiveTransform(np.asarray(H, dtype=np.float64), "homography")


# --------------------------------------------------------------------------- fitting
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
    coef, _, rank, _ = np.linalg.lstsq(design, v, rcond=None)  # (6, 2)
    if rank < 6:
        return None
    if threshold is not None:

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


def _check_dsize(dsize: Any) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in dsize)
    except (TypeError, ValueError) as err:
        raise ValueError(f"dsize must be (width, height), got {dsize!r}") from err
    if width <= 0 or height <= 0:
        raise ValueError(f"dsize must be positive, got {dsize!r}")
    return width, height


def warp_to(img2: np.ndarray, H: Transform | np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Resample image 2 into image 1's frame.

    Args:
        img2: image 2, any layout ``cv2.remap`` accepts.
        H: the :class:`~fundusfeat.geometry.transforms.Transform` or (3, 3) homography mapping
            image-1 pixels onto image 2.
        shape: image 1's shape; only ``shape[:2] == (height, width)`` is used.

    Returns:
        Image 2 warped to (height, width) (same dtype and channels as ``img2``):
        output pixel ``p`` is ``img2`` sampled at ``H(p)``; pixels that fall outside
        image 2 are 0.
    """
    if not isinstance(H, Transform):
        H = np.asarray(H, dtype=np.float64)
        if H.shape != (3, 3) or not np.all(np.isfinite(H)):
            raise ValueError(f"H: expected a finite (3, 3) homography, got shape {H.shape}")
        H = homography_transform(H)
    return H.warp(img2, (int(shape[1]), int(shape[0])))
