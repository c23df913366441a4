"""A follow-up visit resampled into the baseline frame and matched to its illumination.

Coordinates are ``(x, y)`` pixels of the baseline (x right, y down, the centre of the
top-left pixel at (0, 0), as OpenCV). The analysis runs on copies whose long side is at
most ``side`` pixels; ``Alignment.factors`` are the resize factors ``(sx, sy)`` from
baseline pixels to analysis pixels (``x_small = (x + 0.5) * sx - 0.5``, as ``cv2.resize``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from fundusfeat.features.fov import estimate_fov
from fundusfeat.geometry.transforms import Transform
from fundusfeat.geometry.verification import vessel_image
from fundusfeat.io.arrays import resize_image, to_unit_float
from fundusfeat.io.validation import validate_image

SATURATION = 0.97
"""Pixels brighter than this (any channel, [0, 1]) in either visit are reflections or
clipped: they take no part in the fit and report no change."""


@dataclass(frozen=True)
class Alignment:
    """Two visits in the baseline frame, at the analysis resolution.

    Attributes:
        baseline: ``(h, w, 3)`` float32 BGR in [0, 1].
        aligned: ``(h, w, 3)`` float32 BGR in [0, 1]: the follow-up warped into the
            baseline frame and normalised to the baseline's illumination and colour.
        warped: the follow-up warped, before normalisation.
        overlap: ``(h, w)`` bool, both fields of view, eroded by the rim margin.
        vessels: ``(h, w)`` bool, the baseline's vessels dilated into a band.
        reflections: ``(h, w)`` bool, clipped or specular pixels of either visit (dilated).
        factors: ``(sx, sy)`` baseline px -> analysis px.
        diameter: the baseline FOV's diameter (analysis px).
    """

    baseline: np.ndarray
    aligned: np.ndarray
    warped: np.ndarray
    overlap: np.ndarray
    vessels: np.ndarray
    reflections: np.ndarray
    factors: tuple[float, float]
    diameter: float


def _disk(radius: int) -> np.ndarray:
    r = max(1, int(radius))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def vessel_band(image: np.ndarray, shape: tuple[int, int], band: int) -> np.ndarray:
    """``(h, w)`` bool mask of the vessels of ``image`` dilated by ``band`` px.

    Vessels are the dark ridges of :func:`fundusfeat.geometry.verification.vessel_image`
    (high-passed CLAHE green) below ``-1.5`` of its robust standard deviation,
    resized to ``shape = (h, w)``.
    """
    v, _ = vessel_image(image)
    sd = 1.4826 * float(np.median(np.abs(v))) + 1e-6
    ridges = (v < -1.5 * sd).astype(np.uint8)
    ridges = cv2.morphologyEx(ridges, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
    mask = cv2.resize(ridges, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return cv2.dilate(mask, _disk(band)) > 0


def _masked_blur(values: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Normalised convolution: the Gaussian-weighted mean of ``values`` where ``weight``.

    Computed on a copy shrunk so that ``sigma`` is about 4 px (INTER_AREA), then
    enlarged back (INTER_LINEAR): the mean is smooth at that scale, and a large window
    costs what a small one does.
    """
    h, w = weight.shape
    scale = min(1.0, 4.0 / sigma)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    num = cv2.resize(values * weight[..., None], size, interpolation=cv2.INTER_AREA)
    den = cv2.resize(weight, size, interpolation=cv2.INTER_AREA)
    s = sigma * scale
    num = cv2.GaussianBlur(num, (0, 0), s, borderType=cv2.BORDER_REPLICATE)
    den = cv2.GaussianBlur(den, (0, 0), s, borderType=cv2.BORDER_REPLICATE)[..., None]
    mean = num / np.maximum(den, 1e-6)
    return cv2.resize(mean, (w, h), interpolation=cv2.INTER_LINEAR).reshape(values.shape)


def match_illumination(
    image: np.ndarray, reference: np.ndarray, fit: np.ndarray, sigma: float
) -> np.ndarray:
    """``image`` mapped onto ``reference``'s illumination and colour, per channel.

    The model is a smooth local gain and offset per channel: local means and standard
    deviations (Gaussian windows of ``sigma`` px, normalised convolution over the ``fit``
    pixels only) of both images, then ``(image - mean_i) * sd_r / sd_i + mean_r``. A
    window is much larger than a lesion, so a lesion barely moves the model.

    Args:
        image, reference: ``(h, w, 3)`` float32 in [0, 1], the same frame.
        fit: ``(h, w)`` bool, pixels the model is fitted on (overlap, no vessels, no
            reflections).
        sigma: the window's standard deviation in pixels.

    Returns:
        ``(h, w, 3)`` float32, not clipped.
    """
    w = fit.astype(np.float32)
    mi, mr = _masked_blur(image, w, sigma), _masked_blur(reference, w, sigma)
    vi = _masked_blur(image * image, w, sigma) - mi * mi
    vr = _masked_blur(reference * reference, w, sigma) - mr * mr
    floor = 1e-4
    gain = np.sqrt(np.maximum(vr, floor) / np.maximum(vi, floor))
    return ((image - mi) * np.clip(gain, 0.25, 4.0) + mr).astype(np.float32)


def align_visits(
    baseline: np.ndarray,
    followup: np.ndarray,
    transform: Transform,
    *,
    side: int = 1024,
    rim: float = 0.03,
    band: int = 2,
    sigma: float = 0.06,
) -> Alignment:
    """Resample the follow-up into the baseline frame and normalise its illumination.

    Args:
        baseline, followup: images accepted by
            :func:`fundusfeat.io.validation.validate_image` (BGR uint8, gray or float).
        transform: baseline px -> follow-up px (``RegistrationResult.transform``).
        side: long side (px) of the analysis copies.
        rim: the overlap is eroded by this fraction of the baseline FOV diameter.
        band: vessel band half-width (analysis px).
        sigma: illumination window as a fraction of the FOV diameter.

    Returns:
        The :class:`Alignment`.
    """
    base = validate_image(baseline, "baseline")
    follow = validate_image(followup, "followup")
    fov1, fov2 = estimate_fov(base).mask, estimate_fov(follow).mask
    small1, f1 = resize_image(base, min(1.0, side / max(base.shape[:2])))
    small2, f2 = resize_image(follow, min(1.0, side / max(follow.shape[:2])))
    small = transform.in_original_pixels((1 / f1[0], 1 / f1[1]), (1 / f2[0], 1 / f2[1]))
    h, w = small1.shape[:2]
    a = to_unit_float(small1).astype(np.float32)
    warped = small.warp(to_unit_float(small2).astype(np.float32), (w, h))
    m1 = cv2.resize(fov1.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    m2 = cv2.resize(fov2.astype(np.uint8), small2.shape[1::-1], interpolation=cv2.INTER_NEAREST)
    seen = small.warp(m2, (w, h), interpolation=cv2.INTER_NEAREST)
    diameter = 2.0 * np.sqrt(max(1, int(m1.sum())) / np.pi)
    inside = cv2.distanceTransform(m1 & seen, cv2.DIST_L2, 3)
    overlap = inside > max(1.0, rim * diameter)
    vessels = vessel_band(small1, (h, w), band)
    bright = (a.max(axis=2) > SATURATION) | (warped.max(axis=2) > SATURATION)
    reflections = cv2.dilate(bright.astype(np.uint8), _disk(2)) > 0
    fit = overlap & ~vessels & ~reflections
    aligned = match_illumination(warped, a, fit, max(2.0, sigma * diameter))
    aligned[~overlap] = 0.0
    return Alignment(a, aligned, warped, overlap, vessels, reflections, f1, float(diameter))
