"""Is a registration right? Evidence from the matches, the transform and the images,
combined into a calibrated confidence in [0, 1].

A registration is accepted when its confidence reaches the caller's threshold
(:data:`DEFAULT_THRESHOLD`). The confidence is a logistic regression over the evidence
of :class:`Evidence` (:data:`CALIBRATION`), fitted on true and impossible synthetic
pairs made from *training* images only (:mod:`fundusfeat.evaluation.calibration`
regenerates it; docs/benchmarks.md reports it on held-out images). The shape of the
transform is only a sanity bound (:func:`fundusfeat.geometry.estimation.homography_is_plausible`:
non-invertible, reflection, scale far outside any camera).

Evidence (all computed in image 1's pixels unless stated). The match statistics come
from the *unguided* matching (mutual nearest neighbours over whole images) and its
robust homography: guided re-matching finds matches near any transform's predictions,
right or wrong, so its counts are no evidence.

- ``inliers``: unguided matches the robust homography explains.
- ``inlier_ratio``: inliers / unguided matches.
- ``density``: inliers / keypoints of the sparser image inside the estimated overlap
  (true pairs match a large share of what both images see; an impostor's few chance
  inliers are a tiny share).
- ``coverage``: share of the overlap's grid cells (about 64 cells) holding an inlier.
- ``overlap``: share of image 1's field of view that the transform puts inside image 2's.
- ``consistency``: a transform fitted on half of the inliers predicts the other half:
  the median held-out residual over the inlier threshold (small = consistent), for the
  final transform's model.
- ``ncc``: normalised cross-correlation of the vessel-enhanced green channels (CLAHE,
  high-pass) of image 1 and image 2 warped into it, over the overlap, at a long side of
  :data:`PHOTOMETRIC_SIDE` px: vessels that line up.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from fundusfeat.geometry.fitting import fit
from fundusfeat.geometry.transforms import Transform
from fundusfeat.geometry.warp import overlap
from fundusfeat.io.arrays import points_in_mask, resize_long_side, to_uint8

DEFAULT_THRESHOLD = 0.5
"""Confidence at and above which :func:`fundusfeat.register` reports success."""

PHOTOMETRIC_SIDE = 384
"""Long side (px) at which the vessel correlation is computed."""

_GRID_CELLS = 64
_UNCHECKED = 100.0  # the consistency of too few inliers to split (the worst value)
_MIN_SPLIT = 16
_MIN_OVERLAP_PIXELS = 50


@dataclass(frozen=True)
class Evidence:
    """What a registration rests on (see the module docstring)."""

    inliers: int
    matches: int
    inlier_ratio: float
    density: float
    coverage: float
    overlap: float
    consistency: float
    ncc: float

    def features(self) -> np.ndarray:
        """The logistic regression's inputs, in :data:`FEATURES` order."""
        return np.array(
            [
                math.log1p(self.inliers),
                self.inlier_ratio,
                math.log(max(self.density, 1e-4)),
                self.coverage,
                self.overlap,
                math.log(min(max(self.consistency, 1e-3), 100.0)),
                self.ncc,
            ]
        )

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


FEATURES = (
    "log(1 + inliers)",
    "inlier ratio",
    "log density",
    "coverage",
    "overlap",
    "log consistency",
    "vessel ncc",
)
"""Names of :meth:`Evidence.features`, for reasons and the docs."""


@dataclass(frozen=True)
class Calibration:
    """A logistic model ``confidence = 1 / (1 + exp(-(w . z + b)))`` on standardised
    features ``z = (features - mean) / scale``.

    Attributes:
        weights: one weight per feature (:data:`FEATURES`).
        bias: the intercept.
        mean, scale: the standardisation (from the calibration pairs).
        source: how it was made (command, pairs, date).
    """

    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    source: str

    def contributions(self, features: np.ndarray) -> np.ndarray:
        """Each feature's share of the logit (0 = the calibration pairs' average)."""
        z = (np.asarray(features) - np.asarray(self.mean)) / np.asarray(self.scale)
        return np.asarray(self.weights) * z

    def logit(self, features: np.ndarray) -> float:
        """The logit of :meth:`Evidence.features` (or any feature vector in that order)."""
        return float(self.contributions(features).sum() + self.bias)


