"""Random projective warps and photometric changes of fundus images (training pairs and
the synthetic benchmarks).

One implementation serves the training pair sampler (``fundusfeat.training.pairs``)
and the synthetic benchmark (``fundusfeat.evaluation``), each with its own seeded
``numpy.random.Generator`` passed in explicitly.

Coordinates: pixel (x, y) with the centre of the top-left pixel at (0, 0), the
convention of ``cv2.warpPerspective``. A homography ``H`` maps points of the
first image onto the second: ``p2 ~ H @ [x1, y1, 1]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from fundusfeat.geometry.homography import about_centre


@dataclass(frozen=True)
class WarpRange:
    """Ranges of a random homography, all about the image centre.

    Attributes:
        rotation_deg: maximum absolute in-plane rotation (degrees).
        scale: (min, max) isotropic scale, sampled log-uniformly.
        aspect: maximum log2 of the x/y anisotropy (0 = none).
        shear: maximum absolute shear factor.
        perspective: maximum absolute perspective coefficient times the image size
            (0.1 tilts the far edge by about 10 %).
        translation: maximum absolute shift as a fraction of the image size.
    """

    rotation_deg: float = 20.0
    scale: tuple[float, float] = (0.8, 1.25)
    aspect: float = 0.1
    shear: float = 0.1
    perspective: float = 0.1
    translation: float = 0.1


@dataclass(frozen=True)
class PhotoRange:
    """Ranges of a random photometric change (image in BGR, values in [0, 1]).

    Attributes:
        gamma: (min, max) gamma, sampled log-uniformly.
        gain: (min, max) global brightness gain, sampled log-uniformly.
        contrast: (min, max) contrast factor about the mean.
        color: maximum relative per-channel gain change (colour cast).
        hue_deg: maximum absolute hue rotation (degrees).
        saturation: (min, max) saturation factor.
        illumination: maximum amplitude of a smooth multiplicative illumination
            gradient (0.3 = up to +-30 % across the image).
        blur_sigma: maximum Gaussian blur sigma (pixels).
        noise_sigma: maximum additive Gaussian noise sigma (in [0, 1] units).
    """

    gamma: tuple[float, float] = (0.8, 1.25)
    gain: tuple[float, float] = (0.8, 1.25)
    contrast: tuple[float, float] = (0.8, 1.2)
    color: float = 0.1
    hue_deg: float = 5.0
    saturation: tuple[float, float] = (0.8, 1.2)
    illumination: float = 0.2
    blur_sigma: float = 1.0
    noise_sigma: float = 0.02


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def sample_homography(
    rng: np.random.Generator, width: int, height: int, ranges: WarpRange
) -> np.ndarray:
    """Draw a random homography about the image centre.

    Args:
        rng: the random generator (consumed).
        width, height: size of the image the homography applies to (pixels).
        ranges: the sampling ranges.

    Returns:
        (3, 3) float64 homography mapping pixel coordinates of the source image to
        the warped image, normalised so that ``H[2, 2] == 1``.
    """
    size = float(max(width, height))
    angle = math.radians(rng.uniform(-ranges.rotation_deg, ranges.rotation_deg))
    scale = _log_uniform(rng, *ranges.scale)
    aspect = 2.0 ** rng.uniform(-ranges.aspect, ranges.aspect)
    shear = rng.uniform(-ranges.shear, ranges.shear)
    px, py = rng.uniform(-ranges.perspective, ranges.perspective, size=2) / size
    tx, ty = rng.uniform(-ranges.translation, ranges.translation, size=2) * (width, height)

    c, s = math.cos(angle), math.sin(angle)
    linear = np.array([[c, -s], [s, c]]) @ np.array([[1.0, shear], [0.0, 1.0]])
    linear = linear @ np.diag([scale * math.sqrt(aspect), scale / math.sqrt(aspect)])
    core = np.eye(3)
    core[:2, :2] = linear
    core[2, :2] = (px, py)
    return about_centre(core, width, height, (tx, ty))


def _illumination_field(
    rng: np.random.Generator, height: int, width: int, amplitude: float
) -> np.ndarray:
    """Smooth multiplicative field: a random linear gradient plus a radial falloff."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    xx = xx / max(width - 1, 1) * 2 - 1
    yy = yy / max(height - 1, 1) * 2 - 1
    theta = rng.uniform(0, 2 * math.pi)
    grad = rng.uniform(-amplitude, amplitude) * (math.cos(theta) * xx + math.sin(theta) * yy)
    cx, cy = rng.uniform(-0.5, 0.5, size=2)
    radial = -rng.uniform(0, amplitude) * ((xx - cx) ** 2 + (yy - cy) ** 2) / 2
    return np.clip(1.0 + grad + radial, 0.05, None).astype(np.float32)


