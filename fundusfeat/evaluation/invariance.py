"""OpenCV's detector/descriptor invariance protocol on a fundus photograph.

OpenCV's ``features2d`` invariance tests warp one image by a known similarity
(rotation about the centre, or a uniform scale) and measure three things; this module
does the same for any ``cv2.Feature2D``-like detector (``detect``, ``compute``,
``detectAndCompute``), so the learned detector and SIFT-CLAHE are compared alike:

- **repeatability** (detector invariance): the keypoints of the warped image that
  correspond one-to-one to the original's by the overlap criterion. Each keypoint is the
  disc of radius ``size / 2`` around ``pt``; the original's discs are mapped by the warp
  (a similarity maps a disc to a disc: centre by ``H``, radius times the scale) and a pair
  corresponds when the intersection over union of the two discs is at least
  ``min_overlap`` (0.6, an overlap error of at most 0.4 as in Mikolajczyk et al. and
  OpenCV's ``evaluateFeatureDetector``, which OpenCV 5 no longer ships). Pairs are taken
  greedily by overlap, each keypoint at most once. Repeatability is the number of
  correspondences over the smaller of the two counts of keypoints whose centre maps
  inside the other image.
- **match ratio** (descriptor invariance): the original's keypoints are mapped into the
  warped image (``pt`` by ``H``, ``size`` times the scale, ``angle`` minus the rotation),
  described there with ``compute``, and matched to the original's descriptors by nearest
  neighbour (``cv2.BFMatcher``, the detector's ``defaultNorm``); the ratio is the fraction
  of keypoints whose nearest neighbour is their own image.
- **correct matches**: keypoints detected independently on both images, mutual nearest
  neighbours (``crossCheck``), counted when the original's point mapped by ``H`` lies
  within ``max_error`` pixels of its match.

Coordinates: x right, y down, pixel centres at integers (OpenCV). The warped image is
``cv2.warpAffine(image, A, size)`` with ``A`` the 2 x 3 similarity; rotations keep the
image size, scales resize the canvas by the same factor.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

ROTATIONS = (-30.0, -20.0, -10.0, 10.0, 20.0, 30.0)
SCALES = (0.6, 0.8, 1.2, 1.4, 1.6)
MIN_OVERLAP = 0.6
MAX_ERROR = 3.0


@dataclass(frozen=True)
class InvarianceRow:
    """One warp's measurements for one detector.

    Attributes:
        method: the detector's name.
        kind: ``"rotation"`` or ``"scale"``.
        value: the rotation in degrees (counter-clockwise on screen) or the scale factor.
        keypoints: keypoints detected on the original image.
        repeatability: see the module docstring (0..1).
        match_ratio: see the module docstring (0..1).
        correct_matches: see the module docstring.
    """

    method: str
    kind: str
    value: float
    keypoints: int
    repeatability: float
    match_ratio: float
    correct_matches: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def similarity(shape: tuple[int, int], angle: float, scale: float) -> tuple[np.ndarray, tuple]:
    """The warp of an image of ``shape`` (H, W): ``(A (2, 3) float64, (width, height))``.

    Rotation by ``angle`` degrees about the image centre (``cv2.getRotationMatrix2D``)
    combined with a uniform ``scale``; the output canvas is the input's size times
    ``scale``, with the centre mapped to the new centre.
    """
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    h, w = shape[:2]
    out_w, out_h = max(1, round(w * scale)), max(1, round(h * scale))
    A = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), float(angle), float(scale))
    A[0, 2] += (out_w - 1) / 2 - (w - 1) / 2
    A[1, 2] += (out_h - 1) / 2 - (h - 1) / 2
    return A, (out_w, out_h)


def _apply(A: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ A[:, :2].T + A[:, 2]


def _points(kps: Sequence[cv2.KeyPoint]) -> tuple[np.ndarray, np.ndarray]:
    if not kps:
        return np.zeros((0, 2)), np.zeros(0)
    pts = np.array([k.pt for k in kps], np.float64)
    radii = np.array([k.size for k in kps], np.float64) / 2
    return pts, radii


def _inside(pts: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    w, h = size
    return (pts[:, 0] >= 0) & (pts[:, 0] <= w - 1) & (pts[:, 1] >= 0) & (pts[:, 1] <= h - 1)


def disc_overlap(c1: np.ndarray, r1: np.ndarray, c2: np.ndarray, r2: np.ndarray) -> np.ndarray:
    """Intersection over union of discs (centres ``(..., 2)``, radii ``(...)``), broadcast."""
    d = np.linalg.norm(c1 - c2, axis=-1)
    r1, r2 = np.broadcast_arrays(r1, r2)
    r1 = np.maximum(r1, 1e-9)
    r2 = np.maximum(r2, 1e-9)
    small, big = np.minimum(r1, r2), np.maximum(r1, r2)
    inter = np.zeros(np.broadcast(d, r1).shape)
    contained = d <= big - small
    inter = np.where(contained, math.pi * small**2, inter)
    partial = (d < r1 + r2) & ~contained
    with np.errstate(invalid="ignore", divide="ignore"):
        dd = np.where(partial, d, 1.0)
        a1 = np.clip((dd**2 + r1**2 - r2**2) / (2 * dd * r1), -1, 1)
        a2 = np.clip((dd**2 + r2**2 - r1**2) / (2 * dd * r2), -1, 1)
        lens = (
            r1**2 * np.arccos(a1)
            + r2**2 * np.arccos(a2)
            - 0.5
            * np.sqrt(
                np.maximum((-dd + r1 + r2) * (dd + r1 - r2) * (dd - r1 + r2) * (dd + r1 + r2), 0)
            )
        )
    inter = np.where(partial, lens, inter)
    union = math.pi * (r1**2 + r2**2) - inter
    return inter / union


def repeatability(
    kps1: Sequence[cv2.KeyPoint],
    kps2: Sequence[cv2.KeyPoint],
    A: np.ndarray,
    size1: tuple[int, int],
    size2: tuple[int, int],
    min_overlap: float = MIN_OVERLAP,
) -> tuple[float, int]:
    """``(repeatability, correspondences)`` of keypoints ``kps1`` of image 1 (``size1`` =
    (width, height)) and ``kps2`` of image 2, related by the similarity ``A`` (2 x 3,
    image 1 -> image 2), by the disc overlap criterion of the module docstring."""
    p1, r1 = _points(kps1)
    p2, r2 = _points(kps2)
    if len(p1) == 0 or len(p2) == 0:
        return 0.0, 0
    scale = math.sqrt(abs(np.linalg.det(A[:, :2])))
    q1 = _apply(A, p1)
    keep1 = _inside(q1, size2)
    inv = cv2.invertAffineTransform(A)
    keep2 = _inside(_apply(inv, p2), size1)
    q1, s1 = q1[keep1], r1[keep1] * scale
    p2, r2 = p2[keep2], r2[keep2]
    denom = min(len(q1), len(p2))
    if denom == 0:
        return 0.0, 0
    # candidate pairs only where the discs can overlap enough: a coarse radius search
    order = np.argsort(p2[:, 0])
    xs = p2[order, 0]
    pairs_i, pairs_j, pairs_o = [], [], []
    reach = s1 + r2.max()
    lo = np.searchsorted(xs, q1[:, 0] - reach)
    hi = np.searchsorted(xs, q1[:, 0] + reach)
    for i in range(len(q1)):
        js = order[lo[i] : hi[i]]
        if len(js) == 0:
            continue
        ov = disc_overlap(q1[i], s1[i], p2[js], r2[js])
        good = ov >= min_overlap
        pairs_i.append(np.full(int(good.sum()), i))
        pairs_j.append(js[good])
        pairs_o.append(ov[good])
    if not pairs_i:
        return 0.0, 0
    ii, jj, oo = (np.concatenate(v) for v in (pairs_i, pairs_j, pairs_o))
    used1 = np.zeros(len(q1), bool)
    used2 = np.zeros(len(p2), bool)
    count = 0
    for k in np.lexsort((jj, ii, -oo)):  # largest overlap first, ties by index
        if not used1[ii[k]] and not used2[jj[k]]:
            used1[ii[k]] = used2[jj[k]] = True
            count += 1
    return count / denom, count


def warp_keypoints(kps: Sequence[cv2.KeyPoint], A: np.ndarray) -> list[cv2.KeyPoint]:
    """``kps`` mapped by the similarity ``A``: ``pt`` by ``A``, ``size`` times the scale,
    ``angle`` (degrees, OpenCV's) minus the rotation (image y is down)."""
    scale = math.sqrt(abs(np.linalg.det(A[:, :2])))
    rot = math.degrees(math.atan2(-A[1, 0], A[0, 0]))  # cv2's counter-clockwise angle
    pts, _ = _points(kps)
    q = _apply(A, pts) if len(pts) else pts
    out = []
    for k, (x, y) in zip(kps, q, strict=True):
        angle = (k.angle - rot) % 360 if k.angle >= 0 else -1
        out.append(
            cv2.KeyPoint(
                float(x), float(y), k.size * scale, angle, k.response, k.octave, k.class_id
            )
        )
    return out


def _norm(detector: Any) -> int:
    norm = getattr(detector, "defaultNorm", None)
    return int(norm()) if callable(norm) else cv2.NORM_L2


def match_ratio(
    detector: Any,
    image1: np.ndarray,
    image2: np.ndarray,
    A: np.ndarray,
    kps1: Sequence[cv2.KeyPoint],
    desc1: np.ndarray,
) -> float:
    """Fraction of ``kps1`` (with descriptors ``desc1``) whose descriptor computed at the
    warped keypoint in ``image2`` is nearest to their own (see the module docstring)."""
    if not kps1:
        return 0.0
    warped = warp_keypoints(kps1, A)
    index = {id(k): i for i, k in enumerate(warped)}
    kept, desc2 = detector.compute(image2, warped)
    if desc2 is None or len(kept) == 0:
        return 0.0
    own = np.array([index.get(id(k), -1) for k in kept])
    if (own < 0).any():  # a detector that rebuilt its keypoints: map back by position
        wp, _ = _points(warped)
        kp, _ = _points(kept)
        own = np.argmin(((kp[:, None] - wp[None]) ** 2).sum(-1), axis=1)
    matcher = cv2.BFMatcher(_norm(detector))
    matches = matcher.match(np.asarray(desc2), np.asarray(desc1))
    hits = sum(1 for m in matches if m.trainIdx == own[m.queryIdx])
    return hits / len(kps1)


def correct_matches(
    kps1: Sequence[cv2.KeyPoint],
    desc1: np.ndarray,
    kps2: Sequence[cv2.KeyPoint],
    desc2: np.ndarray,
    A: np.ndarray,
    norm: int = cv2.NORM_L2,
    max_error: float = MAX_ERROR,
) -> int:
    """Mutual nearest-neighbour matches of independent detections whose image-1 point,
    mapped by ``A``, lies within ``max_error`` pixels of its match in image 2."""
    if not kps1 or not kps2 or desc1 is None or desc2 is None:
        return 0
    matches = cv2.BFMatcher(norm, crossCheck=True).match(np.asarray(desc1), np.asarray(desc2))
    if not matches:
        return 0
    p1, _ = _points(kps1)
    p2, _ = _points(kps2)
    q = np.array([m.queryIdx for m in matches])
    t = np.array([m.trainIdx for m in matches])
    err = np.linalg.norm(_apply(A, p1[q]) - p2[t], axis=1)
    return int((err <= max_error).sum())


def measure(
    method: str,
    detector: Any,
    image: np.ndarray,
    kind: str,
    value: float,
    base: tuple[Sequence[cv2.KeyPoint], np.ndarray] | None = None,
) -> InvarianceRow:
    """One :class:`InvarianceRow`: ``image`` warped by the rotation or scale ``value``."""
    if kind not in ("rotation", "scale"):
        raise ValueError(f"kind must be 'rotation' or 'scale', got {kind!r}")
    angle, scale = (value, 1.0) if kind == "rotation" else (0.0, value)
    A, size2 = similarity(image.shape[:2], angle, scale)
    warped = cv2.warpAffine(image, A, size2, flags=cv2.INTER_LINEAR)
    kps1, desc1 = base if base is not None else detector.detectAndCompute(image, None)
    kps2, desc2 = detector.detectAndCompute(warped, None)
    size1 = (image.shape[1], image.shape[0])
    rep, _ = repeatability(kps1, kps2, A, size1, size2)
    ratio = match_ratio(detector, image, warped, A, kps1, desc1)
    correct = correct_matches(kps1, desc1, kps2, desc2, A, _norm(detector))
    return InvarianceRow(method, kind, float(value), len(kps1), rep, ratio, correct)


def run(
    detectors: dict[str, Any],
    image: np.ndarray,
    rotations: Iterable[float] = ROTATIONS,
    scales: Iterable[float] = SCALES,
) -> list[InvarianceRow]:
    """Every detector (name -> Feature2D-like) over every rotation and scale of ``image``
    (BGR or gray uint8)."""
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
        raise TypeError("image must be a (H, W) or (H, W, C) numpy array")
    rows: list[InvarianceRow] = []
    rotations, scales = list(rotations), list(scales)
    for name, det in detectors.items():
        base = det.detectAndCompute(image, None)
        rows += [measure(name, det, image, "rotation", a, base) for a in rotations]
        rows += [measure(name, det, image, "scale", s, base) for s in scales]
    return rows


def summary(rows: Sequence[InvarianceRow]) -> dict[str, dict[str, float]]:
    """Per method: mean repeatability, mean match ratio and mean correct matches."""
    out: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(r.method for r in rows):
        mine = [r for r in rows if r.method == name]
        out[name] = {
            "repeatability": float(np.mean([r.repeatability for r in mine])),
            "match_ratio": float(np.mean([r.match_ratio for r in mine])),
            "correct_matches": float(np.mean([r.correct_matches for r in mine])),
        }
    return out


def format_table(rows: Sequence[InvarianceRow]) -> str:
    """A plain-text table of ``rows`` followed by the per-method means."""
    lines = [
        f"{'method':<14}{'warp':<10}{'value':>7}{'kps':>7}{'rep':>7}{'ratio':>7}{'correct':>9}"
    ]
    for r in rows:
        lines.append(
            f"{r.method:<14}{r.kind:<10}{r.value:>7.2f}{r.keypoints:>7d}"
            f"{r.repeatability:>7.3f}{r.match_ratio:>7.3f}{r.correct_matches:>9d}"
        )
    for name, s in summary(rows).items():
        lines.append(
            f"{name:<14}{'mean':<10}{'':>7}{'':>7}{s['repeatability']:>7.3f}"
            f"{s['match_ratio']:>7.3f}{s['correct_matches']:>9.1f}"
        )
    return "\n".join(lines)
