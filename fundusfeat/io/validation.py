"""Checking the caller's image and mask arrays, and putting images in canonical form.

Images are numpy arrays as returned by ``cv2.imread``: ``(H, W, 3)`` BGR or ``(H, W)``
gray. Accepted dtypes are ``uint8`` (0..255), ``uint16`` (scaled by its bit depth, see
:func:`validate_image`) and ``float32``/``float64`` in [0, 1]. A fourth (alpha) channel
is dropped. Every error names the argument.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MIN_IMAGE_SIDE = 16
"""Smallest accepted image height/width in pixels."""

UINT16_BIT_DEPTHS = (8, 10, 12, 14, 16)
"""Bit depths recognised in uint16 images (see :func:`uint16_bit_depth`)."""

_ACCEPTED_DTYPES = (np.uint8, np.uint16, np.float32, np.float64)


def validate_image(img: object, name: str = "image") -> np.ndarray:
    """Check an image and return it in canonical form.

    Args:
        img: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` BGR or ``(H, W, 4)`` BGRA array;
            dtype ``uint8``, ``uint16`` or ``float32``/``float64`` with values in [0, 1].
        name: the argument name used in error messages.

    Returns:
        ``(H, W, 3)`` BGR array: ``uint8`` for ``uint8`` input, else ``float32`` in [0, 1].
        ``uint16`` data is divided by ``2**b - 1`` for its bit depth ``b``
        (:func:`uint16_bit_depth`: 10- and 12-bit camera data stored in uint16 keep their
        full range). Gray images are replicated to 3 channels and the alpha channel is
        dropped. The input is never modified.

    Raises:
        TypeError: ``img`` is not a numpy array or has an unsupported dtype.
        ValueError: wrong number of dimensions or channels, smaller than
            :data:`MIN_IMAGE_SIDE` pixels, non-finite values, floats outside [0, 1].
    """
    if not isinstance(img, np.ndarray):
        raise TypeError(
            f"{name} must be a numpy.ndarray (as from cv2.imread), got {type_name(img)}"
        )
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
        return (img / float(2 ** uint16_bit_depth(img) - 1)).clip(0.0, 1.0).astype(np.float32)
    if img.dtype.kind == "f":
        return _check_float_range(img, name)
    return img


def uint16_bit_depth(img: np.ndarray) -> int:
    """The bit depth of the data in a uint16 image.

    The smallest of :data:`UINT16_BIT_DEPTHS` whose range holds the image's maximum:
    cameras store 10-, 12- or 14-bit data in uint16 files, whose values then never exceed
    1023, 4095 or 16383 (a 16-bit image whose brightest pixel is below 4096 is thus read
    as 12-bit, which only brightens a very dark picture).
    """
    peak = int(img.max()) if img.size else 0
    return next(b for b in UINT16_BIT_DEPTHS if peak <= 2**b - 1)


def type_name(obj: object) -> str:
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
        raise TypeError(f"{name} must be None or a numpy.ndarray, got {type_name(mask)}")
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
