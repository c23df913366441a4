"""Robust estimation between matched keypoints: the homography (OpenCV's RANSAC, MAGSAC++
or LMedS) and sanity bounds of a homography.

``H`` always maps image-1 points onto image 2: ``[x2, y2, 1]^T ~ H [x1, y1, 1]^T``
(``cv2.findHomography(src=kps1[queryIdx], dst=kps2[trainIdx])``), in pixel coordinates
with the origin at the centre of the top-left pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

DEFAULT_RANSAC_THRESHOLD = 5.0
"""Maximum reprojection error (px in image 2) of an inlier."""
DEFAULT_MAX_ITERS = 10000

METHODS = {"ransac": cv2.RANSAC, "magsac": cv2.USAC_MAGSAC, "lmeds": cv2.LMEDS}


def keypoints_to_array(kps: Any, name: str = "keypoints") -> np.ndarray:
    """Points as ``(N, 2)`` float32 ``(x, y)`` from ``cv2.KeyPoint``s or an ``(N, 2)`` array."""
    if isinstance(kps, np.ndarray):
        if kps.ndim != 2 or kps.shape[1] != 2:
            raise ValueError(f"{name} as an array must have shape (N, 2), got {kps.shape}")
        if not np.issubdtype(kps.dtype, np.number):
            raise TypeError(f"{name} must be numeric, got {kps.dtype}")
        return kps.astype(np.float32)
    if not isinstance(kps, Sequence) or not all(isinstance(k, cv2.KeyPoint) for k in kps):
        raise TypeError(f"{name} must be a sequence of cv2.KeyPoint or an (N, 2) array")
    if not kps:
        return np.zeros((0, 2), np.float32)
    return cv2.KeyPoint_convert(tuple(kps)).reshape(-1, 2).astype(np.float32)


def matched_points(
    kps1: Any, kps2: Any, matches: Sequence[cv2.DMatch]
) -> tuple[np.ndarray, np.ndarray]:
    """``(M, 2)`` float32 source and destination points of ``matches``.

    Raises:
        TypeError: ``matches`` is not a sequence of ``cv2.DMatch``.
        ValueError: a match index is out of range.
    """
    p1, p2 = keypoints_to_array(kps1, "kps1"), keypoints_to_array(kps2, "kps2")
    if not isinstance(matches, Sequence) or not all(isinstance(m, cv2.DMatch) for m in matches):
        raise TypeError("matches must be a sequence of cv2.DMatch")
    q = np.array([m.queryIdx for m in matches], dtype=np.int64)
    t = np.array([m.trainIdx for m in matches], dtype=np.int64)
    if len(q) and (q.min() < 0 or q.max() >= len(p1) or t.min() < 0 or t.max() >= len(p2)):
        raise ValueError("matches refer to keypoints outside kps1/kps2 (queryIdx/trainIdx)")
    return p1[q], p2[t]


def estimate_projective(
    kps1: Any,
    kps2: Any,
    matches: Sequence[cv2.DMatch],
    ransac_threshold: float = DEFAULT_RANSAC_THRESHOLD,
    method: str = "ransac",
    confidence: float = 0.999,
    max_iters: int = DEFAULT_MAX_ITERS,
    seed: int = 0,
) -> tuple[np.ndarray | None, np.ndarray]:
    """Robust homography from image-1 keypoints to image-2 keypoints.

    Args:
        kps1: keypoints of image 1 (``cv2.KeyPoint`` sequence or ``(N1, 2)`` array).
        kps2: keypoints of image 2.
        matches: ``cv2.DMatch`` with ``queryIdx`` into kps1 and ``trainIdx`` into kps2.
        ransac_threshold: inlier reprojection threshold in pixels.
        method: ``"ransac"`` (cv2.RANSAC), ``"magsac"`` (cv2.USAC_MAGSAC) or
            ``"lmeds"`` (cv2.LMEDS).
        confidence: RANSAC confidence.
        max_iters: RANSAC iterations.
        seed: seed for ``cv2.setRNGSeed`` (results are deterministic given it).

    Returns:
        ``(H, inliers)``: ``H`` 3x3 float64 normalised so ``H[2, 2] = 1`` (or None when
        fewer than 4 matches or the estimation fails) and ``inliers`` uint8
        ``(len(matches), 1)`` (1 = inlier; all zeros when ``H`` is None).
    """
    src, dst = matched_points(kps1, kps2, matches)
    return robust_homography(src, dst, ransac_threshold, method, confidence, max_iters, seed)


def robust_homography(
    src: np.ndarray,
    dst: np.ndarray,
    threshold: float = DEFAULT_RANSAC_THRESHOLD,
    method: str = "ransac",
    confidence: float = 0.999,
    max_iters: int = DEFAULT_MAX_ITERS,
    seed: int = 0,
) -> tuple[np.ndarray | None, np.ndarray]:
    """:func:`estimate_projective` on ``(M, 2)`` point arrays ``src -> dst``.

    Returns:
        ``(H, inliers)`` as :func:`estimate_projective` does.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    if not (np.isfinite(threshold) and threshold > 0):
        raise ValueError(f"ransac_threshold must be > 0, got {threshold!r}")
    none = np.zeros((len(src), 1), np.uint8)
    if len(src) < 4:
        return None, none
    cv2.setRNGSeed(int(seed))
    H, inliers = cv2.findHomography(
        np.asarray(src, np.float32),
        np.asarray(dst, np.float32),
        METHODS[method],
        ransacReprojThreshold=float(threshold),
        maxIters=int(max_iters),
        confidence=float(confidence),
    )
    if H is None or inliers is None or not np.isfinite(H).all() or abs(H[2, 2]) < 1e-12:
        return None, none
    return (H / H[2, 2]).astype(np.float64), inliers.reshape(-1, 1).astype(np.uint8)


