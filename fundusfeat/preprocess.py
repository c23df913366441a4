"""Image preparation: validation, tensor conversion, field of view, scale normalisation.

Conventions used throughout fundusfeat:

- Images are numpy arrays as returned by ``cv2.imread``: ``(H, W, 3)`` BGR or ``(H, W)``
  gray. Accepted dtypes are ``uint8`` (0..255), ``uint16`` (0..65535, scaled to [0, 1])
  and ``float32``/``float64`` in [0, 1]. A fourth (alpha) channel is dropped.
- Point coordinates are ``(x, y)`` (column first) in pixels, with the origin at the
  *centre* of the top-left pixel (OpenCV convention, used by ``cv2.KeyPoint.pt``).
- Resizing by ``s`` maps a point with ``x' = (x + 0.5) * s - 0.5`` (the pixel-centre
  convention of ``cv2.resize`` and ``F.interpolate(..., align_corners=False)``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from fundusfeat.network import IMAGE_MEAN, IMAGE_STD

logger = logging.getLogger(__name__)

TARGET_FOV_DIAMETER = 750.0
"""FOV diameter (px) the network works at: the paper's best size 1152x768 has a FOV ~750 px."""

MIN_IMAGE_SIDE = 16
"""Smallest accepted image height/width in pixels."""

MAX_UPSCALE = 2.0
"""Largest working scale: small images are enlarged at most this much."""

_FOV_ANALYSIS_SIDE = 512  # FOV estimation runs on a copy whose long side is at most this
_ACCEPTED_DTYPES = (np.uint8, np.uint16, np.float32, np.float64)


# --------------------------------------------------------------------------- validation
def validate_image(img: object, name: str = "image") -> np.ndarray:
    """Check an image and return it in canonical form.

    Args:
        img: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` BGR or ``(H, W, 4)`` BGRA array;
            dtype ``uint8``, ``uint16`` or ``float32``/``float64`` with values in [0, 1].
        name: the argument name used in error messages.

    Returns:
        ``(H, W, 3)`` BGR array: ``uint8`` for ``uint8`` input, else ``float32`` in [0, 1]
        (``uint16`` is divided by 65535). Gray images are replicated to 3 channels and the
        alpha channel is dropped. The input is never modified.

    Raises:
        TypeError: ``img`` is not a numpy array or has an unsupported dtype.
        ValueError: wrong number of dimensions or channels, smaller than
            :data:`MIN_IMAGE_SIDE` pixels, non-finite values, floats outside [0, 1].
    """
    if not isinstance(img, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray (as from cv2.imread), got {_kind(img)}")
    if img.dtype.type not in _ACCEPTED_DTYPES:
        raise TypeError(
            f"{name} must have dtype uint8, uint16, float32 or float64, got {img.dtype}"
        )
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3:
        raise ValueError(f"{name} must be HxW or HxWxC, got shape {img.shape}")
    if img.shape[2] not in (1, 3, 4):
        raise ValueError(f"{name} must have 1, 3 or 4 channels, got {img.shape[2]}")
    if min(img.shape[:2]) < MIN_IMAGE_SIDE:
        raise ValueError(
            f"{name} must be at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels, "
            f"got {img.shape[1]}x{img.shape[0]}"
        )
    img = _to_bgr(img)
    if img.dtype == np.uint16:
        return (img / 65535.0).astype(np.float32)
    if img.dtype.kind == "f":
        return _check_float_range(img, name)
    return img


def _kind(obj: object) -> str:
    return "None" if obj is None else type(obj).__name__


def _to_bgr(img: np.ndarray) -> np.ndarray:
    if img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    if img.shape[2] == 4:
        return img[:, :, :3]
    return img


def _check_float_range(img: np.ndarray, name: str) -> np.ndarray:
    lo, hi = float(np.min(img)), float(np.max(img))  # NaN propagates into lo/hi
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if lo < -1e-3 or hi > 1.0 + 1e-3:
        raise ValueError(
            f"float {name} must have values in [0, 1], got [{lo:.4g}, {hi:.4g}] "
            "(divide 0..255 data by 255)"
        )
    return np.clip(img, 0.0, 1.0).astype(np.float32, copy=False)


def validate_mask(mask: object, shape: Sequence[int], name: str = "mask") -> np.ndarray | None:
    """Check an optional keypoint mask.

    Args:
        mask: ``None`` or an ``(H, W)`` (or ``(H, W, 1)``) ``uint8``/``bool`` array;
            non-zero pixels are where keypoints may lie.
        shape: the image shape; only ``shape[:2] == (H, W)`` is used.
        name: the argument name used in error messages.

    Returns:
        ``None`` or an ``(H, W)`` bool array.

    Raises:
        TypeError: not a numpy array or wrong dtype.
        ValueError: wrong number of dimensions or a size different from the image.
    """
    if mask is None:
        return None
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"{name} must be None or a numpy.ndarray, got {_kind(mask)}")
    if mask.dtype not in (np.uint8, np.bool_):
        raise TypeError(f"{name} must have dtype uint8 or bool, got {mask.dtype}")
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    if mask.ndim != 2:
        raise ValueError(f"{name} must be a 2-D HxW array, got shape {mask.shape}")
    if tuple(mask.shape) != tuple(shape[:2]):
        raise ValueError(
            f"{name} must have the image's size {tuple(shape[:2])} (H, W), got {mask.shape}"
        )
    return mask.astype(bool, copy=False)


