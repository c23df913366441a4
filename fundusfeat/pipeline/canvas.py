"""The montage canvas: bounds, warping fields into a frame, exposure compensation, blending.

Generic parts (any :class:`~fundusfeat.geometry.transforms.Transform` from image px to frame
px): :func:`field_rect` (where an image's mask lands), :func:`canvas_bounds` (the frame
holding all of them, bounded in pixels), :func:`shifted` (a transform followed by a
translation) and :func:`warp_into` (an image and its mask resampled into a rectangle of
the frame). :func:`blend` then takes out the fields' illumination differences (a smooth
gain field per field fitted on the overlaps, :mod:`.exposure`), finds seams inside the
overlaps (``cv2.detail`` graph cut on a reduced copy, turned into a partition of the
fields' union at full size) and joins the fields with ``cv2.detail``'s multiband blender,
everything restricted to each field's (slightly eroded) FOV mask, so no black rim of a
field enters an overlap.

Coordinates: ``(x, y)`` pixels, the centre of the top-left pixel at (0, 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from fundusfeat.geometry.transforms import ProjectiveTransform, QuadraticTransform, Transform
from fundusfeat.geometry.warp import resample
from fundusfeat.pipeline.exposure import fit_gains, gain_map

MAX_CANVAS_PIXELS = 60_000_000
"""Default bound on the canvas area (pixels): a clear error beats running out of memory."""

RIM_PX = 3
"""Pixels eroded from each FOV mask before blending (interpolated rim pixels are dark)."""

RECT_MARGIN_PX = 4
"""Margin around a field's mapped box when it is warped (so no mask pixel is cut off)."""

CLIPPED = 250
"""A field's pixel with a channel at or above this (uint8) is clipped: where another
field covers it, the seams give it to that field."""

SEAM_PIXELS = 160_000
"""The seam finder runs on a copy of the canvas reduced to about this many pixels
(so does the exposure compensator)."""


def _contour(mask: np.ndarray) -> np.ndarray:
    """``(N, 2)`` float64 boundary points of a bool mask (outer contours, at most ~720)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return np.zeros((0, 2))
    pts = np.concatenate([c.reshape(-1, 2) for c in contours]).astype(np.float64)
    return pts[:: max(1, len(pts) // 720)]


def field_rect(transform: Transform, mask: np.ndarray) -> tuple[float, float, float, float]:
    """``(x0, y0, x1, y1)`` frame bounding box of the mapped boundary of a bool mask.

    Raises:
        ValueError: the mask is empty or maps nowhere finite.
    """
    pts = transform.apply(_contour(mask))
    pts = pts[np.isfinite(pts).all(axis=1)]
    if not len(pts):
        raise ValueError("a field's mask maps nowhere in the frame")
    return (*pts.min(axis=0), *pts.max(axis=0))


def canvas_bounds(
    transforms: Sequence[Transform],
    masks: Sequence[np.ndarray],
    max_pixels: int = MAX_CANVAS_PIXELS,
) -> tuple[tuple[float, float], tuple[int, int]]:
    """The smallest canvas holding every mapped mask.

    Args:
        transforms: image px -> frame px, one per image.
        masks: ``(H, W)`` bool valid pixels of each image.
        max_pixels: bound on ``width * height``.

    Returns:
        ``((dx, dy), (width, height))``: frame px + ``(dx, dy)`` = canvas px.

    Raises:
        ValueError: the canvas would exceed ``max_pixels``.
    """
    rects = np.array([field_rect(t, m) for t, m in zip(transforms, masks, strict=True)])
    x0, y0 = np.floor(rects[:, :2].min(axis=0))
    x1, y1 = np.ceil(rects[:, 2:].max(axis=0))
    width, height = int(x1 - x0) + 1, int(y1 - y0) + 1
    if width * height > max_pixels:
        raise ValueError(
            f"canvas of {width} x {height} px exceeds max_pixels={max_pixels} "
            "(a field is badly placed, or raise max_pixels)"
        )
    return (-float(x0), -float(y0)), (width, height)


def shifted(transform: Transform, offset: tuple[float, float]) -> Transform:
    """``transform`` followed by the translation ``offset = (dx, dy)`` (same model)."""
    dx, dy = offset
    if isinstance(transform, ProjectiveTransform):
        shift = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])
        return ProjectiveTransform(shift @ transform.matrix, transform.model)
    if isinstance(transform, QuadraticTransform):
        cx, cy = transform.centre2
        return QuadraticTransform(
            transform.coefficients,
            transform.centre1,
            transform.scale1,
            (cx + dx, cy + dy),
            transform.scale2,
            transform.region,
        )
    raise TypeError(f"transform: cannot shift a {type(transform).__name__}")


def warp_into(
    image: np.ndarray,
    mask: np.ndarray,
    transform: Transform,
    rect: tuple[int, int, int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Warp an image and its mask into the rectangle ``(x, y, width, height)`` of a frame.

    Args:
        image: ``(H, W[, C])`` image.
        mask: ``(H, W)`` bool mask of its valid pixels.
        transform: image px -> frame px (:func:`fundusfeat.geometry.warp.resample` of
            its inverse: ``cv2.warpPerspective`` for a projective transform, else a
            sampling map on a refined grid).
        rect: the part of the frame to fill.

    Returns:
        ``(warped (height, width[, C]) of image's dtype, warped_mask (height, width) bool)``.
    """
    x, y, width, height = rect
    warped = resample(image, transform, (width, height), inverse=True, offset=(x, y))
    warped_mask = resample(
        mask.astype(np.uint8),
        transform,
        (width, height),
        inverse=True,
        offset=(x, y),
        interpolation=cv2.INTER_NEAREST,
    )
    return warped, warped_mask > 0


