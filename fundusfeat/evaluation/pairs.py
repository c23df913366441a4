"""The unit of evaluation: an image pair with control points, loaded on demand."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import cv2
import numpy as np


@dataclass(frozen=True)
class EvalPair:
    """A pair of fundus images with ground-truth control points.

    Image 1 is FIRE's *fixed* image and image 2 the *moving* one. Coordinates are pixel
    ``(x, y)`` of the original images, the centre of the top-left pixel at (0, 0).

    Attributes:
        name: pair identifier (FIRE: ``"S01"``, ``"P37"``; synthetic: ``"syn003"``).
        category: ``"S"``, ``"P"``, ``"A"`` (FIRE's categories) or another label.
        points_fixed: (N, 2) float64 control points in image 1.
        points_moving: (N, 2) float64 corresponding points in image 2.
        load: callable returning ``(img1, img2)``, two (H, W, 3) uint8 BGR arrays.
        H_true: (3, 3) float64 true homography image 1 -> image 2 when there is one
            (the homography presets), else None.
        H_oracle: (3, 3) float64 best homography of pairs that no homography relates
            exactly (the eye-model presets: least squares on dense true
            correspondences), else None: the ceiling of every projective method.
    """

    name: str
    category: str
    points_fixed: np.ndarray
    points_moving: np.ndarray
    load: Callable[[], tuple[np.ndarray, np.ndarray]] = field(repr=False, compare=False)
    H_true: np.ndarray | None = field(default=None, repr=False, compare=False)
    H_oracle: np.ndarray | None = field(default=None, repr=False, compare=False)


def rescale_moving(pair: EvalPair, scale: float) -> EvalPair:
    """``pair`` with image 2 resized by ``scale`` (a cross-resolution pair).

    Image 2 becomes ``cv2.resize(img2, None, fx=scale, fy=scale)`` (INTER_AREA to shrink,
    INTER_LINEAR to enlarge), whose pixel map is exactly ``x' = (x + 0.5) * scale - 0.5``;
    the moving control points and both homographies follow it. Image 1 and its points
    are unchanged, so errors stay in image-1 pixels.

    Raises:
        ValueError: ``scale`` is not a positive finite number.
    """
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    s = float(scale)
    if s == 1.0:
        return pair
    S = np.array([[s, 0.0, 0.5 * s - 0.5], [0.0, s, 0.5 * s - 0.5], [0.0, 0.0, 1.0]])
    interpolation = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    load = pair.load

    def load_rescaled() -> tuple[np.ndarray, np.ndarray]:
        img1, img2 = load()
        return img1, cv2.resize(img2, None, fx=s, fy=s, interpolation=interpolation)

    return replace(
        pair,
        name=f"{pair.name}@{s:g}",
        points_moving=(np.asarray(pair.points_moving, np.float64) + 0.5) * s - 0.5,
        load=load_rescaled,
        H_true=None if pair.H_true is None else S @ pair.H_true,
        H_oracle=None if pair.H_oracle is None else S @ pair.H_oracle,
    )
