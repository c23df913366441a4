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

Fitting and model choice are :mod:`fundusfeat.geometry.fitting`; resampling images
through a transform is :mod:`fundusfeat.geometry.warp`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

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
            ``apply(p)`` (:func:`fundusfeat.geometry.warp.resample`:
            ``cv2.warpPerspective`` for a projective transform).
        """
        from fundusfeat.geometry.warp import resample  # the one warp (it imports this module)

        return resample(image2, self, dsize, interpolation=interpolation, border_value=border_value)

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
