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

from fundusfeat.features.fov import FieldOfView, estimate_fov_checked
from fundusfeat.geometry.transforms import Transform
from fundusfeat.geometry.verification import vessel_image
from fundusfeat.geometry.warp import overlap
from fundusfeat.io.arrays import resize_image, to_unit_float
from fundusfeat.io.validation import validate_image

SATURATION = 0.97
"""A channel brighter than this ([0, 1]) in either visit is clipped there: it takes no
part in that channel's illumination fit nor in the difference."""

HEADROOM = 0.1
"""A channel's weight in the difference falls linearly from full at ``SATURATION -
HEADROOM`` to 0 at ``SATURATION`` (what a nearly clipped channel can still show)."""

LUMA_BGR = np.array([0.1, 0.6, 0.3], np.float32)
"""Channel weights (B, G, R) of the difference: green carries most lesion contrast."""

FULL_SUPPORT = 0.9
"""A channel counts fully where at least this share of the illumination window around a
pixel is unclipped in it, and not at all below half of it."""

USABLE_SHARE = 0.5
"""A pixel is usable when the channels left unclipped there carry at least this share of
:data:`LUMA_BGR`: a clipped red channel alone (0.3) removes nothing, a clipped green
channel (0.6) removes the pixel."""


@dataclass(frozen=True)
class Alignment:
    """Two visits in the baseline frame, at the analysis resolution.

    Attributes:
        baseline: ``(h, w, 3)`` float32 BGR in [0, 1].
        aligned: ``(h, w, 3)`` float32 BGR in [0, 1]: the follow-up warped into the
            baseline frame and normalised to the baseline's illumination and colour.
        overlap: ``(h, w)`` bool, both fields of view, eroded by the rim margin.
        vessels: ``(h, w)`` bool, the baseline's vessels dilated into a band.
        reflections: ``(h, w)`` bool, pixels that cannot show a change: the channels
            clipped there (in either visit, dilated) carry more than ``1 - USABLE_SHARE``
            of :data:`LUMA_BGR`.
        weights: ``(h, w, 3)`` float32 channel weights (B, G, R) of the difference:
            :data:`LUMA_BGR` times each channel's headroom below clipping, summing to 1
            per usable pixel, 0 on ``reflections``.
        factors: ``(sx, sy)`` baseline px -> analysis px.
        diameter: the baseline FOV's diameter (analysis px).
    """

    baseline: np.ndarray
    aligned: np.ndarray
    overlap: np.ndarray
    vessels: np.ndarray
    reflections: np.ndarray
    weights: np.ndarray
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