@dataclass(frozen=True)
class Photometric:
    """One photometric change, applied by :func:`apply_photometric` in this order.

    Attributes:
        gamma: exponent on intensities in [0, 1].
        hue_deg: hue rotation (degrees); with ``saturation`` 1 and this 0 the image
            does not go through HSV.
        saturation: saturation factor.
        contrast: contrast factor about the per-channel mean.
        offset: added after the contrast (brightness, [0, 1] units).
        gain: global brightness factor.
        cast: per-channel (B, G, R) factors (a colour cast).
        field: ``(H, W)`` float32 multiplicative illumination, or None.
        blur_sigma: Gaussian blur sigma in pixels (0 = none).
        noise_sigma: additive Gaussian noise sigma ([0, 1] units; 0 = none).
        noise_seed: seed of the noise's generator.
    """

    gamma: float = 1.0
    hue_deg: float = 0.0
    saturation: float = 1.0
    contrast: float = 1.0
    offset: float = 0.0
    gain: float = 1.0
    cast: tuple[float, float, float] = (1.0, 1.0, 1.0)
    field: np.ndarray | None = None
    blur_sigma: float = 0.0
    noise_sigma: float = 0.0
    noise_seed: int = 0


def sample_photometric(
    rng: np.random.Generator, height: int, width: int, ranges: PhotoRange
) -> Photometric:
    """Draw a random :class:`Photometric` for an image of ``height x width`` pixels.

    The same number of draws whatever the image; blurs with sigma <= 0.3 px are dropped.
    """
    gamma = _log_uniform(rng, *ranges.gamma)
    gain = _log_uniform(rng, *ranges.gain)
    contrast = rng.uniform(*ranges.contrast)
    cast = 1.0 + rng.uniform(-ranges.color, ranges.color, size=3).astype(np.float32)
    hue = rng.uniform(-ranges.hue_deg, ranges.hue_deg)
    sat = rng.uniform(*ranges.saturation)
    field = _illumination_field(rng, height, width, ranges.illumination)
    sigma = rng.uniform(0, ranges.blur_sigma)
    noise_sigma = rng.uniform(0, ranges.noise_sigma)
    noise_seed = int(rng.integers(0, 2**31 - 1))
    return Photometric(
        gamma=gamma,
        hue_deg=float(hue),
        saturation=float(sat),
        contrast=float(contrast),
        gain=gain,
        cast=tuple(float(c) for c in cast),
        field=field,
        blur_sigma=float(sigma) if sigma > 0.3 else 0.0,
        noise_sigma=float(noise_sigma),
        noise_seed=noise_seed,
    )


def apply_photometric(image: np.ndarray, change: Photometric) -> np.ndarray:
    """Apply a :class:`Photometric` to a colour fundus image.

    Args:
        image: (H, W, 3) BGR, uint8 or float in [0, 1].
        change: the change.

    Returns:
        (H, W, 3) float32 BGR in [0, 1].
    """
    img = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    img = np.clip(img, 0, 1) ** change.gamma
    if change.hue_deg != 0.0 or change.saturation != 1.0:
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        hsv[..., 0] = (hsv[..., 0] + change.hue_deg) % 360.0
        hsv[..., 1] = np.clip(hsv[..., 1] * change.saturation, 0, 1)
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    mean = img.reshape(-1, 3).mean(axis=0)
    img = (img - mean) * change.contrast + mean
    if change.offset != 0.0:
        img = img + change.offset
    img = img * change.gain * np.asarray(change.cast, dtype=np.float32)
    if change.field is not None:
        img = img * change.field[..., None]
    if change.blur_sigma > 0:
        img = cv2.GaussianBlur(img, (0, 0), change.blur_sigma)
    if change.noise_sigma > 0:
        rng = np.random.default_rng(change.noise_seed)
        img = img + rng.standard_normal(img.shape, dtype=np.float32) * change.noise_sigma
    return np.clip(img, 0.0, 1.0)


def photometric_change(
    image: np.ndarray, rng: np.random.Generator, ranges: PhotoRange
) -> np.ndarray:
    """A random photometric change of a colour fundus image.

    Args:
        image: (H, W, 3) BGR, uint8 or float in [0, 1].
        rng: the random generator (consumed; the same number of draws whatever the image).
        ranges: the sampling ranges.

    Returns:
        (H, W, 3) float32 BGR in [0, 1].
    """
    change = sample_photometric(rng, image.shape[0], image.shape[1], ranges)
    return apply_photometric(image, change)
