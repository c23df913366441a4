"""How visible a montage's seams are: the step in low-pass luminance across them.

A seam is invisible when the brightness changes across it no more than it changes across
a line inside one field at the same scale. :func:`seam_step` measures both on the montage
itself, from the field that :func:`fundusfeat.pipeline.canvas.blend` took each pixel from
(``labels=True``):

- the low-pass luminance ``L`` (grey, Gaussian sigma ``s``, normalised inside the
  montage);
- at each seam pixel, the signed step ``L(p + 2s n) - L(p - 2s n)`` across the seam (``n``
  from the lower to the higher field index, horizontal or vertical), averaged along the
  seam over a Gaussian window of ``4s`` (texture changes sign along a seam, an exposure
  step does not);
- the same along vertical and horizontal lines every ``16s`` px inside single fields, at
  least ``8s`` px from any seam.

Coordinates: canvas pixels, the centre of the top-left pixel at (0, 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

LOW_PASS = 0.006
"""Gaussian sigma of the low-pass luminance, as a fraction of the canvas's long side."""


@dataclass(frozen=True)
class SeamStep:
    """Low-pass luminance steps in grey levels (median of the window means' magnitudes).

    Attributes:
        seam: across the seams.
        field: across lines inside the fields.
        ratio: ``seam / field``: 1 means the seam shows no more than the fields' own
            shading at that scale.
        sigma: the low-pass sigma ``s`` (canvas px).
    """

    seam: float
    field: float
    ratio: float
    sigma: float


def _window_mean(values: np.ndarray, where: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-weighted mean of ``values`` over the pixels ``where``, at those pixels."""
    w = where.astype(np.float32)
    num = cv2.GaussianBlur(values * w, (0, 0), sigma)
    den = cv2.GaussianBlur(w, (0, 0), sigma)
    return (num / np.maximum(den, 1e-6))[where]


def _steps(low: np.ndarray, ok: np.ndarray, d: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """``L(p + d) - L(p - d)`` along ``axis`` (1: x, 0: y) and where both ends are ``ok``."""
    fwd, back = np.roll(low, -d, axis=axis), np.roll(low, d, axis=axis)
    valid = np.roll(ok, -d, axis=axis) & np.roll(ok, d, axis=axis)
    if axis == 1:
        valid[:, :d] = valid[:, -d:] = False
    else:
        valid[:d, :] = valid[-d:, :] = False
    return (fwd - back).astype(np.float32), valid


def seam_step(image: np.ndarray, labels: np.ndarray, sigma: float | None = None) -> SeamStep:
    """Measure the seams of a montage.

    Args:
        image: ``(H, W, 3)`` uint8 BGR montage.
        labels: ``(H, W)`` int, the field each pixel comes from, -1 outside the montage.
        sigma: low-pass sigma in px (default :data:`LOW_PASS` of the long side).

    Raises:
        ValueError: shapes differ, or the montage has no seam inside its fields.
    """
    if image.shape[:2] != labels.shape:
        raise ValueError(f"labels: expected shape {image.shape[:2]}, got {labels.shape}")
    s = float(sigma) if sigma is not None else max(2.0, LOW_PASS * max(labels.shape))
    d = max(1, int(round(2 * s)))
    inside = labels >= 0
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
    weight = cv2.GaussianBlur(inside.astype(np.float32), (0, 0), s)
    low = cv2.GaussianBlur(gray * inside, (0, 0), s) / np.maximum(weight, 1e-3)
    k = int(np.ceil(3 * s))
    core = cv2.erode(inside.astype(np.uint8), np.ones((2 * k + 1, 2 * k + 1), np.uint8)) > 0
    seam_means, edge = [], np.zeros_like(inside)
    for axis in (1, 0):
        nxt = np.roll(labels, -1, axis=axis)
        change = (labels != nxt) & (labels >= 0) & (nxt >= 0)
        if axis == 1:
            change[:, -1] = False
        else:
            change[-1, :] = False
        edge |= change
        step, valid = _steps(low, core, d, axis)
        sign = np.where(nxt > labels, 1.0, -1.0).astype(np.float32)
        where = change & valid
        if where.any():
            seam_means.append(_window_mean(step * sign, where, 4 * s))
    if not seam_means:
        raise ValueError("labels: the montage has no seam inside its fields")
    far = cv2.distanceTransform((~edge).astype(np.uint8), cv2.DIST_L2, 3) > 8 * s
    field_means = []
    spacing = max(2, int(round(16 * s)))
    for axis in (1, 0):
        step, valid = _steps(low, core & far, d, axis)
        lines = np.zeros_like(inside)
        if axis == 1:
            lines[:, ::spacing] = True
        else:
            lines[::spacing, :] = True
        where = lines & valid
        if where.any():
            field_means.append(_window_mean(step, where, 4 * s))
    a = float(np.median(np.abs(np.concatenate(seam_means))))
    b = float(np.median(np.abs(np.concatenate(field_means)))) if field_means else float("nan")
    return SeamStep(a, b, a / b if b > 0 else float("inf"), s)
