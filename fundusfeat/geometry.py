"""Geometry between matched keypoints: the robust homography, guided re-matching around
a transform, and sanity bounds of a homography.

``H`` always maps image-1 points onto image 2: ``[x2, y2, 1]^T ~ H [x1, y1, 1]^T``
(``cv2.findHomography(src=kps1[queryIdx], dst=kps2[trainIdx])``), in pixel coordinates
with the origin at the centre of the top-left pixel.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from scipy.spatial import cKDTree

from fundusfeat.transforms import MODELS, ModelChoice, Transform, choose_model, fit

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
    is right: that is :mod:`fundusfeat.verification`'s job).

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


GUIDED_CANDIDATES = 6
"""Keypoints of the other image considered per keypoint by :func:`guided_match`."""


def descriptor_distances(a: np.ndarray, b: np.ndarray, binary: bool) -> np.ndarray:
    """Row-wise distances of ``(..., D)`` descriptor arrays broadcast together.

    Float descriptors: squared Euclidean distance. Binary (uint8, packed) descriptors:
    the Hamming distance.
    """
    if binary:
        return np.unpackbits(np.bitwise_xor(a, b), axis=-1).sum(axis=-1).astype(np.float32)
    a, b = a.astype(np.float32, copy=False), b.astype(np.float32, copy=False)
    aa = np.einsum("...d,...d->...", a, a)
    bb = np.einsum("...d,...d->...", b, b)
    return np.maximum(aa + bb - 2.0 * np.einsum("...d,...d->...", a, b), 0.0)


@dataclass(frozen=True, eq=False)
class KeypointSet:
    """One image's keypoints indexed for guided matching (built once per registration).

    Attributes:
        xy: ``(N, 2)`` float64 positions.
        desc: ``(N, D)`` descriptors (float rows, or packed uint8 for binary ones).
        tree: ``scipy.spatial.cKDTree`` of ``xy``.
        sqnorm: ``(N,)`` squared descriptor norms (float descriptors; None for binary).
    """

    xy: np.ndarray
    desc: np.ndarray
    tree: cKDTree
    sqnorm: np.ndarray | None

    @classmethod
    def of(cls, xy: np.ndarray, desc: np.ndarray) -> KeypointSet:
        binary = desc.dtype == np.uint8
        d = desc if binary else desc.astype(np.float32, copy=False)
        sqnorm = None if binary else np.einsum("nd,nd->n", d, d)
        return cls(np.asarray(xy, np.float64), d, cKDTree(np.asarray(xy, np.float64)), sqnorm)

    def nearest_in_window(
        self, points: np.ndarray, other: KeypointSet, radius: float, max_distance: float
    ) -> np.ndarray:
        """For each of ``other``'s keypoints, placed at ``points`` in this image, the index
        of this set's keypoint within ``radius`` px whose descriptor is nearest, if that
        descriptor distance is at most ``max_distance`` (-1 where there is none).
        Vectorised: one KD-tree query and one batched dot product for all points."""
        out = np.full(len(points), -1, dtype=np.int64)
        ok = np.isfinite(points).all(axis=1)
        if not ok.any() or len(self.xy) == 0:
            return out
        k = min(GUIDED_CANDIDATES, len(self.xy))
        _, idx = self.tree.query(points[ok], k=k, distance_upper_bound=radius)
        idx = idx.reshape(-1, k)
        present = idx < len(self.xy)
        safe = np.where(present, idx, 0)
        if self.sqnorm is None:
            dist = descriptor_distances(other.desc[ok][:, None, :], self.desc[safe], True)
        else:
            dot = np.einsum("nd,nkd->nk", other.desc[ok], self.desc[safe])
            dist = np.maximum(other.sqnorm[ok][:, None] + self.sqnorm[safe] - 2.0 * dot, 0.0)
        dist[~present] = np.inf
        rows = np.arange(len(idx))
        best = dist.argmin(axis=1)
        accept = present.any(axis=1) & (dist[rows, best] <= max_distance)
        out[np.flatnonzero(ok)] = np.where(accept, idx[rows, best], -1)
        return out


def guided_match(
    keypoints1: KeypointSet,
    keypoints2: KeypointSet,
    transform: Transform,
    radius: float,
    max_distance: float = np.inf,
) -> tuple[np.ndarray, np.ndarray]:
    """Mutual best descriptor matches among keypoints that ``transform`` brings together.

    Each image-1 keypoint is mapped into image 2 with ``transform.apply``; among the
    image-2 keypoints within ``radius`` px of it (at most :data:`GUIDED_CANDIDATES`, the
    nearest) the one with the nearest descriptor is its candidate, if that descriptor is
    closer than ``max_distance``. The same is done the other way
    (``transform.inverse``); a pair is kept when each is the other's candidate. (Without
    a distance limit any transform would gather "matches" near its own predictions: the
    limit, set from the descriptor distances of the unguided inliers, keeps only pairs
    that look like true matches.)

    Args:
        keypoints1, keypoints2: the two images' :class:`KeypointSet`.
        transform: image 1 -> image 2.
        radius: search radius in pixels.
        max_distance: largest accepted descriptor distance (squared Euclidean for float
            descriptors, Hamming for binary ones; see :func:`descriptor_distances`).

    Returns:
        ``(query, train)`` int64 index arrays of the mutual matches, by query index.
    """
    to2 = keypoints2.nearest_in_window(
        transform.apply(keypoints1.xy), keypoints1, radius, max_distance
    )
    to1 = keypoints1.nearest_in_window(
        transform.inverse(keypoints2.xy), keypoints2, radius, max_distance
    )
    query = np.flatnonzero(to2 >= 0)
    query = query[to1[to2[query]] == query]
    return query, to2[query]


@dataclass(frozen=True)
class Refined:
    """The outcome of :func:`refine`.

    Attributes:
        transform: the final transform (image 1 -> image 2).
        query, train: indices of the final matches into the two keypoint sets.
        inliers: ``(M,)`` bool, the matches within the threshold of ``transform``.
        choice: the model choice (None when the model was fixed).
        iterations: guided re-matching rounds run.
    """

    transform: Transform
    query: np.ndarray
    train: np.ndarray
    inliers: np.ndarray
    choice: ModelChoice | None
    iterations: int

    @property
    def num_inliers(self) -> int:
        return int(self.inliers.sum())


INITIAL_RADIUS = 3.0
"""First guided search radius, in inlier thresholds."""
MAX_ROUNDS = 3
"""Most guided re-matching rounds per model."""
MIN_GROWTH = 1.01
"""Another round only while the inlier set grows by more than this factor."""


def _guided_rounds(
    kp1: KeypointSet,
    kp2: KeypointSet,
    transform: Transform,
    model: str,
    threshold: float,
    radius: float,
    max_distance: float,
    best: Refined | None,
) -> Refined | None:
    """Re-match around ``transform`` and refit ``model`` while the inlier set grows."""
    xy1, xy2 = kp1.xy, kp2.xy
    for rounds in range(1, MAX_ROUNDS + 1):
        query, train = guided_match(kp1, kp2, transform, radius, max_distance)
        fitted = fit(model, xy1[query], xy2[train], threshold)
        if fitted is None:
            break
        residual = fitted.residuals(xy1[query], xy2[train])
        inliers = residual < threshold
        if best is not None and inliers.sum() <= best.num_inliers:
            break
        grew = best is None or inliers.sum() > MIN_GROWTH * best.num_inliers
        best = Refined(fitted, query, train, inliers, None, rounds)
        if not grew:
            break
        transform = fitted
        spread = float(np.percentile(residual[inliers], 90)) if inliers.any() else threshold
        radius = max(threshold, min(0.7 * radius, 3.0 * spread))
    return best


def refine(
    xy1: np.ndarray,
    desc1: np.ndarray,
    xy2: np.ndarray,
    desc2: np.ndarray,
    initial: Transform,
    threshold: float,
    model: str = "auto",
    max_distance: float = np.inf,
) -> Refined | None:
    """Guided re-matching around an initial transform, then the choice of the model.

    Rounds of :func:`guided_match` (search radius ``INITIAL_RADIUS`` thresholds at first,
    then shrinking to three times the 90th-percentile inlier residual, never below the
    threshold), each followed by a robust refit, continue while the inlier set grows.
    With ``model="auto"`` this is done with a homography, then
    :func:`fundusfeat.transforms.choose_model` compares the homography and the quadratic
    model by held-out residual on the inliers, and a chosen quadratic gets its own
    rounds (it reaches matches the homography's error kept out of the radius).

    Args:
        xy1, xy2: all keypoint positions of each image.
        desc1, desc2: their descriptors.
        initial: the first estimate (e.g. the robust homography of the initial matches).
        threshold: inlier threshold (px in image 2).
        model: ``"auto"`` or one of :data:`fundusfeat.transforms.MODELS`.
        max_distance: the guided matches' descriptor distance limit
            (:func:`guided_match`).

    Returns:
        The :class:`Refined` registration, or None when no transform could be fitted.
    """
    if model != "auto" and model not in MODELS:
        raise ValueError(f"model must be 'auto' or one of {MODELS}, got {model!r}")
    first = "homography" if model == "auto" else model
    radius = INITIAL_RADIUS * threshold
    kp1, kp2 = KeypointSet.of(xy1, desc1), KeypointSet.of(xy2, desc2)
    best = _guided_rounds(kp1, kp2, initial, first, threshold, radius, max_distance, None)
    if best is None or model != "auto":
        return best
    q, t = best.query[best.inliers], best.train[best.inliers]
    choice = choose_model(xy1[q], xy2[t])
    if choice.model != first:
        start = fit(choice.model, xy1[q], xy2[t], threshold)
        if start is not None:
            richer = _guided_rounds(
                kp1,
                kp2,
                start,
                choice.model,
                threshold,
                2.0 * threshold,
                max_distance,
                None,
            )
            if richer is not None and richer.num_inliers >= best.num_inliers:
                best = richer
            else:
                choice = ModelChoice(first, choice.held_out)
    return dataclasses.replace(best, choice=choice)
