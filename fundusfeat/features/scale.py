"""The working scale: the resize factor that brings a field of view to the network's
size, and the maps of ``(x, y)`` pixel coordinates between the input and working images.

Resizing by ``s`` maps a point with ``x' = (x + 0.5) * s - 0.5`` (the pixel-centre
convention of ``cv2.resize`` and ``F.interpolate(..., align_corners=False)``); the
origin is the centre of the top-left pixel (``cv2.KeyPoint.pt``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def working_scale(
    fov_diameter: float,
    target_diameter: float,
    max_upscale: float = 2.0,
    tolerance: float = 0.0,
) -> float:
    """Resize factor that brings a FOV of ``fov_diameter`` px to ``target_diameter`` px.

    Returns ``min(target_diameter / fov_diameter, max_upscale)``, or exactly 1 when that
    is within ``tolerance`` of 1 (no resampling of an image already near the working
    size).
    """
    if not (np.isfinite(fov_diameter) and fov_diameter > 0):
        raise ValueError(f"fov_diameter must be a positive finite number, got {fov_diameter}")
    if not (np.isfinite(target_diameter) and target_diameter > 0):
        raise ValueError(f"target_diameter must be positive and finite, got {target_diameter}")
    scale = float(min(target_diameter / fov_diameter, max_upscale))
    return 1.0 if abs(scale - 1.0) <= tolerance else scale


def _scale_xy(scale: float | Sequence[float]) -> np.ndarray:
    s = np.broadcast_to(np.asarray(scale, dtype=np.float64), (2,))
    if not np.all(np.isfinite(s) & (s > 0)):
        raise ValueError(f"scale must be positive and finite, got {scale}")
    return s


def to_working(xy: np.ndarray, scale: float | Sequence[float]) -> np.ndarray:
    """Map ``(N, 2)`` input-pixel ``(x, y)`` to a resized image: ``(xy + 0.5) * s - 0.5``.

    ``scale`` is a float or per-axis ``(sx, sy)`` (as returned by
    :func:`~fundusfeat.io.arrays.resize_image`). Returns float64 ``(N, 2)``.
    """
    return (np.asarray(xy, dtype=np.float64).reshape(-1, 2) + 0.5) * _scale_xy(scale) - 0.5


def from_working(xy: np.ndarray, scale: float | Sequence[float]) -> np.ndarray:
    """Inverse of :func:`to_working`: ``(xy + 0.5) / s - 0.5``. Returns float64 ``(N, 2)``."""
    return (np.asarray(xy, dtype=np.float64).reshape(-1, 2) + 0.5) / _scale_xy(scale) - 0.5
