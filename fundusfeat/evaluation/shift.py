"""Shift repeatability: do keypoints move with the image, or stay on the network's grid?

Each image is translated by ``(dx, dy)`` pixels (``cv2.warpAffine``, bilinear; integer
shifts copy pixels exactly, half-pixel ones blur a little) and detected again. A
keypoint ``p`` of the original counts as found again when the shifted image has a
keypoint within ``tolerance`` pixels of ``p + (dx, dy)``; only keypoints whose shifted
position stays inside the frame are counted. A detector whose keypoints lock to a
stride-``s`` grid finds few keypoints again at shifts that are not multiples of ``s``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from scipy.spatial import cKDTree

from fundusfeat.geometry.estimation import keypoints_to_array

SHIFTS: tuple[tuple[float, float], ...] = (
    (1, 0),
    (0, 2),
    (3, 1),
    (2, 3),
    (5, 0),
    (6, 5),
    (7, 7),
    (4, 4),
    (0.5, 0.5),
    (2.5, 1.5),
)
"""The shifts of the benchmark (pixels, ``(dx, dy)``): integer ones off every power-of-2
grid, one on the stride-4 grid, and two half-pixel ones."""

DEFAULT_TOLERANCE = 1.0


def shift_image(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``image`` translated by ``(dx, dy)`` pixels (content moves right/down), black border."""
    h, w = image.shape[:2]
    matrix = np.float64([[1.0, 0.0, dx], [0.0, 1.0, dy]])
    return cv2.warpAffine(
        image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )


def found_again(
    points: np.ndarray,
    shifted_points: np.ndarray,
    shift: tuple[float, float],
    size: tuple[int, int],
    tolerance: float = DEFAULT_TOLERANCE,
) -> float:
    """Fraction of ``points`` with a ``shifted_points`` entry within ``tolerance`` of
    ``point + shift``.

    Args:
        points: (N, 2) keypoints ``(x, y)`` of the original image.
        shifted_points: (M, 2) keypoints of the shifted image.
        shift: ``(dx, dy)``.
        size: ``(width, height)`` of the images; points shifted outside are not counted.
        tolerance: distance in pixels.

    Returns:
        The fraction in [0, 1] (``nan`` when no point stays inside).
    """
    return why_missed(points, shifted_points, shift, size, tolerance)[0]


def why_missed(
    points: np.ndarray,
    shifted_points: np.ndarray,
    shift: tuple[float, float],
    size: tuple[int, int],
    tolerance: float = DEFAULT_TOLERANCE,
    drift: float = 3.0,
) -> tuple[float, float, float]:
    """:func:`found_again`'s fraction and what became of the others.

    Returns:
        ``(found, drifted, lost)``, fractions of the counted ``points`` that sum to 1:
        a shifted keypoint within ``tolerance`` of ``point + shift``; the nearest one
        farther but within ``drift`` px (the keypoint moved: its position is not
        shift-equivariant); none within ``drift`` (it vanished: usually a weak keypoint
        crossing a threshold). ``nan`` each when no point stays inside.
    """
    w, h = size
    target = np.asarray(points, np.float64).reshape(-1, 2) + np.asarray(shift, np.float64)
    inside = (target[:, 0] >= 0) & (target[:, 0] <= w - 1)
    inside &= (target[:, 1] >= 0) & (target[:, 1] <= h - 1)
    target = target[inside]
    if len(target) == 0:
        return float("nan"), float("nan"), float("nan")
    if len(shifted_points) == 0:
        return 0.0, 0.0, 1.0
    tree = cKDTree(np.asarray(shifted_points, np.float64).reshape(-1, 2))
    dist, _ = tree.query(target)
    found = float(np.mean(dist <= tolerance))
    lost = float(np.mean(dist > drift))
    return found, 1.0 - found - lost, lost


def shift_repeatability(
    detector: Any,
    image: np.ndarray,
    shifts: Sequence[tuple[float, float]] = SHIFTS,
    tolerance: float = DEFAULT_TOLERANCE,
) -> np.ndarray:
    """Shift repeatability of a cv2.Feature2D-like ``detector`` on one image.

    Returns:
        ``(len(shifts),)`` float64, the fraction of keypoints found again per shift.
    """
    size = (image.shape[1], image.shape[0])
    points = keypoints_to_array(tuple(detector.detect(image, None)))
    out = []
    for dx, dy in shifts:
        moved = keypoints_to_array(tuple(detector.detect(shift_image(image, dx, dy), None)))
        out.append(found_again(points, moved, (dx, dy), size, tolerance))
    return np.asarray(out, dtype=np.float64)
