"""Image preparation: validation, tensor conversion, scale normalisation.

Conventions used throughout fundusfeat:

- Images are numpy arrays as returned by ``cv2.imread``: ``(H, W, 3)`` BGR or ``(H, W)``
  gray. Accepted dtypes are ``uint8`` (0..255), ``uint16`` (scaled by its bit depth, see
  :func:`validate_image`) and ``float32``/``float64`` in [0, 1]. A fourth (alpha)
  channel is dropped.
- Point coordinates are ``(x, y)`` (column first) in pixels, with the origin at the
  *centre* of the top-left pixel (OpenCV convention, used by ``cv2.KeyPoint.pt``).
- Resizing by ``s`` maps a point with ``x' = (x + 0.5) * s - 0.5`` (the pixel-centre
  convention of ``cv2.resize`` and ``F.interpolate(..., align_corners=False)``).

The field of view is :mod:`fundusfeat.fov`; one image made ready for the network (all of
this at once, validated once) is :func:`fundusfeat.preprocessor.prepare`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fundusfeat.imageops import to_unit_float
from fundusfeat.network import IMAGE_MEAN, IMAGE_STD

MIN_IMAGE_SIDE = 16
"""Smallest accepted image height/width in pixels."""

UINT16_BIT_DEPTHS = (8, 10, 12, 14, 16)
"""Bit depths recognised in uint16 images (see :func:`uint16_bit_depth`)."""

_ACCEPTED_DTYPES = (np.uint8, np.uint16, np.float32, np.float64)


# --------------------------------------------------------------------------- validation
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
    return tensor_from_checked(arrays, device)


def tensor_from_checked(
    arrays: Sequence[np.ndarray],
    device: torch.device | str = "cpu",
    mean: Sequence[float] = IMAGE_MEAN,
    std: Sequence[float] = IMAGE_STD,
) -> torch.Tensor:
    """:func:`to_tensor` of same-sized images already in :func:`validate_image`'s form
    (normalised with ``mean``/``std``, see :func:`normalize_rgb`)."""
    batch = np.stack([to_unit_float(a)[:, :, ::-1] for a in arrays])  # BGR -> RGB
    tensor = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2)
    return normalize_rgb(tensor.to(device), mean, std)


def normalize_rgb(
    batch: torch.Tensor,
    mean: Sequence[float] = IMAGE_MEAN,
    std: Sequence[float] = IMAGE_STD,
) -> torch.Tensor:
    """Normalise RGB images in [0, 1] for the network.

    Args:
        batch: ``(B, 3, H, W)`` float RGB in [0, 1], any device.
        mean, std: per-channel normalisation (a model's ``normalisation`` in the
            registry; the ImageNet values by default).

    Returns:
        ``(B, 3, H, W)`` float32 ``(batch - mean) / std`` on the same device.
    """
    if not isinstance(batch, torch.Tensor):
        raise TypeError(f"batch must be a torch.Tensor, got {_kind(batch)}")
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise ValueError(f"batch must have shape (B, 3, H, W), got {tuple(batch.shape)}")
    m = torch.tensor(mean, dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
    return (batch.float() - m) / s


# ---------------------------------------------------------------- scale normalisation
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
    :func:`~fundusfeat.imageops.resize_image`). Returns float64 ``(N, 2)``.
    """
    return (np.asarray(xy, dtype=np.float64).reshape(-1, 2) + 0.5) * _scale_xy(scale) - 0.5


def from_working(xy: np.ndarray, scale: float | Sequence[float]) -> np.ndarray:
    """Inverse of :func:`to_working`: ``(xy + 0.5) / s - 0.5``. Returns float64 ``(N, 2)``."""
    return (np.asarray(xy, dtype=np.float64).reshape(-1, 2) + 0.5) / _scale_xy(scale) - 0.5
