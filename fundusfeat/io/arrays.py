"""Small array-level image helpers shared by the whole package: dtype conversion,
resizing, discs.

Images are numpy arrays as ``cv2.imread`` gives them (``(H, W)`` or ``(H, W, C)``);
floats are in [0, 1]. Pixel coordinates are ``(x, y)`` with the centre of the top-left
pixel at (0, 0); resizing by ``s`` maps ``x`` to ``(x + 0.5) * s - 0.5`` (the
convention of ``cv2.resize`` and ``F.interpolate(align_corners=False)``).
"""

from __future__ import annotations

import cv2
import numpy as np


def to_uint8(image: np.ndarray) -> np.ndarray:
    """uint8 as is; floats in [0, 1] rounded to 0..255 (clipped, NaN -> 0)."""
    if image.dtype == np.uint8:
        return image
    scaled = np.nan_to_num(image.astype(np.float32, copy=False), nan=0.0) * np.float32(255.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def to_unit_float(image: np.ndarray) -> np.ndarray:
    """float32 in [0, 1]: uint8 divided by 255, floats passed through as float32."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) * np.float32(1.0 / 255.0)
    return image.astype(np.float32, copy=False)


def resize_image(image: np.ndarray, scale: float) -> tuple[np.ndarray, tuple[float, float]]:
    """Resize by ``scale`` to integer size; INTER_AREA to shrink, INTER_LINEAR to enlarge.

    Args:
        image: ``(H, W[, C])`` array (any dtype cv2.resize accepts).
        scale: nominal resize factor (> 0).

    Returns:
        The resized image ``(H', W'[, C])`` with ``H' = max(1, round(H * scale))`` (and
        likewise ``W'``) and the exact per-axis factors ``(sx, sy) = (W'/W, H'/H)``. The
        image itself (not a copy) when the size does not change.
    """
    h, w = image.shape[:2]
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    if (new_w, new_h) == (w, h):
        return image, (1.0, 1.0)
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    return cv2.resize(image, (new_w, new_h), interpolation=interp), (new_w / w, new_h / h)


def resize_long_side(image: np.ndarray, side: int) -> tuple[np.ndarray, tuple[float, float]]:
    """:func:`resize_image` so that the longer side is ``side`` pixels."""
    return resize_image(image, side / max(image.shape[:2]))


def disc_mask(height: int, width: int, center: tuple[float, float], radius: float) -> np.ndarray:
    """``(height, width)`` bool disc (pixel centres within ``radius`` of ``center``).

    Built from one row of half-widths, so huge images stay cheap in memory.
    """
    ys = np.arange(height, dtype=np.float64)[:, None]
    xs = np.arange(width, dtype=np.float64)[None, :]
    half = np.sqrt(np.clip(radius**2 - (ys - center[1]) ** 2, 0.0, None))
    return (xs >= center[0] - half) & (xs <= center[0] + half) & (half > 0)


def points_in_mask(mask: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: the ``(N, 2)`` points, rounded to the nearest pixel, lie inside the
    ``(H, W)`` bool ``mask`` (False outside the image and for non-finite points)."""
    h, w = mask.shape
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    ok = np.isfinite(pts).all(axis=1)
    xi = np.rint(np.nan_to_num(pts[:, 0], nan=-1.0)).astype(np.int64)
    yi = np.rint(np.nan_to_num(pts[:, 1], nan=-1.0)).astype(np.int64)
    ok &= (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    ok[ok] = mask[yi[ok], xi[ok]]
    return ok
