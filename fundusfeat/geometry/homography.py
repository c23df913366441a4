"""3x3 homography helpers: building (a translation, a resize, a transform about the image
centre) and applying (to points, to an image).

Coordinates: pixel ``(x, y)`` with the centre of the top-left pixel at (0, 0), the
convention of ``cv2.warpPerspective``. A homography ``H`` maps points of the first image
onto the second: ``p2 ~ H @ [x1, y1, 1]``.
"""

from __future__ import annotations

import cv2
import numpy as np


def about_centre(
    core: np.ndarray, width: int, height: int, shift: tuple[float, float] = (0.0, 0.0)
) -> np.ndarray:
    """A transform ``core`` applied about the image centre, then shifted.

    Returns:
        (3, 3) float64 ``T(c + shift) @ core @ T(-c)`` normalised to ``H[2, 2] = 1``, with
        ``c = ((width - 1) / 2, (height - 1) / 2)`` the centre in pixel-centre coordinates.
    """
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    H = (
        translation(cx + shift[0], cy + shift[1])
        @ np.asarray(core, np.float64)
        @ translation(-cx, -cy)
    )
    return H / H[2, 2]


def translation(dx: float, dy: float) -> np.ndarray:
    """(3, 3) float64 homography that shifts points by (dx, dy)."""
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def scaling(sx: float, sy: float | None = None) -> np.ndarray:
    """(3, 3) float64 homography of a resize by (sx, sy) with cv2.resize's pixel centres.

    ``cv2.resize`` maps pixel centre x to ``(x + 0.5) * sx - 0.5``.
    """
    sy = sx if sy is None else sy
    return np.array(
        [[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]], dtype=np.float64
    )


def transform_points(H: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a homography to (N, 2) points; returns (N, 2) float64 (NaN behind the camera)."""
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    hom = np.concatenate([pts, np.ones((len(pts), 1))], axis=1) @ np.asarray(H, np.float64).T
    with np.errstate(divide="ignore", invalid="ignore"):
        out = hom[:, :2] / hom[:, 2:3]
    out[hom[:, 2] <= 1e-12] = np.nan
    return out


def warp_image(
    image: np.ndarray, H: np.ndarray, size: tuple[int, int], interpolation: int = cv2.INTER_LINEAR
) -> np.ndarray:
    """Warp ``image`` by ``H`` (source -> destination) into a (width, height) canvas.

    Pixels that come from outside the source are 0.
    """
    return cv2.warpPerspective(
        image, H, size, flags=interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
