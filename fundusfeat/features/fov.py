"""The circular field of view (FOV) of a fundus photograph: estimation and its mask.

Coordinates are ``(x, y)`` pixels, the centre of the top-left pixel at (0, 0).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from fundusfeat.features.scale import from_working
from fundusfeat.io.arrays import disc_mask, to_unit_float
from fundusfeat.io.validation import validate_image

logger = logging.getLogger(__name__)

ANALYSIS_SIDE = 512
"""FOV estimation runs on a copy whose long side is at most this many pixels."""


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

    Method (on a copy downscaled to a long side of 512 px by bilinear sampling, not area
    averaging: 0.3-0.5 ms against 2.4-41 ms for 766-4288-px inputs, and the circle
    moves by under 0.06 % of its radius on 41 photographs at three sizes): brightness =
    max over the colour channels; background level = median of the four corner patches (always
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
    return estimate_fov_checked(img)


def estimate_fov_checked(img: np.ndarray) -> FieldOfView:
    """:func:`estimate_fov` of an image already in :func:`validate_image`'s canonical form."""
    h, w = img.shape[:2]
    factor = min(1.0, ANALYSIS_SIDE / max(h, w))
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    thumb = img if size == (w, h) else cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
    rgb = to_unit_float(thumb)
    # the brightest channel; elementwise (numpy's reduction over a length-3 last axis
    # is ~30x slower: 9 ms against 0.3 ms at 512 x 512)
    small = np.maximum(np.maximum(rgb[..., 0], rgb[..., 1]), rgb[..., 2])
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
    disc = disc_mask(h, w, center, radius)
    comp_full = cv2.resize(component.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    return FieldOfView(mask=disc & comp_full.astype(bool), center=center, radius=radius)


def _whole_image_fov(h: int, w: int) -> FieldOfView:
    center = ((w - 1) / 2.0, (h - 1) / 2.0)
    return FieldOfView(np.ones((h, w), bool), center, max(h, w) / 2.0, found=False)


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
