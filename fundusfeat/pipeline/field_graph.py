"""The field graph of a montage: verified pairwise registrations between fields.

Each field is detected once (:func:`fundusfeat.pipeline.register.image_features`); every
candidate pair is registered from those features with :func:`register_features` (the
calibrated confidence decides an edge); the reference is the best-connected field; a
maximum-confidence spanning tree gives each field of the reference's component a start
homography (field px -> reference px). Identical images are flagged as duplicates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import breadth_first_order, minimum_spanning_tree

from fundusfeat.geometry.joint_fit import Edge
from fundusfeat.io.progress import Progress
from fundusfeat.pipeline.register import (
    ImageFeatures,
    Options,
    RegistrationResult,
    matched_indices,
    register_features,
)

ALL_PAIRS_UP_TO = 12
"""Up to this many fields every pair is verified; beyond, a cheap pre-filter picks pairs."""

PREFILTER_PARTNERS = 6
"""Beyond :data:`ALL_PAIRS_UP_TO` fields, each field's pairs with the most mutual matches of
its strongest keypoints are verified (this many per field)."""

MAX_EDGE_POINTS = 400
"""Most inlier correspondences per edge kept for the joint fit (evenly subsampled)."""


def candidate_pairs(features: Sequence[ImageFeatures], matcher) -> list[tuple[int, int]]:
    """All pairs ``i < j`` up to :data:`ALL_PAIRS_UP_TO` fields; beyond, each field's
    :data:`PREFILTER_PARTNERS` partners with the most mutual matches of 500 keypoints."""
    n = len(features)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    if n <= ALL_PAIRS_UP_TO:
        return pairs
    counts = np.zeros((n, n))
    for i, j in pairs:
        d1, d2 = features[i].desc[:500], features[j].desc[:500]
        if len(d1) and len(d2):
            counts[i, j] = counts[j, i] = len(matched_indices(matcher, d1, d2)[0])
    keep = set()
    for i in range(n):
        for j in np.argsort(-counts[i])[:PREFILTER_PARTNERS]:
            if j != i:
                keep.add((min(i, int(j)), max(i, int(j))))
    return sorted(keep)


def _inlier_points(
    f1: ImageFeatures, f2: ImageFeatures, result: RegistrationResult
) -> tuple[np.ndarray, np.ndarray]:
    sel = [m for m, ok in zip(result.matches, result.inliers.ravel(), strict=True) if ok]
    p1 = f1.xy[[m.queryIdx for m in sel]].reshape(-1, 2)
    p2 = f2.xy[[m.trainIdx for m in sel]].reshape(-1, 2)
    if len(p1) > MAX_EDGE_POINTS:
        idx = np.linspace(0, len(p1) - 1, MAX_EDGE_POINTS).astype(int)
        p1, p2 = p1[idx], p2[idx]
    return p1, p2


def verify_pairs(
    features: Sequence[ImageFeatures],
    pairs: Sequence[tuple[int, int]],
    matcher,
    options: Options,
    progress: Progress | None = None,
) -> tuple[list[Edge], dict[tuple[int, int], RegistrationResult]]:
    """Register each pair from precomputed features.

    Returns:
        ``(edges, results)``: the successful registrations as :class:`Edge` and every
        pair's :class:`RegistrationResult` (for the reasons of failures).
    """
    edges, results = [], {}
    for n, (i, j) in enumerate(pairs):
        res = register_features(features[i], features[j], matcher, options)
        results[(i, j)] = res
        if res.success:
            p_i, p_j = _inlier_points(features[i], features[j], res)
            edges.append(Edge(i, j, p_i, p_j, res.transform, res.confidence, res.num_inliers))
        if progress is not None:
            progress(n + 1, len(pairs), f"pair {i}-{j}: {'ok' if res.success else 'no'}")
    return edges, results


def duplicates(images: Sequence[np.ndarray]) -> dict[int, int]:
    """``{k: first}`` for each image identical to an earlier one (same shape and pixels)."""
    out: dict[int, int] = {}
    for k, img in enumerate(images):
        for m in range(k):
            if m not in out and img.shape == images[m].shape and np.array_equal(img, images[m]):
                out[k] = m
                break
    return out


def choose_reference(n: int, edges: Sequence[Edge]) -> int:
    """The field with the most verified edges (ties: the highest summed confidence, then
    the lowest index)."""
    degree, weight = np.zeros(n), np.zeros(n)
    for e in edges:
        for k in (e.i, e.j):
            degree[k] += 1
            weight[k] += e.confidence
    return int(min(range(n), key=lambda k: (-degree[k], -weight[k], k)))


def spanning_tree(
    n: int, edges: Sequence[Edge], reference: int
) -> tuple[dict[int, np.ndarray], dict[int, int]]:
    """Start homographies along a maximum-confidence spanning tree.

    Args:
        n: number of fields.
        edges: the verified edges.
        reference: the root field.

    Returns:
        ``(homographies, parents)``: ``{field: (3, 3)}`` field px -> reference px for the
        fields connected to ``reference`` (pairwise transforms' homographies composed along
        the tree), and ``{field: its parent in the tree}``.
    """
    if not edges:
        return {reference: np.eye(3)}, {}
    rows = [e.i for e in edges]
    cols = [e.j for e in edges]
    weights = [2.0 - e.confidence for e in edges]  # > 0: minimum weight = maximum confidence
    tree = minimum_spanning_tree(csr_matrix((weights, (rows, cols)), shape=(n, n)))
    order, parents = breadth_first_order(tree + tree.T, reference, directed=False)
    by_pair = {(e.i, e.j): e for e in edges}
    hs = {reference: np.eye(3)}
    up: dict[int, int] = {}
    for k in (int(v) for v in order[1:]):
        p = int(parents[k])
        if (k, p) in by_pair:  # edge k -> p
            h_kp = by_pair[(k, p)].transform.homography()
        else:  # edge p -> k
            h_kp = np.linalg.inv(by_pair[(p, k)].transform.homography())
        hs[k] = hs[p] @ h_kp
        up[k] = p
    return hs, up
