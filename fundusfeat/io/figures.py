"""Figures for registration results: matches, checkerboard mosaic, colour overlay.

Conventions:

- Images are ``(H, W)`` grey or ``(H, W, 3)`` BGR (as ``cv2.imread`` gives), uint8 or
  float in [0, 1]; every function returns a uint8 BGR image.
- A registration maps image-1 pixels onto image 2: a
  :class:`~fundusfeat.geometry.transforms.Transform` (``RegistrationResult.transform``) or a
  homography ``H`` (``p2 ~ H @ [x1, y1, 1]``, pixel centres at integer coordinates, x
  before y) as returned by :func:`fundusfeat.estimate_projective` and
  ``cv2.findHomography(src=kps1, dst=kps2)``.
  :func:`fundusfeat.geometry.transforms.warp_to` uses it to bring image 2 into image 1's
  frame, which is what :func:`checkerboard` and :func:`overlay` compare.

These helpers need only OpenCV and numpy (no matplotlib).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from fundusfeat.io.arrays import to_uint8

INLIER_COLOR = (0, 200, 0)
"""BGR colour of inlier matches (green)."""
OUTLIER_COLOR = (0, 0, 230)
"""BGR colour of outlier matches (red)."""


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

    Returns:
        (max(h1, h2), w1 + w2, 3) uint8 BGR image.
    """
    good, bad = _inlier_split(matches, inliers)
    if max_draw is not None:
        good, bad = _thin(good, max_draw), _thin(bad, max_draw)
    left, right = to_bgr_uint8(img1, "img1"), to_bgr_uint8(img2, "img2")
    kps1, kps2 = tuple(kps1), tuple(kps2)
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


def checkerboard(img1: np.ndarray, img2_warped: np.ndarray, tiles: int = 8) -> np.ndarray:
    """Checkerboard mosaic: tiles alternate between image 1 and warped image 2.

    Vessels that continue straight across tile borders mean a good registration.

    Args:
        img1: image 1.
        img2_warped: image 2 in image 1's frame
            (:func:`~fundusfeat.geometry.transforms.warp_to`), same height and width.
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
            (:func:`~fundusfeat.geometry.transforms.warp_to`), same height and width.

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
