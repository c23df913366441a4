"""Figures for registration results: matches, checkerboard mosaic, colour overlay.

Conventions:

- Images are ``(H, W)`` grey or ``(H, W, 3)`` BGR (as ``cv2.imread`` gives), uint8 or
  float in [0, 1]; every function returns a uint8 BGR image.
- A registration maps image-1 pixels onto image 2: a
  :class:`~fundusfeat.geometry.transforms.Transform` (``RegistrationResult.transform``) or a
  homography ``H`` (``p2 ~ H @ [x1, y1, 1]``, pixel centres at integer coordinates, x
  before y) as returned by :func:`fundusfeat.estimate_projective` and
  ``cv2.findHomography(src=kps1, dst=kps2)``.
  :func:`fundusfeat.geometry.warp.warp_to` uses it to bring image 2 into image 1's
  frame, which is what :func:`checkerboard` and :func:`overlay` compare.

These helpers need only OpenCV and numpy (no matplotlib).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from fundusfeat.io.arrays import resize_image, to_uint8

INLIER_COLOR = (0, 200, 0)
"""BGR colour of inlier matches (green)."""
OUTLIER_COLOR = (0, 0, 230)
"""BGR colour of outlier matches (red)."""

MAX_FIGURE_SIDE = 2048
"""Longest side (px) of an overview figure (matches, registered, checkerboard, overlay):
larger images are shrunk (INTER_AREA) so that a figure of a 2912-px pair stays a few MB.
Crops (:func:`detail_crop`) keep full resolution."""

MAX_DRAWN_MATCHES = 150
"""Inliers (and outliers) drawn in the matches figure; more would cover the images."""


def to_bgr_uint8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Convert a grey or BGR image (uint8, or float in [0, 1]) to (H, W, 3) uint8 BGR.

    Raises:
        TypeError: if ``image`` is not a numpy array.
        ValueError: if it is not (H, W), (H, W, 1) or (H, W, 3), or is empty.
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3) or image.size == 0:
        raise ValueError(
            f"{name}: expected a non-empty (H, W) or (H, W, 3) image, got {image.shape}"
        )
    image = to_uint8(image)
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image


def _green_channel(image: np.ndarray, name: str) -> np.ndarray:
    """(H, W) uint8 green channel (the vessel-contrast channel of a fundus photograph)."""
    return np.ascontiguousarray(to_bgr_uint8(image, name)[..., 1])


def _check_same_size(img1: np.ndarray, img2: np.ndarray) -> None:
    if img1.shape[:2] != img2.shape[:2]:
        raise ValueError(
            f"img2_warped: expected the size of img1 {img1.shape[:2]}, got {img2.shape[:2]} "
            "(warp it with warp_to(img2, H, img1.shape) first)"
        )


def detail_crop(image: np.ndarray, centre: tuple[float, float], size: int = 512) -> np.ndarray:
    """A ``size`` x ``size`` crop of ``image`` at full resolution around ``centre``
    (shifted to stay inside; smaller images are returned whole). A thumbnail hides
    misalignments of a few pixels that such a crop shows."""
    h, w = image.shape[:2]
    x0 = int(np.clip(round(centre[0] - size / 2), 0, max(w - size, 0)))
    y0 = int(np.clip(round(centre[1] - size / 2), 0, max(h - size, 0)))
    return image[y0 : y0 + size, x0 : x0 + size].copy()


def _inlier_split(matches: Sequence[cv2.DMatch], inliers: np.ndarray | None):
    """Split matches into (inliers, outliers) by a (N,) or (N, 1) mask (None: all inliers)."""
    if inliers is None:
        return list(matches), []
    mask = np.asarray(inliers).reshape(-1).astype(bool)
    if len(mask) != len(matches):
        raise ValueError(f"inliers: expected {len(matches)} entries, got {len(mask)}")
    good = [m for m, keep in zip(matches, mask, strict=True) if keep]
    bad = [m for m, keep in zip(matches, mask, strict=True) if not keep]
    return good, bad


def _thin(items: list, n: int) -> list:
    """At most ``n`` items, evenly spaced (deterministic)."""
    if n < 0:
        raise ValueError(f"max_draw must be >= 0, got {n}")
    if len(items) <= n:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def draw_matches(
    img1: np.ndarray,
    kps1: Sequence[cv2.KeyPoint],
    img2: np.ndarray,
    kps2: Sequence[cv2.KeyPoint],
    matches: Sequence[cv2.DMatch],
    inliers: np.ndarray | None = None,
    inliers_only: bool = False,
    max_draw: int | None = None,
    max_side: int | None = None,
) -> np.ndarray:
    """Draw matches side by side with ``cv2.drawMatches``, inliers green, outliers red.

    Args:
        img1, img2: the two images (see the module conventions).
        kps1, kps2: keypoints in input pixel coordinates (``queryIdx`` indexes ``kps1``,
            ``trainIdx`` indexes ``kps2``).
        matches: the matches, e.g. ``FundusMatcher.match(desc1, desc2)``.
        inliers: (N,) or (N, 1) mask over ``matches`` (non-zero = inlier), e.g. from
            ``estimate_projective``; None draws every match as an inlier.
        inliers_only: draw only the inliers.
        max_draw: draw at most this many inliers and this many outliers (evenly spaced
            in the match list, so the figure stays readable); None draws all.
        max_side: shrink both images by one factor so that the figure's longer side is at
            most this many pixels (the lines are drawn after shrinking, so they stay
            visible); None keeps full resolution.

    Returns:
        ``(max(h1, h2) * s, (w1 + w2) * s, 3)`` uint8 BGR image (``s = 1`` unless
        ``max_side`` shrinks it).
    """
    good, bad = _inlier_split(matches, inliers)
    if max_draw is not None:
        good, bad = _thin(good, max_draw), _thin(bad, max_draw)
    left, right = to_bgr_uint8(img1, "img1"), to_bgr_uint8(img2, "img2")
    kps1, kps2 = tuple(kps1), tuple(kps2)
    if max_side is not None:
        width = left.shape[1] + right.shape[1]
        scale = max_side / max(width, left.shape[0], right.shape[0])
        if scale < 1.0:
            left, f1 = resize_image(left, scale)
            right, f2 = resize_image(right, scale)
            kps1, kps2 = _scaled_keypoints(kps1, f1), _scaled_keypoints(kps2, f2)
    flags = cv2.DrawMatchesFlags_NOT_DRAW_SINGLE_POINTS
    canvas = cv2.drawMatches(left, kps1, right, kps2, [], None, flags=flags)
    layers = (
        [(INLIER_COLOR, good)] if inliers_only else [(OUTLIER_COLOR, bad), (INLIER_COLOR, good)]
    )
    for color, subset in layers:
        if subset:
            canvas = cv2.drawMatches(
                left,
                kps1,
                right,
                kps2,
                subset,
                canvas,
                matchColor=color,
                singlePointColor=color,
                flags=flags | cv2.DrawMatchesFlags_DRAW_OVER_OUTIMG,
            )
    return canvas


def _scaled_keypoints(
    kps: Sequence[cv2.KeyPoint], factors: tuple[float, float]
) -> tuple[cv2.KeyPoint, ...]:
    """Keypoints moved into an image resized by ``(sx, sy)`` (pixel centres:
    ``x' = (x + 0.5) * sx - 0.5``)."""
    sx, sy = factors
    return tuple(
        cv2.KeyPoint((k.pt[0] + 0.5) * sx - 0.5, (k.pt[1] + 0.5) * sy - 0.5, k.size * sx)
        for k in kps
    )


def shrink(image: np.ndarray, max_side: int = MAX_FIGURE_SIDE) -> np.ndarray:
    """``image`` shrunk (INTER_AREA) so that its longer side is at most ``max_side``."""
    scale = max_side / max(image.shape[:2])
    return resize_image(image, scale)[0] if scale < 1.0 else image


def with_legend(image: np.ndarray, text: str) -> np.ndarray:
    """``image`` with a one-line legend in a dark strip below it.

    The font is scaled to the image width so the line stays readable on large figures
    and fits on small ones.

    Args:
        image: (H, W) or (H, W, 3) image (see the module conventions).
        text: the legend (ASCII; which colour or side is which image).

    Returns:
        (H + h, W, 3) uint8 BGR image, ``h`` the strip's height.
    """
    img = to_bgr_uint8(image, "image")
    width = img.shape[1]
    font, thickness = cv2.FONT_HERSHEY_SIMPLEX, max(1, width // 1200)
    scale = max(0.3, width / 1600.0)
    (tw, th), base = cv2.getTextSize(text, font, scale, thickness)
    if tw > 0.98 * width:
        scale *= 0.98 * width / tw
        (tw, th), base = cv2.getTextSize(text, font, scale, thickness)
    pad = max(4, th // 2)
    strip = np.full((th + base + 2 * pad, width, 3), 32, np.uint8)
    cv2.putText(strip, text, (pad, pad + th), font, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return np.vstack([img, strip])


def registration_figures(
    img1: np.ndarray,
    img2: np.ndarray,
    result: Any,
    names: tuple[str, str] = ("image 1", "image 2"),
    max_side: int = MAX_FIGURE_SIDE,
) -> dict[str, np.ndarray]:
    """The figures of a registration result, by name, each with a one-line legend.

    ``matches`` always; when there is a transform, ``registered`` (image 2 in image 1's
    frame), ``checkerboard``, ``overlay`` and ``overlay_crop`` (a crop of the overlay at
    full resolution around the inliers' median, where errors of a few pixels show).
    Overview figures are shrunk to ``max_side``; the crop is not.

    Args:
        img1, img2: the registered images (see the module conventions).
        result: a :class:`~fundusfeat.pipeline.register.RegistrationResult` (its
            ``keypoints1/2``, ``matches``, ``inliers`` and ``transform``, whose ``warp``
            resamples image 2 into image 1's frame).
        names: how the legends call image 1 and image 2 (e.g. file names).
        max_side: longest side of the overview figures.

    Returns:
        name -> (h, w, 3) uint8 BGR figure.
    """
    n1, n2 = names
    good = int(np.count_nonzero(result.inliers)) if result.inliers is not None else 0
    matches = draw_matches(
        img1, result.keypoints1, img2, result.keypoints2, result.matches, result.inliers,
        max_draw=MAX_DRAWN_MATCHES, max_side=max_side,
    )  # fmt: skip
    figures = {
        "matches": with_legend(
            matches,
            f"left: {n1} | right: {n2} | green: inliers ({good}) | red: outliers "
            f"({len(result.matches) - good}); at most {MAX_DRAWN_MATCHES} of each drawn",
        )
    }
    if result.transform is None:
        return figures
    h, w = img1.shape[:2]
    warped = to_bgr_uint8(result.transform.warp(img2, (w, h)), "registered")
    over = overlay(img1, warped)
    model = result.transform.model
    figures["registered"] = with_legend(
        shrink(warped, max_side), f"{n2} resampled into the frame of {n1} ({model})"
    )
    figures["checkerboard"] = with_legend(
        shrink(checkerboard(img1, warped), max_side),
        f"tiles alternate {n1} and {n2} (registered, {model})",
    )
    figures["overlay"] = with_legend(
        shrink(over, max_side), f"green: {n1} | magenta: {n2} (registered) | grey: both agree"
    )
    cx, cy = _inlier_centre(result, (h, w))
    figures["overlay_crop"] = with_legend(
        detail_crop(over, (cx, cy)),
        f"full resolution at ({cx:.0f}, {cy:.0f}): green {n1}, magenta {n2}",
    )
    return figures


def _inlier_centre(result: Any, shape: tuple[int, int]) -> tuple[float, float]:
    """Median image-1 position of the inliers (where the crop of the overlay looks; the
    image centre when there are none)."""
    mask = np.asarray(result.inliers).reshape(-1).astype(bool)
    pts = [
        result.keypoints1[m.queryIdx].pt for m, ok in zip(result.matches, mask, strict=True) if ok
    ]
    if not pts:
        return (shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0
    xy = np.asarray(pts)
    return float(np.median(xy[:, 0])), float(np.median(xy[:, 1]))


def checkerboard(img1: np.ndarray, img2_warped: np.ndarray, tiles: int = 8) -> np.ndarray:
    """Checkerboard mosaic: tiles alternate between image 1 and warped image 2.

    Vessels that continue straight across tile borders mean a good registration.

    Args:
        img1: image 1.
        img2_warped: image 2 in image 1's frame
            (:func:`~fundusfeat.geometry.warp.warp_to`), same height and width.
        tiles: number of tiles along each side (>= 1).

    Returns:
        (H, W, 3) uint8 BGR image.
    """
    if tiles < 1:
        raise ValueError(f"tiles: expected >= 1, got {tiles}")
    a, b = to_bgr_uint8(img1, "img1"), to_bgr_uint8(img2_warped, "img2_warped")
    _check_same_size(a, b)
    h, w = a.shape[:2]
    rows = (np.arange(h) * tiles // h)[:, None]
    cols = (np.arange(w) * tiles // w)[None, :]
    use_b = (rows + cols) % 2 == 1
    return np.where(use_b[..., None], b, a)


def overlay(img1: np.ndarray, img2_warped: np.ndarray) -> np.ndarray:
    """Colour overlay: image 1 in green, warped image 2 in magenta.

    Where the two agree the result is grey; misaligned structures show as green
    (image 1 only) and magenta (image 2 only) fringes.

    Args:
        img1: image 1.
        img2_warped: image 2 in image 1's frame
            (:func:`~fundusfeat.geometry.warp.warp_to`), same height and width.

    Returns:
        (H, W, 3) uint8 BGR image: B = R = green channel of ``img2_warped``, G = green
        channel of ``img1`` (grey images: the grey level), each contrast-equalised
        (CLAHE) so that vessels dominate.
    """
    g1, g2 = _green_channel(img1, "img1"), _green_channel(img2_warped, "img2_warped")
    _check_same_size(g1, g2)
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    g1, g2 = clahe.apply(g1), clahe.apply(g2)
    return cv2.merge([g2, g1, g2])