def _rect_in(
    transform: Transform, mask: np.ndarray, size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """``(x, y, width, height)`` of the mapped mask's box, with a margin of
    :data:`RECT_MARGIN_PX` (the box comes from a subsampled contour), clipped to the canvas."""
    x0, y0, x1, y1 = field_rect(transform, mask)
    x0, y0 = max(0, int(np.floor(x0)) - RECT_MARGIN_PX), max(0, int(np.floor(y0)) - RECT_MARGIN_PX)
    x1 = min(size[0] - 1, int(np.ceil(x1)) + RECT_MARGIN_PX)
    y1 = min(size[1] - 1, int(np.ceil(y1)) + RECT_MARGIN_PX)
    return x0, y0, max(1, x1 - x0 + 1), max(1, y1 - y0 + 1)


def _get(mat: np.ndarray | cv2.UMat) -> np.ndarray:
    return mat.get() if isinstance(mat, cv2.UMat) else mat


def _reduced(
    warped: Sequence[np.ndarray],
    wmasks: Sequence[np.ndarray],
    corners: Sequence[tuple[int, int]],
    scale: float,
) -> tuple[list[np.ndarray], list[np.ndarray], list[tuple[int, int]]]:
    """Copies of the warped fields, masks and corners reduced by ``scale``."""
    small_imgs, small_masks, small_corners = [], [], []
    for w_img, w_mask, (x, y) in zip(warped, wmasks, corners, strict=True):
        sw = max(1, round(w_img.shape[1] * scale))
        sh = max(1, round(w_img.shape[0] * scale))
        small_imgs.append(cv2.resize(w_img, (sw, sh), interpolation=cv2.INTER_AREA))
        small_masks.append(cv2.resize(w_mask, (sw, sh), interpolation=cv2.INTER_NEAREST))
        small_corners.append((round(x * scale), round(y * scale)))
    return small_imgs, small_masks, small_corners


def _prefer_unclipped(
    small: tuple[list[np.ndarray], list[np.ndarray], list[tuple[int, int]]],
    clipped: Sequence[np.ndarray],
) -> tuple[list[np.ndarray], list[np.ndarray], list[tuple[int, int]]]:
    """The reduced copies with each field's clipped pixels taken out of its mask where
    another field covers them, so that the seams give those pixels to a field that
    still shows them (a halo or reflection that saturated one photograph)."""
    imgs, masks, corners = small
    out = []
    for k, (m, (x, y)) in enumerate(zip(masks, corners, strict=True)):
        h, w = m.shape
        covered = np.zeros((h, w), bool)
        for j, (mj, (xj, yj)) in enumerate(zip(masks, corners, strict=True)):
            if j == k:
                continue
            x0, y0 = max(x, xj), max(y, yj)
            x1, y1 = min(x + w, xj + mj.shape[1]), min(y + h, yj + mj.shape[0])
            if x1 > x0 and y1 > y0:
                covered[y0 - y : y1 - y, x0 - x : x1 - x] |= (
                    mj[y0 - yj : y1 - yj, x0 - xj : x1 - xj] > 0
                )
        bad = cv2.dilate(clipped[k].astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        keep = m.copy()
        keep[bad & covered] = 0
        out.append(keep)
    return imgs, out, corners


def _seam_masks(
    small: tuple[list[np.ndarray], list[np.ndarray], list[tuple[int, int]]],
    wmasks: Sequence[np.ndarray],
    corners: Sequence[tuple[int, int]],
    size: tuple[int, int],
) -> list[np.ndarray]:
    """Seam masks (uint8 0/255, each field's rectangle at full size) that partition the
    union of ``wmasks`` exactly: no pixel of a field is left without an owner.

    The ``cv2.detail`` graph-cut seam finder runs on the reduced copies. Its masks,
    brought back to full size bilinearly, are each field's vote; every canvas pixel goes
    to the field with the highest vote among the fields whose (full-size) mask covers it,
    ties to the field whose mask edge is farthest. Thresholding each upscaled mask on its
    own instead leaves holes along the seam, where the reduced copies disagree by a
    rounded pixel.
    """
    imgs, masks, small_corners = small
    finder = cv2.detail.GraphCutSeamFinder("COST_COLOR")
    found = finder.find(
        [i.astype(np.float32) for i in imgs], small_corners, [cv2.UMat(m) for m in masks]
    )
    best = np.full((size[1], size[0]), -1.0, np.float32)
    owner = np.full((size[1], size[0]), -1, np.int32)
    for k, (seam, w_mask, (x, y)) in enumerate(zip(found, wmasks, corners, strict=True)):
        h, w = w_mask.shape
        vote = cv2.resize(
            _get(seam).astype(np.float32) / 255.0, (w, h), interpolation=cv2.INTER_LINEAR
        )
        depth = cv2.distanceTransform(w_mask, cv2.DIST_L2, 3)
        vote += 1e-3 * np.minimum(depth, 255.0) / 255.0
        vote[w_mask == 0] = -1.0
        view_best, view_owner = best[y : y + h, x : x + w], owner[y : y + h, x : x + w]
        wins = vote > view_best
        view_best[wins] = vote[wins]
        view_owner[wins] = k
    return [
        (owner[y : y + m.shape[0], x : x + m.shape[1]] == k).astype(np.uint8) * 255
        for k, (m, (x, y)) in enumerate(zip(wmasks, corners, strict=True))
    ]


def extend_outside(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` with the pixels outside ``mask`` filled by a smooth extension of the
    inside (push-pull: masked means on a Gaussian pyramid, the coarsest level that has
    data fills each hole), so that the multiband blender's low bands see no black
    border where a field's mask ends.

    Args:
        image: ``(h, w, 3)`` uint8.
        mask: ``(h, w)`` uint8, nonzero = valid.

    Returns:
        ``(h, w, 3)`` uint8, equal to ``image`` inside the mask.
    """
    valid = (mask > 0).astype(np.float32)
    if valid.all() or not valid.any():
        return image
    levels = [(image.astype(np.float32) * valid[..., None], valid)]
    while min(levels[-1][1].shape) > 8:
        num, den = levels[-1]
        levels.append((cv2.pyrDown(num), cv2.pyrDown(den)))
    num, den = levels[-1]
    filled = num.sum(axis=(0, 1)) / max(float(den.sum()), 1e-6) * np.ones_like(num)
    for num, den in reversed(levels):
        up = cv2.resize(filled, (den.shape[1], den.shape[0]), interpolation=cv2.INTER_LINEAR)
        share = np.clip(den * 4.0, 0.0, 1.0)[..., None]  # trust a level's mean where it has data
        filled = share * num / np.maximum(den, 1e-6)[..., None] + (1 - share) * up
    out = image.copy()
    outside = valid == 0
    out[outside] = np.clip(filled[outside], 0, 255).astype(np.uint8)
    return out


def blend(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    transforms: Sequence[Transform],
    size: tuple[int, int],
    *,
    reference: int = 0,
    num_bands: int = 5,
    compensate: bool = True,
    labels: bool = False,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Blend fields into a canvas of ``size = (width, height)``.

    Exposure (a smooth gain field per field and channel, :func:`.exposure.fit_gains`,
    ``reference`` fixed) and seams (``cv2.detail.GraphCutSeamFinder``) are estimated on
    copies reduced to about :data:`SEAM_PIXELS` canvas pixels (as OpenCV's
    ``stitching_detailed`` does) and applied at full size; every pixel of the fields'
    union belongs to exactly one field's seam mask; ``cv2.detail.MultiBandBlender``
    joins the fields.

    Args:
        images: ``(H, W, 3)`` uint8 BGR fields.
        masks: ``(H, W)`` bool FOV masks.
        transforms: field px -> canvas px.
        size: ``(width, height)`` of the canvas.
        reference: index of the field whose exposure the others are matched to.
        num_bands: bands of the multiband blender.
        compensate: False blends the fields as they are (no gain fields).
        labels: also return which field each canvas pixel comes from.

    Returns:
        ``(montage (height, width, 3) uint8 BGR, mask (height, width) bool)``; pixels
        outside every field are 0. With ``labels``, a third array: ``(height, width)``
        int32, the index of the field whose seam mask holds the pixel, -1 outside.
    """
    if not 0 <= reference < len(images):
        raise ValueError(f"reference must be a field index in [0, {len(images)}), got {reference}")
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * RIM_PX + 1, 2 * RIM_PX + 1))
    rects, warped, wmasks = [], [], []
    for img, m, t in zip(images, masks, transforms, strict=True):
        inner = cv2.erode(m.astype(np.uint8), kernel) > 0
        rect = _rect_in(t, inner, size)
        w_img, w_mask = warp_into(img, inner, t, rect)
        rects.append(rect)
        warped.append(w_img)
        wmasks.append(w_mask.astype(np.uint8) * 255)
    corners = [(r[0], r[1]) for r in rects]
    scale = min(1.0, float(np.sqrt(SEAM_PIXELS / (size[0] * size[1]))))
    small = _reduced(warped, wmasks, corners, scale)
    clipped = [(img >= CLIPPED).any(axis=2) for img in small[0]]
    if compensate and len(warped) > 1:
        gains = fit_gains(*small, scale, rects, reference)
        warped = [
            np.clip(w * gain_map(g, r), 0, 255).astype(np.uint8)
            for w, g, r in zip(warped, gains, rects, strict=True)
        ]
        small = _reduced(warped, wmasks, corners, scale)
    if len(warped) > 1:
        seams = _seam_masks(_prefer_unclipped(small, clipped), wmasks, corners, size)
    else:
        seams = wmasks
    blender = cv2.detail.MultiBandBlender()
    blender.setNumBands(num_bands)
    blender.prepare((0, 0, size[0], size[1]))
    for k, (w_img, seam) in enumerate(zip(warped, seams, strict=True)):
        blender.feed(extend_outside(w_img, wmasks[k]).astype(np.int16), seam, corners[k])
    result, result_mask = blender.blend(None, None)
    out = np.clip(_get(result), 0, 255).astype(np.uint8)
    mask = _get(result_mask) > 0
    out[~mask] = 0
    if not labels:
        return out, mask
    owner = np.full((size[1], size[0]), -1, np.int32)
    for k, (seam, (x, y)) in enumerate(zip(seams, corners, strict=True)):
        h, w = seam.shape
        owner[y : y + h, x : x + w][seam > 0] = k
    return out, mask, owner