def masked_blur(values: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Normalised convolution: the Gaussian-weighted mean of ``values`` where ``weight``.

    Computed on a copy shrunk so that ``sigma`` is about 4 px (INTER_AREA), then
    enlarged back (INTER_LINEAR): the mean is smooth at that scale, and a large window
    costs what a small one does.
    """
    h, w = weight.shape[:2]
    per_channel = weight.ndim == 3
    scale = min(1.0, 4.0 / sigma)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    spread = weight if per_channel or values.ndim == 2 else weight[..., None]
    num = cv2.resize(values * spread, size, interpolation=cv2.INTER_AREA)
    den = cv2.resize(np.ascontiguousarray(weight), size, interpolation=cv2.INTER_AREA)
    s = sigma * scale
    num = cv2.GaussianBlur(num, (0, 0), s, borderType=cv2.BORDER_REPLICATE)
    den = cv2.GaussianBlur(den, (0, 0), s, borderType=cv2.BORDER_REPLICATE)
    if num.ndim == 3 and den.ndim == 2:
        den = den[..., None]
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
            reflections), or ``(h, w, 3)`` bool, one set per channel (its unclipped
            pixels).
        sigma: the window's standard deviation in pixels.

    Returns:
        ``(h, w, 3)`` float32, not clipped.
    """
    w = fit.astype(np.float32)
    mi, mr = masked_blur(image, w, sigma), masked_blur(reference, w, sigma)
    vi = masked_blur((image - mi) ** 2, w, sigma)  # around the smooth mean: a ramp
    vr = masked_blur((reference - mr) ** 2, w, sigma)  # of light is not contrast
    floor = 1e-4
    gain = np.sqrt(np.maximum(vr, floor) / np.maximum(vi, floor))
    return ((image - mi) * np.clip(gain, 0.25, 4.0) + mr).astype(np.float32)


@dataclass(frozen=True)
class BaselineFrame:
    """The baseline at the analysis resolution: computed once, shared by every later
    visit of a series (:func:`baseline_frame`).

    Attributes:
        image: ``(h, w, 3)`` float32 BGR in [0, 1].
        fov: ``(h, w)`` uint8, 1 inside the baseline's field of view.
        vessels: ``(h, w)`` bool vessel band (:func:`vessel_band`).
        factors: ``(sx, sy)`` baseline px -> analysis px.
        diameter: the FOV's diameter (analysis px, from its area).
        shape: ``(H, W)`` of the baseline at its input resolution.
        side: long side (px) of the analysis copies (the follow-up's too).
    """

    image: np.ndarray
    fov: np.ndarray
    vessels: np.ndarray
    factors: tuple[float, float]
    diameter: float
    shape: tuple[int, int]
    side: int


def baseline_frame(
    baseline: np.ndarray,
    *,
    fov: FieldOfView | None = None,
    side: int = 1024,
    band: int = 2,
) -> BaselineFrame:
    """The :class:`BaselineFrame` of a baseline visit.

    Args:
        baseline: an image accepted by :func:`fundusfeat.io.validation.validate_image`.
        fov: its field of view when already known (``ImageFeatures.fov``); None estimates it.
        side: long side (px) of the analysis copy.
        band: vessel band half-width (analysis px).
    """
    base = validate_image(baseline, "baseline")
    mask = (fov if fov is not None else estimate_fov_checked(base)).mask
    small, factors = resize_image(base, min(1.0, side / max(base.shape[:2])))
    h, w = small.shape[:2]
    m1 = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    diameter = 2.0 * np.sqrt(max(1, int(m1.sum())) / np.pi)
    return BaselineFrame(
        image=to_unit_float(small).astype(np.float32),
        fov=m1,
        vessels=vessel_band(small, (h, w), band),
        factors=factors,
        diameter=float(diameter),
        shape=(base.shape[0], base.shape[1]),
        side=side,
    )


def align_to_frame(
    frame: BaselineFrame,
    followup: np.ndarray,
    transform: Transform,
    *,
    fov: FieldOfView | None = None,
    rim: float = 0.03,
    sigma: float = 0.06,
) -> Alignment:
    """Resample a follow-up into a :class:`BaselineFrame` and normalise its illumination.

    Args:
        frame: the baseline's :func:`baseline_frame`.
        followup: an image accepted by :func:`fundusfeat.io.validation.validate_image`.
        transform: baseline px -> follow-up px (``RegistrationResult.transform``).
        fov: the follow-up's field of view when already known; None estimates it.
        rim: the overlap is eroded by this fraction of the baseline FOV diameter.
        sigma: illumination window as a fraction of the FOV diameter.

    Returns:
        The :class:`Alignment`.
    """
    follow = validate_image(followup, "followup")
    mask2 = (fov if fov is not None else estimate_fov_checked(follow)).mask
    small2, f2 = resize_image(follow, min(1.0, frame.side / max(follow.shape[:2])))
    f1 = frame.factors
    small = transform.in_original_pixels((1 / f1[0], 1 / f1[1]), (1 / f2[0], 1 / f2[1]))
    h, w = frame.fov.shape
    a = frame.image
    warped = small.warp(to_unit_float(small2).astype(np.float32), (w, h))
    m2 = cv2.resize(mask2.astype(np.uint8), small2.shape[1::-1], interpolation=cv2.INTER_NEAREST)
    both = overlap(small, frame.fov, m2).astype(np.uint8)
    inside = cv2.distanceTransform(both, cv2.DIST_L2, 3)
    common = inside > max(1.0, rim * frame.diameter)
    window = max(2.0, sigma * frame.diameter)
    clipped = clipped_channels(a, warped)
    base = common & ~frame.vessels
    fit = base[..., None] & ~clipped
    aligned = match_illumination(warped, a, fit, window)
    aligned[~common] = 0.0
    support = masked_blur(fit.astype(np.float32), base.astype(np.float32), window)
    weights = channel_weights(a, warped, clipped, support)
    reflections = weights.sum(axis=2) == 0
    return Alignment(a, aligned, common, frame.vessels, reflections, weights, f1, frame.diameter)


def align_visits(
    baseline: np.ndarray,
    followup: np.ndarray,
    transform: Transform,
    *,
    side: int = 1024,
    rim: float = 0.03,
    band: int = 2,
    sigma: float = 0.06,
    fovs: tuple[FieldOfView | None, FieldOfView | None] = (None, None),
) -> Alignment:
    """Resample the follow-up into the baseline frame and normalise its illumination:
    :func:`align_to_frame` of :func:`baseline_frame` (a series builds the frame once).

    Args:
        baseline, followup: images accepted by
            :func:`fundusfeat.io.validation.validate_image` (BGR uint8, gray or float).
        transform: baseline px -> follow-up px (``RegistrationResult.transform``).
        side: long side (px) of the analysis copies.
        rim: the overlap is eroded by this fraction of the baseline FOV diameter.
        band: vessel band half-width (analysis px).
        sigma: illumination window as a fraction of the FOV diameter.
        fovs: the two fields of view when already known (``ImageFeatures.fov``); None
            estimates one.

    Returns:
        The :class:`Alignment`.
    """
    frame = baseline_frame(baseline, fov=fovs[0], side=side, band=band)
    return align_to_frame(frame, followup, transform, fov=fovs[1], rim=rim, sigma=sigma)


def clipped_channels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(h, w, 3)`` bool: the channel is above :data:`SATURATION` in either visit
    (``(h, w, 3)`` float32 in [0, 1]), dilated by 2 px (blooming around a reflection)."""
    top = np.maximum(a, b)
    return cv2.dilate((top > SATURATION).astype(np.uint8), _disk(2)) > 0


def channel_weights(
    a: np.ndarray, b: np.ndarray, clipped: np.ndarray, support: np.ndarray | None = None
) -> np.ndarray:
    """How much each channel counts in the difference.

    Args:
        a, b: ``(h, w, 3)`` float32 BGR in [0, 1], the two visits in one frame.
        clipped: :func:`clipped_channels` of them.
        support: ``(h, w, 3)`` share of the pixels around each pixel (the illumination
            window) where the channel is unclipped, or None (all 1). A channel clipped
            over much of the window has a biased illumination model there.

    Returns:
        ``(h, w, 3)`` float32: :data:`LUMA_BGR` times the channel's headroom
        (:data:`HEADROOM`) and its support (full above :data:`FULL_SUPPORT`, 0 below
        half of it), 0 where clipped, normalised to sum 1 where the unclipped channels
        carry at least :data:`USABLE_SHARE` of :data:`LUMA_BGR`, else all 0.
    """
    top = np.maximum(a, b)
    headroom = np.clip((SATURATION - top) / HEADROOM, 0.0, 1.0)
    if support is not None:
        headroom = headroom * np.clip(2.0 * support / FULL_SUPPORT - 1.0, 0.0, 1.0)
    weights = (LUMA_BGR * headroom * ~clipped).astype(np.float32)
    usable = (LUMA_BGR * ~clipped).sum(axis=2) >= USABLE_SHARE
    total = weights.sum(axis=2, keepdims=True)
    weights = np.where(usable[..., None] & (total > 0), weights / np.maximum(total, 1e-6), 0.0)
    return weights.astype(np.float32)