# ------------------------------------------------------------------ tensor conversion
def to_tensor(
    images: np.ndarray | Sequence[np.ndarray], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Convert BGR image(s) to the network's normalised RGB input.

    Args:
        images: one image or a sequence of same-sized images, each accepted by
            :func:`validate_image` (BGR uint8, gray, float in [0, 1], ...).
        device: device of the returned tensor.

    Returns:
        ``(B, 3, H, W)`` float32 RGB tensor normalised with ``IMAGE_MEAN``/``IMAGE_STD``
        (``B = 1`` for a single image).
    """
    if isinstance(images, np.ndarray):
        images = [images]
    arrays = [validate_image(im, f"images[{i}]") for i, im in enumerate(images)]
    if not arrays:
        raise ValueError("images must not be empty")
    if any(a.shape != arrays[0].shape for a in arrays):
        raise ValueError("images must all have the same size to be stacked")
    batch = np.stack([_as_unit_float(a)[:, :, ::-1] for a in arrays])  # BGR -> RGB
    tensor = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2)
    return normalize_rgb(tensor.to(device))


def _as_unit_float(img: np.ndarray) -> np.ndarray:
    """Canonical image (uint8 or float32 in [0, 1]) -> float32 in [0, 1]."""
    if img.dtype == np.uint8:
        return img.astype(np.float32) * np.float32(1.0 / 255.0)
    return img.astype(np.float32, copy=False)


def normalize_rgb(batch: torch.Tensor) -> torch.Tensor:
    """Normalise RGB images in [0, 1] for the network.

    Args:
        batch: ``(B, 3, H, W)`` float RGB in [0, 1], any device.

    Returns:
        ``(B, 3, H, W)`` float32 ``(batch - IMAGE_MEAN) / IMAGE_STD`` on the same device.
    """
    if not isinstance(batch, torch.Tensor):
        raise TypeError(f"batch must be a torch.Tensor, got {_kind(batch)}")
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise ValueError(f"batch must have shape (B, 3, H, W), got {tuple(batch.shape)}")
    mean = torch.tensor(IMAGE_MEAN, dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD, dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
    return (batch.float() - mean) / std


# ---------------------------------------------------------------------- field of view
@dataclass(frozen=True)
class FieldOfView:
    """The circular region of interest of a fundus photograph.

    Attributes:
        mask: ``(H, W)`` bool, True inside the field of view (input resolution).
        center: ``(cx, cy)`` of the fitted circle in pixels (pixel-centre convention);
            may lie outside the image for strongly clipped circles.
        radius: radius of the fitted circle in pixels (the circle may be clipped by the
            top/bottom of the image: the radius is the circle's, not the image's).
        found: False when no clear FOV was detected and the whole image is used.
    """

    mask: np.ndarray
    center: tuple[float, float]
    radius: float
    found: bool = True

    @property
    def diameter(self) -> float:
        """Diameter of the FOV circle in pixels (``2 * radius``)."""
        return 2.0 * self.radius


def estimate_fov(img: np.ndarray) -> FieldOfView:
    """Estimate the circular field of view of a fundus image.

    Method (on a copy downscaled to a long side of 512 px): brightness = max over the
    colour channels; background level = median of the four corner patches (always
    outside the disc, even for circles clipped at the top and bottom); foreground level
    = 90th percentile. Threshold at ``bg + max(0.1 (fg - bg), 4/255)``, open/close,
    keep the largest connected component and fill its holes. A circle is fitted
    (algebraic least squares, two rounds of outlier rejection, which handles notches)
    to the left/right edge of each row of the component, ignoring edge points on the
    image border. The mask is the fitted disc intersected with the component.

    When there is no clear FOV (low contrast between corners and the centre, or no
    plausible circle) the whole image is returned with ``found=False``, centre at the
    image centre and diameter ``max(H, W)``.

    Args:
        img: an image accepted by :func:`validate_image`.

    Returns:
        The :class:`FieldOfView` at the input resolution.
    """
    img = validate_image(img)
    h, w = img.shape[:2]
    factor = min(1.0, _FOV_ANALYSIS_SIDE / max(h, w))
    small = _brightness(resize_image(img, factor)[0])
    component = _foreground_component(small)
    circle = _fit_rim_circle(component) if component is not None else None
    if circle is None:
        logger.debug("no clear field of view; using the whole image")
        return _whole_image_fov(h, w)
    (cx, cy), r = circle
    sx, sy = small.shape[1] / w, small.shape[0] / h
    full = from_working([[cx, cy]], (sx, sy))[0]
    center = (float(full[0]), float(full[1]))
    radius = float(r / np.sqrt(sx * sy))
    disc = _disc_mask(h, w, center, radius)
    comp_full = cv2.resize(component.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    return FieldOfView(mask=disc & comp_full.astype(bool), center=center, radius=radius)


def _whole_image_fov(h: int, w: int) -> FieldOfView:
    center = ((w - 1) / 2.0, (h - 1) / 2.0)
    return FieldOfView(np.ones((h, w), bool), center, max(h, w) / 2.0, found=False)


def _brightness(img: np.ndarray) -> np.ndarray:
    """Max over BGR channels as float32 in [0, 1]."""
    return _as_unit_float(img).max(axis=2)


def _foreground_component(v: np.ndarray) -> np.ndarray | None:
    """Largest bright hole-free component of a brightness map, or None if no contrast."""
    h, w = v.shape
    c = max(2, min(h, w) // 20)
    corners = np.concatenate([v[:c, :c], v[:c, -c:], v[-c:, :c], v[-c:, -c:]], axis=None)
    bg, fg = float(np.median(corners)), float(np.percentile(v, 90))
    if fg - bg < 10.0 / 255.0:
        return None
    binary = (v > bg + max(0.1 * (fg - bg), 4.0 / 255.0)).astype(np.uint8)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    binary = cv2.morphologyEx(cv2.morphologyEx(binary, cv2.MORPH_OPEN, k), cv2.MORPH_CLOSE, k)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if n < 2:
        return None
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[best, cv2.CC_STAT_AREA] < 0.05 * h * w:
        return None
    return _fill_holes(labels == best)


def _fill_holes(region: np.ndarray) -> np.ndarray:
    """Fill the holes of a bool region (background = what touches the border)."""
    padded = np.pad(region.astype(np.uint8), 1)
    flood = padded.copy()
    cv2.floodFill(flood, None, (0, 0), 1)
    return (padded | (1 - flood)).astype(bool)[1:-1, 1:-1]


def _fit_rim_circle(region: np.ndarray) -> tuple[tuple[float, float], float] | None:
    """Fit a circle to the left/right edge points of each row of ``region``."""
    h, w = region.shape
    rows = np.flatnonzero(region.any(axis=1))
    left = region[rows].argmax(axis=1)
    right = w - 1 - region[rows, ::-1].argmax(axis=1)
    pts = np.concatenate(
        [np.stack([left - 0.5, rows], 1)[left > 0], np.stack([right + 0.5, rows], 1)[right < w - 1]]
    ).astype(np.float64)
    if len(pts) < 10:
        return None
    keep = np.ones(len(pts), bool)
    for _ in range(3):
        (cx, cy), r = _kasa_fit(pts[keep])
        resid = np.abs(np.hypot(pts[:, 0] - cx, pts[:, 1] - cy) - r)
        keep = resid < max(2.0, 2.5 * float(np.median(resid[keep])))
        if keep.sum() < 10:
            return None
    (cx, cy), r = _kasa_fit(pts[keep])
    widest = float((right - left + 1).max())
    if not np.isfinite(r) or not 0.45 * widest <= r <= 0.75 * max(h, w):
        return None
    return (cx, cy), r


def _kasa_fit(pts: np.ndarray) -> tuple[tuple[float, float], float]:
    """Algebraic circle fit ``x^2 + y^2 + D x + E y + F = 0`` (least squares)."""
    x, y = pts[:, 0], pts[:, 1]
    a = np.stack([x, y, np.ones_like(x)], axis=1)
    d, e, f = np.linalg.lstsq(a, -(x * x + y * y), rcond=None)[0]
    cx, cy = -d / 2.0, -e / 2.0
    return (float(cx), float(cy)), float(np.sqrt(max(cx * cx + cy * cy - f, 0.0)))


def _disc_mask(h: int, w: int, center: tuple[float, float], radius: float) -> np.ndarray:
    """``(H, W)`` bool disc; built row by row so huge images stay cheap in memory."""
    ys = np.arange(h, dtype=np.float64)[:, None]
    xs = np.arange(w, dtype=np.float64)[None, :]
    half = np.sqrt(np.clip(radius**2 - (ys - center[1]) ** 2, 0.0, None))
    return (xs >= center[0] - half) & (xs <= center[0] + half) & (half > 0)


# ---------------------------------------------------------------- scale normalisation
def working_scale(
    fov_diameter: float,
    target_diameter: float = TARGET_FOV_DIAMETER,
    max_upscale: float = MAX_UPSCALE,
) -> float:
    """Resize factor that brings a FOV of ``fov_diameter`` px to ``target_diameter`` px.

    Returns ``min(target_diameter / fov_diameter, max_upscale)``.
    """
    if not (np.isfinite(fov_diameter) and fov_diameter > 0):
        raise ValueError(f"fov_diameter must be a positive finite number, got {fov_diameter}")
    if not (np.isfinite(target_diameter) and target_diameter > 0):
        raise ValueError(f"target_diameter must be positive and finite, got {target_diameter}")
    return float(min(target_diameter / fov_diameter, max_upscale))


def resize_image(img: np.ndarray, scale: float) -> tuple[np.ndarray, tuple[float, float]]:
    """Resize by ``scale`` to integer size; INTER_AREA to shrink, INTER_LINEAR to enlarge.

    Args:
        img: ``(H, W[, C])`` array (any dtype cv2.resize accepts).
        scale: nominal resize factor (> 0).

    Returns:
        The resized image ``(H', W'[, C])`` with ``H' = max(1, round(H * scale))`` (and
        likewise ``W'``) and the exact per-axis factors ``(sx, sy) = (W'/W, H'/H)`` to use
        with :func:`to_working` / :func:`from_working`.
    """
    h, w = img.shape[:2]
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    if (new_w, new_h) == (w, h):
        return img, (1.0, 1.0)
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    return cv2.resize(img, (new_w, new_h), interpolation=interp), (new_w / w, new_h / h)


def _scale_xy(scale: float | Sequence[float]) -> np.ndarray:
    s = np.broadcast_to(np.asarray(scale, dtype=np.float64), (2,))
    if not np.all(np.isfinite(s) & (s > 0)):
        raise ValueError(f"scale must be positive and finite, got {scale}")
    return s


def to_working(xy: np.ndarray, scale: float | Sequence[float]) -> np.ndarray:
    """Map ``(N, 2)`` input-pixel ``(x, y)`` to a resized image: ``(xy + 0.5) * s - 0.5``.

    ``scale`` is a float or per-axis ``(sx, sy)`` (as returned by :func:`resize_image`).
    Returns float64 ``(N, 2)``.
    """
    return (np.asarray(xy, dtype=np.float64).reshape(-1, 2) + 0.5) * _scale_xy(scale) - 0.5


def from_working(xy: np.ndarray, scale: float | Sequence[float]) -> np.ndarray:
    """Inverse of :func:`to_working`: ``(xy + 0.5) / s - 0.5``. Returns float64 ``(N, 2)``."""
    return (np.asarray(xy, dtype=np.float64).reshape(-1, 2) + 0.5) / _scale_xy(scale) - 0.5