def homography_is_plausible(
    H: np.ndarray | None,
    image_size: tuple[int, int] | None = None,
    max_scale: float = 4.0,
) -> tuple[bool, str]:
    """Sanity bounds of a homography between two fundus photographs (not evidence that it
    is right: that is :mod:`fundusfeat.geometry.verification`'s job).

    Rejected: a non-finite or singular matrix, a reflection, a scale outside
    ``1 / max_scale .. max_scale`` (no camera pair differs that much), and a homography
    that sends part of image 1 to infinity (its denominator changes sign over the image).

    Args:
        H: 3x3 homography (image 1 -> image 2) or None.
        image_size: ``(width, height)`` of image 1; None = 1000 x 1000.
        max_scale: the largest linear scale between the images.

    Returns:
        ``(ok, reason)`` with ``reason = "ok"`` or a short explanation.
    """
    if H is None:
        return False, "no homography"
    H = np.asarray(H, dtype=np.float64)
    if H.shape != (3, 3) or not np.isfinite(H).all():
        return False, "homography is not a finite 3x3 matrix"
    if abs(H[2, 2]) < 1e-12 or abs(np.linalg.det(H)) < 1e-12 * max(1.0, abs(H[2, 2]) ** 3):
        return False, "homography is singular"
    H = H / H[2, 2]
    sv = np.linalg.svd(H[:2, :2], compute_uv=False)
    if sv[1] < 1e-9:
        return False, "homography is near-singular"
    scale = float(np.sqrt(sv[0] * sv[1]))
    if not 1.0 / max_scale <= scale <= max_scale:
        return False, f"extreme scale {scale:.3g}"
    if np.linalg.det(H[:2, :2]) < 0:
        return False, "homography flips the image (reflection)"
    w, h = image_size if image_size is not None else (1000, 1000)
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], dtype=np.float64)
    if (corners @ H[2]).min() <= 0:
        return False, "homography sends part of the image to infinity"
    return True, "ok"
