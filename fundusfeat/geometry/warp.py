"""One warp and one overlap: images resampled through any transform.

:func:`resample` is the only place an image is resampled through a
:class:`~fundusfeat.geometry.transforms.Transform`: ``Transform.warp``, :func:`warp_to`,
the montage canvas, the alignment of visits and the verification use it. A projective
transform goes through ``cv2.warpPerspective``; any other through ``cv2.remap`` of a
sampling map computed on a coarse grid and interpolated bilinearly (``cv2.warpAffine``),
the grid refined until the interpolation is within :data:`MAP_ACCURACY` px of the exact map.
:func:`overlap` is where two fields of view meet in one frame.

Coordinates: ``(x, y)`` pixels, the centre of the top-left pixel at (0, 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from fundusfeat.geometry.transforms import ProjectiveTransform, Transform, homography_transform

MAP_STEP = 8
"""Coarsest grid (px) of a non-projective sampling map."""

MAP_ACCURACY = 1 / 64
"""Largest error (px) of an interpolated sampling map, checked at the grid's cell
centres; the grid step halves (down to every pixel, exact) until it holds. Half of the
1/32 px to which ``cv2.remap`` resolves a sampling position."""

_OUTSIDE = -1e6
"""Sampling position of an output pixel with no finite source (border value there)."""


def check_dsize(dsize: Any) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in dsize)
    except (TypeError, ValueError) as err:
        raise ValueError(f"dsize must be (width, height), got {dsize!r}") from err
    if width <= 0 or height <= 0:
        raise ValueError(f"dsize must be positive, got {dsize!r}")
    return width, height


def warp_to(img2: np.ndarray, H: Transform | np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Resample image 2 into image 1's frame.

    Args:
        img2: image 2, any layout ``cv2.remap`` accepts.
        H: the :class:`~fundusfeat.geometry.transforms.Transform` or (3, 3) homography mapping
            image-1 pixels onto image 2.
        shape: image 1's shape; only ``shape[:2] == (height, width)`` is used.

    Returns:
        Image 2 warped to (height, width) (same dtype and channels as ``img2``):
        output pixel ``p`` is ``img2`` sampled at ``H(p)``; pixels that fall outside
        image 2 are 0.
    """
    if not isinstance(H, Transform):
        H = np.asarray(H, dtype=np.float64)
        if H.shape != (3, 3) or not np.all(np.isfinite(H)):
            raise ValueError(f"H: expected a finite (3, 3) homography, got shape {H.shape}")
        H = homography_transform(H)
    return resample(img2, H, (int(shape[1]), int(shape[0])))


def resample(
    image: np.ndarray,
    to_source: Transform,
    dsize: tuple[int, int],
    *,
    inverse: bool = False,
    offset: tuple[int, int] = (0, 0),
    interpolation: int = cv2.INTER_LINEAR,
    border_value: float = 0,
) -> np.ndarray:
    """``image`` resampled into an output frame.

    Args:
        image: the source image (any layout ``cv2.remap`` accepts).
        to_source: output-frame px -> source px (``inverse=False``), or source px ->
            output-frame px (``inverse=True``: its ``inverse`` is used).
        dsize: ``(width, height)`` of the output.
        inverse: see ``to_source``.
        offset: ``(x, y)`` of the output's top-left pixel in the output frame (a
            rectangle of a larger frame).
        interpolation: cv2 interpolation flag.
        border_value: value where the source has no pixel.

    Returns:
        ``(height, width[, C])`` of the image's dtype: output pixel ``p`` is ``image``
        sampled at the source point of ``p + offset``.
    """
    width, height = check_dsize(dsize)
    ox, oy = offset
    if isinstance(to_source, ProjectiveTransform):
        M = np.linalg.inv(to_source.matrix) if inverse else to_source.matrix
        shift = np.array([[1.0, 0.0, ox], [0.0, 1.0, oy], [0.0, 0.0, 1.0]])
        return cv2.warpPerspective(
            image,
            M @ shift,
            (width, height),
            flags=interpolation | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=border_value,
        )
    source = to_source.inverse if inverse else to_source.apply
    map_x, map_y = sampling_map(source, (width, height), (ox, oy))
    return cv2.remap(
        image,
        map_x,
        map_y,
        interpolation,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=border_value,
    )


def _finite(points: np.ndarray) -> np.ndarray:
    out = points.astype(np.float32)
    out[~np.isfinite(out)] = _OUTSIDE
    return out


def sampling_map(
    source: Any,
    dsize: tuple[int, int],
    offset: tuple[int, int] = (0, 0),
    accuracy: float = MAP_ACCURACY,
) -> tuple[np.ndarray, np.ndarray]:
    """``(map_x, map_y)`` float32 ``(height, width)``: the source px of every output px.

    ``source`` (``(N, 2)`` output-frame points -> ``(N, 2)`` source points) is evaluated
    on a grid of step :data:`MAP_STEP` and interpolated bilinearly in between
    (:func:`_node_aligned`); where the
    interpolation at the cells' centres is off by more than ``accuracy`` px the step is
    halved, down to every pixel (exact). Non-finite source points sample the border.
    """
    width, height = dsize
    ox, oy = offset
    step = MAP_STEP
    while step > 1:
        gw, gh = -(-(width - 1) // step) + 1, -(-(height - 1) // step) + 1
        ys, xs = np.mgrid[0:gh, 0:gw] * float(step)
        nodes = source(np.stack([xs.ravel() + ox, ys.ravel() + oy], axis=1)).reshape(gh, gw, 2)
        centres = source(
            np.stack(
                [xs[:-1, :-1].ravel() + ox + step / 2, ys[:-1, :-1].ravel() + oy + step / 2], 1
            )
        ).reshape(gh - 1, gw - 1, 2)
        mean = (nodes[:-1, :-1] + nodes[1:, :-1] + nodes[:-1, 1:] + nodes[1:, 1:]) / 4.0
        error = np.abs(mean - centres).max(axis=2)
        if not np.any(error[np.isfinite(error)] > accuracy):
            big = _node_aligned(_finite(nodes), step, (width, height))
            break
        step //= 2
    else:
        ys, xs = np.mgrid[0:height, 0:width]
        pts = np.stack([xs.ravel() + ox, ys.ravel() + oy], axis=1).astype(np.float64)
        big = _finite(source(pts)).reshape(height, width, 2)
    return np.ascontiguousarray(big[..., 0]), np.ascontiguousarray(big[..., 1])


def _node_aligned(nodes: np.ndarray, step: int, dsize: tuple[int, int]) -> np.ndarray:
    """Bilinear interpolation of ``(gh, gw, 2)`` nodes at multiples of ``step`` px to every
    pixel of ``dsize`` (``cv2.warpAffine`` of the scaling ``x / step``; ``step`` a power of
    two, so the fractions are exact in its interpolation tables)."""
    scale = np.array([[1.0 / step, 0.0, 0.0], [0.0, 1.0 / step, 0.0]])
    return cv2.warpAffine(
        nodes,
        scale,
        dsize,
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )


def overlap(to_source: Transform, mask: np.ndarray, source_mask: np.ndarray) -> np.ndarray:
    """``(h, w)`` bool: ``mask`` (the output frame's field of view) AND ``source_mask``
    resampled into that frame (nearest neighbour) through ``to_source`` (output px ->
    source px): where both images show the retina."""
    h, w = mask.shape
    seen = resample(
        source_mask.astype(np.uint8), to_source, (w, h), interpolation=cv2.INTER_NEAREST
    )
    return (mask > 0) & (seen > 0)