CALIBRATION = Calibration(
    weights=(0.6843, 0.5687, 0.7082, 0.5649, -0.1258, -0.606, 0.6844),
    bias=3.2207,
    mean=(5.9844, 0.6467, -2.0811, 0.6081, 0.7179, -0.2198, 0.6879),
    scale=(1.7697, 0.3307, 1.6519, 0.2877, 0.1673, 2.1441, 0.3324),
    source="python -m fundusfeat.evaluation.calibration (116 training-image pairs: 96 right, "
    "20 wrong; 2026-12-01; fast weights, step 5000)",
)
"""The shipped calibration (see :mod:`fundusfeat.evaluation.calibration`)."""


def confidence(evidence: Evidence, calibration: Calibration = CALIBRATION) -> float:
    """The calibrated probability that the registration is right, in [0, 1]."""
    logit = calibration.logit(evidence.features())
    return 1.0 / (1.0 + math.exp(-max(min(logit, 50.0), -50.0)))


def weakest_evidence(evidence: Evidence, calibration: Calibration = CALIBRATION) -> str:
    """A short description of the evidence that speaks most against the registration."""
    worst = int(np.argmin(calibration.contributions(evidence.features())))
    if worst == FEATURES.index("log consistency") and evidence.consistency >= _UNCHECKED:
        return f"too few inliers ({evidence.inliers}) to check that they agree"
    values = (
        f"{evidence.inliers} inliers",
        f"inlier ratio {evidence.inlier_ratio:.2f}",
        f"inlier density {evidence.density:.3f} of the keypoints in the overlap",
        f"inliers cover {evidence.coverage:.0%} of the overlap",
        f"overlap {evidence.overlap:.0%} of the field of view",
        f"half the inliers predict the other half to {evidence.consistency:.2f} thresholds",
        f"vessel correlation {evidence.ncc:.2f}",
    )
    return values[worst]


