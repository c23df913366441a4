"""The unit of evaluation: an image pair with control points, loaded on demand."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

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
