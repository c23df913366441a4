"""Guided re-matching around a transform, and ``refine``: rounds of guided matching and
model fitting that grow the inlier set from a first homography.

Coordinates: pixel ``(x, y)``, the origin at the centre of the top-left pixel; every
transform maps image-1 points onto image 2.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from fundusfeat.geometry.fitting import ModelChoice, choose_model, fit
from fundusfeat.geometry.neighbours import nearest_within
from fundusfeat.geometry.transforms import MODELS, Transform

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
        sqnorm: ``(N,)`` squared descriptor norms (float descriptors; None for binary).
    """

    xy: np.ndarray
    desc: np.ndarray
    sqnorm: np.ndarray | None

    @classmethod
    def of(cls, xy: np.ndarray, desc: np.ndarray) -> KeypointSet:
        binary = desc.dtype == np.uint8
        d = desc if binary else desc.astype(np.float32, copy=False)
        sqnorm = None if binary else np.einsum("nd,nd->n", d, d)
        return cls(np.asarray(xy, np.float64).reshape(-1, 2), d, sqnorm)

    def take(self, rows: np.ndarray) -> KeypointSet:
        """The keypoints ``rows`` (indices into this set), in that order."""
        sqnorm = None if self.sqnorm is None else self.sqnorm[rows]
        return KeypointSet(self.xy[rows], self.desc[rows], sqnorm)

    def nearest_in_window(
        self, points: np.ndarray, other: KeypointSet, radius: float, max_distance: float
    ) -> np.ndarray:
        """For each of ``other``'s keypoints, placed at ``points`` in this image, the index
        of this set's keypoint within ``radius`` px whose descriptor is nearest, if that
        descriptor distance is at most ``max_distance`` (-1 where there is none).
        Vectorised: one grid query (:func:`~fundusfeat.geometry.neighbours.nearest_within`)
        and one batched dot product for all points."""
        out = np.full(len(points), -1, dtype=np.int64)
        ok = np.isfinite(points).all(axis=1)
        if not ok.any() or len(self.xy) == 0:
            return out
        k = min(GUIDED_CANDIDATES, len(self.xy))
        _, idx = nearest_within(self.xy, points[ok], k, radius)
        present = idx < len(self.xy)
        # descriptor distances of the present candidates only (most of the k slots are
        # empty: about 2 keypoints lie within the radius), gathered as flat pairs
        row, slot = np.nonzero(present)
        cand = idx[row, slot]
        mine = np.flatnonzero(ok)[row]
        dist = np.full(idx.shape, np.inf, np.float32)
        if self.sqnorm is None:
            dist[row, slot] = descriptor_distances(other.desc[mine], self.desc[cand], True)
        else:
            dot = np.einsum("nd,nd->n", other.desc[mine], self.desc[cand])
            dist[row, slot] = np.maximum(other.sqnorm[mine] + self.sqnorm[cand] - 2.0 * dot, 0.0)
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
    (``transform.inverse``) for the image-2 keypoints that are some image-1 keypoint's
    candidate (no other can be in a mutual pair); a pair is kept when each is the
    other's candidate. (Without a distance limit any transform would gather "matches"
    near its own predictions: the limit, set from the descriptor distances of the
    unguided inliers, keeps only pairs that look like true matches.)

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
    wanted = np.unique(to2[to2 >= 0])
    to1 = np.full(len(keypoints2.xy), -1, dtype=np.int64)
    to1[wanted] = keypoints1.nearest_in_window(
        transform.inverse(keypoints2.xy[wanted]), keypoints2.take(wanted), radius, max_distance
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
    :func:`fundusfeat.geometry.fitting.choose_model` compares the homography and the quadratic
    model by held-out residual on the inliers, and a chosen quadratic gets its own
    rounds (it reaches matches the homography's error kept out of the radius).

    Args:
        xy1, xy2: all keypoint positions of each image.
        desc1, desc2: their descriptors.
        initial: the first estimate (e.g. the robust homography of the initial matches).
        threshold: inlier threshold (px in image 2).
        model: ``"auto"`` or one of :data:`fundusfeat.geometry.transforms.MODELS`.
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