def vessel_image(image: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """The vessel-enhanced green channel at :data:`PHOTOMETRIC_SIDE` px.

    Args:
        image: ``(H, W)`` gray or ``(H, W, C)`` BGR(A) image, uint8 or float in [0, 1].

    Returns:
        ``(float32 (h, w) high-passed CLAHE green, resize factors (sx, sy))``.
    """
    if image.ndim == 3:  # the green channel alone is resized: 3x less work, the same values
        image = cv2.extractChannel(image, 1) if image.shape[2] > 1 else image[..., 0]
    small, factors = resize_long_side(to_uint8(image), PHOTOMETRIC_SIDE)
    green = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(np.ascontiguousarray(small))
    g = green.astype(np.float32)
    return g - cv2.GaussianBlur(g, (0, 0), 4.0), factors


def vessel_correlation(
    vessels1: tuple[np.ndarray, tuple[float, float]],
    vessels2: tuple[np.ndarray, tuple[float, float]],
    region1: np.ndarray,
    region2: np.ndarray,
    transform: Transform,
) -> float:
    """NCC of image 1's vessels and image 2's warped into image 1, over the overlap.

    Args:
        vessels1, vessels2: :func:`vessel_image` of each image.
        region1, region2: ``(H, W)`` bool fields of view at the input scale.
        transform: image 1 -> image 2 in input pixels.
    """
    (v1, f1), (v2, f2) = vessels1, vessels2
    small = transform.in_original_pixels((1 / f1[0], 1 / f1[1]), (1 / f2[0], 1 / f2[1]))
    h, w = v1.shape
    r1 = cv2.resize(region1.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    r2 = cv2.resize(region2.astype(np.uint8), v2.shape[::-1], interpolation=cv2.INTER_NEAREST)
    warped = small.warp(v2, (w, h))
    both = overlap(small, r1, r2).astype(np.uint8)
    both = cv2.erode(both, np.ones((5, 5), np.uint8)) > 0
    if both.sum() < _MIN_OVERLAP_PIXELS:
        return 0.0
    a, b = v1[both], warped[both]
    a, b = a - a.mean(), b - b.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def _overlap_geometry(
    transform: Transform, region1: np.ndarray, region2: np.ndarray, step: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """Grid points of image 1's region (step ``step`` px), which of them land inside
    image 2's region, and that share."""
    h, w = region1.shape
    ys, xs = np.mgrid[step // 2 : h : step, step // 2 : w : step]
    grid = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    grid = grid[region1[grid[:, 1].astype(int), grid[:, 0].astype(int)]]
    if len(grid) == 0:
        return grid, np.zeros(0, bool), 0.0
    ok = points_in_mask(region2, transform.apply(grid))
    return grid, ok, float(ok.mean())


def _cell_ids(points: np.ndarray, cell: float) -> np.ndarray:
    """Distinct integer ids of the ``cell``-px grid cells holding ``points``."""
    ij = np.floor(points / cell).astype(np.int64)
    return np.unique(ij[:, 0] * 1_000_003 + ij[:, 1])


def _consistency(model: str, p1: np.ndarray, p2: np.ndarray, threshold: float, seed: int) -> float:
    """Median residual of one half of the inliers under the other half's fit, in
    thresholds (both halves in turn; 100 when a half cannot determine the model)."""
    order = np.random.default_rng(seed).permutation(len(p1))
    halves = (order[0::2], order[1::2])
    errors = []
    for train, test in (halves, halves[::-1]):
        t = fit(model, p1[train], p2[train])
        if t is None:
            return _UNCHECKED
        errors.append(t.residuals(p1[test], p2[test]))
    return float(np.median(np.concatenate(errors))) / threshold


def gather_evidence(
    transform: Transform,
    xy1: np.ndarray,
    xy2: np.ndarray,
    inlier_pairs: tuple[np.ndarray, np.ndarray],
    num_matches: int,
    regions: tuple[np.ndarray, np.ndarray],
    vessels: tuple[tuple[np.ndarray, tuple[float, float]], tuple[np.ndarray, tuple[float, float]]],
    threshold: float,
    seed: int = 0,
) -> Evidence:
    """The :class:`Evidence` of a registration.

    Args:
        transform: the final transform, image 1 -> image 2.
        xy1, xy2: ``(N1, 2)``, ``(N2, 2)`` all keypoints of each image.
        inlier_pairs: ``(query, train)`` indices of the unguided inlier matches.
        num_matches: unguided matches the inliers were chosen from.
        regions: ``(H1, W1)``, ``(H2, W2)`` bool keypoint regions (field of view).
        vessels: :func:`vessel_image` of each image.
        threshold: the inlier threshold (px).
        seed: seed of the consistency split.
    """
    q, t = inlier_pairs
    region1, region2 = regions
    n = len(q)
    step = max(4, int(math.sqrt(region1.sum() / 4096)))
    grid, seen, overlap = _overlap_geometry(transform, region1, region2, step)
    kp1 = int((points_in_mask(region1, xy1) & points_in_mask(region2, transform.apply(xy1))).sum())
    kp2 = int(
        (points_in_mask(region2, xy2) & points_in_mask(region1, transform.inverse(xy2))).sum()
    )
    density = n / max(min(kp1, kp2), 1)
    coverage = 0.0
    if seen.any() and n:
        cell = max(step, math.sqrt(seen.sum() * step * step / _GRID_CELLS))
        cells = _cell_ids(grid[seen], cell)
        coverage = float(np.isin(cells, _cell_ids(xy1[q], cell)).mean())
    consistency = _UNCHECKED
    if n >= _MIN_SPLIT:
        consistency = _consistency(transform.model, xy1[q], xy2[t], threshold, seed)
    ncc = vessel_correlation(vessels[0], vessels[1], region1, region2, transform)
    return Evidence(
        inliers=n,
        matches=num_matches,
        inlier_ratio=n / max(num_matches, 1),
        density=min(density, 1.0),
        coverage=coverage,
        overlap=overlap,
        consistency=consistency,
        ncc=ncc,
    )
