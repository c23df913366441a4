"""Impostor pairs: pairs that cannot be registered, to measure false successes.

From photographs the weights never saw, :func:`impostor_pairs` builds every kind of
pair a registration must refuse:

- ``different``: two different eyes (every ordered pair of images);
- ``mirrored``: an eye against another eye mirrored left-right;
- ``mirror-self``: an eye against its own mirror image (a reflection is no camera
  motion);
- ``crops``: two disjoint parts of one photograph (its left and right 42 %, or top and
  bottom 42 %, both orders);
- ``rotations``: an eye against its own quarter, half and three-quarter turn. These
  *can* be registered (the true transform is known and comes with control points), so
  only a success with the wrong transform (error above :data:`ROTATION_TOLERANCE` px)
  counts as false.

A false success is a result with ``success=True`` on a pair of the first four kinds, or
a wrong one on a rotation. :func:`run_impostors` registers them and reports each result
with its confidence.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from fundusfeat.evaluation.metrics import pair_error
from fundusfeat.evaluation.runner import Registrar, result_transform
from fundusfeat.io.images import read_image
from fundusfeat.io.progress import Progress

KINDS = ("different", "mirrored", "mirror-self", "crops", "rotations")
CROP_FRACTION = 0.42
"""Each crop keeps this fraction of the photograph (the two never overlap)."""
ROTATION_TOLERANCE = 25.0
"""A registered rotation pair is right when its mean control-point error is at most this."""


@dataclass(frozen=True)
class ImpostorPair:
    """One pair that must not be registered (or, for rotations, only rightly).

    Attributes:
        name: e.g. ``"different:IDRiD_43+IDRiD_45"``.
        kind: one of :data:`KINDS`.
        load: callable returning ``(img1, img2)`` uint8 BGR.
        points_fixed, points_moving: (N, 2) true control points (rotations), else None.
    """

    name: str
    kind: str
    load: Callable[[], tuple[np.ndarray, np.ndarray]]
    points_fixed: np.ndarray | None = None
    points_moving: np.ndarray | None = None


def _mirrored(path: Path) -> np.ndarray:
    return np.ascontiguousarray(read_image(path)[:, ::-1])


def _two_images(a: Callable[[], np.ndarray], b: Callable[[], np.ndarray]) -> tuple:
    return a(), b()


def _crops(path: Path, axis: int, first: int) -> tuple[np.ndarray, np.ndarray]:
    img = read_image(path)
    n = img.shape[axis]
    k = int(round(CROP_FRACTION * n))
    parts = (img[:, :k], img[:, n - k :]) if axis == 1 else (img[:k], img[n - k :])
    return np.ascontiguousarray(parts[first]), np.ascontiguousarray(parts[1 - first])


def _rotated(path: Path, turns: int) -> tuple[np.ndarray, np.ndarray]:
    img = read_image(path)
    return img, np.ascontiguousarray(np.rot90(img, turns))


def rotation_points(width: int, height: int, turns: int, count: int = 10) -> tuple:
    """Control points of ``np.rot90(image, turns)``: ``(fixed, moving)``, (count, 2) each.

    ``np.rot90`` turns counter-clockwise: pixel ``(x, y)`` goes to ``(y, W - 1 - x)``
    for one turn, ``(W - 1 - x, H - 1 - y)`` for two, ``(H - 1 - y, x)`` for three.
    """
    t = np.linspace(0.25, 0.75, count)
    fixed = np.stack([t * (width - 1), (1 - t) * (height - 1) * 0.9 + 0.05 * height], axis=1)
    x, y = fixed[:, 0], fixed[:, 1]
    moving = {
        1: np.stack([y, width - 1 - x], 1),
        2: np.stack([width - 1 - x, height - 1 - y], 1),
        3: np.stack([height - 1 - y, x], 1),
    }[turns % 4]
    return fixed, moving


def impostor_pairs(images: Sequence[Path], kinds: Sequence[str] = KINDS) -> list[ImpostorPair]:
    """All impostor pairs of ``images`` (see the module docstring for the kinds).

    With ``n`` images: ``n (n - 1)`` different, ``n (n - 1)`` mirrored, ``n`` mirror-self,
    ``4 n`` crops and ``3 n`` rotations (216 pairs for 9 images).

    Raises:
        ValueError: fewer than two images, or an unknown kind.
    """
    paths = [Path(p) for p in images]
    if len(paths) < 2:
        raise ValueError("images: impostor pairs need at least two images")
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"kinds: unknown {sorted(unknown)}; known: {KINDS}")
    out: list[ImpostorPair] = []
    stem = {p: p.stem for p in paths}
    for a, b in itertools.permutations(paths, 2):
        if "different" in kinds:
            out.append(
                ImpostorPair(
                    f"different:{stem[a]}+{stem[b]}",
                    "different",
                    partial(_two_images, partial(read_image, a), partial(read_image, b)),
                )
            )
        if "mirrored" in kinds:
            out.append(
                ImpostorPair(
                    f"mirrored:{stem[a]}+{stem[b]}",
                    "mirrored",
                    partial(_two_images, partial(read_image, a), partial(_mirrored, b)),
                )
            )
    for p in paths:
        if "mirror-self" in kinds:
            out.append(
                ImpostorPair(
                    f"mirror-self:{stem[p]}",
                    "mirror-self",
                    partial(_two_images, partial(read_image, p), partial(_mirrored, p)),
                )
            )
        if "crops" in kinds:
            for axis, side in itertools.product((1, 0), (0, 1)):
                label = ("left-right", "top-bottom")[1 - axis] + ("", "-swapped")[side]
                out.append(
                    ImpostorPair(
                        f"crops:{stem[p]}:{label}", "crops", partial(_crops, p, axis, side)
                    )
                )
        if "rotations" in kinds:
            h, w = read_image(p).shape[:2]
            for turns in (1, 2, 3):
                fixed, moving = rotation_points(w, h, turns)
                out.append(
                    ImpostorPair(
                        f"rotations:{stem[p]}:{90 * turns}",
                        "rotations",
                        partial(_rotated, p, turns),
                        fixed,
                        moving,
                    )
                )
    return out


@dataclass(frozen=True)
class ImpostorResult:
    """One method on one impostor pair.

    Attributes:
        method, pair, kind: what ran on what.
        success: the method reported a registration.
        false_success: it did, and wrongly (any success but a right rotation).
        confidence: the method's confidence (``nan`` if it has none).
        reason: the method's reason.
        num_inliers: its inliers.
        error: control-point error for rotations (``inf`` if failed), else ``nan``.
        seconds: registration time.
    """

    method: str
    pair: str
    kind: str
    success: bool
    false_success: bool
    confidence: float
    reason: str
    num_inliers: int
    error: float
    seconds: float


def run_impostors(
    pairs: Sequence[ImpostorPair],
    methods: Mapping[str, Registrar],
    progress: Progress | None = None,
) -> list[ImpostorResult]:
    """Register every impostor pair with every method (pair-major)."""
    total, done, out = len(pairs) * len(methods), 0, []
    for pair in pairs:
        img1, img2 = pair.load()
        for name, registrar in methods.items():
            start = time.perf_counter()
            result = registrar(img1, img2)
            seconds = time.perf_counter() - start
            success = bool(result.success)
            error = math.nan
            if pair.points_fixed is not None:
                error = pair_error(result_transform(result), pair.points_fixed, pair.points_moving)
                false = success and not error <= ROTATION_TOLERANCE
            else:
                false = success
            out.append(
                ImpostorResult(
                    method=name,
                    pair=pair.name,
                    kind=pair.kind,
                    success=success,
                    false_success=false,
                    confidence=float(getattr(result, "confidence", math.nan)),
                    reason=str(result.reason),
                    num_inliers=int(result.num_inliers),
                    error=error,
                    seconds=seconds,
                )
            )
            done += 1
            if progress is not None:
                progress(done, total, f"{pair.name} {name}")
    return out


def confidence_histogram(results: Sequence[ImpostorResult]) -> tuple[list[str], list[list[str]]]:
    """:func:`fundusfeat.evaluation.report.confidence_histogram` of each method's
    confidences on the pairs it must refuse (rightly registered rotations left out)."""
    from fundusfeat.evaluation.report import confidence_histogram as histogram

    methods = list(dict.fromkeys(r.method for r in results))
    return histogram(
        {
            f"{m} impostors": [
                r.confidence
                for r in results
                if r.method == m and (r.false_success or not r.success)
            ]
            for m in methods
        }
    )


def impostor_table(results: Sequence[ImpostorResult]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: per method, false successes per kind and overall, and the
    largest impostor confidence (rotations rightly registered excluded)."""
    methods = list(dict.fromkeys(r.method for r in results))
    header = ["method", *KINDS, "all", "max confidence"]
    rows = []
    for m in methods:
        mine = [r for r in results if r.method == m]
        cells = [m]
        for kind in KINDS:
            k = [r for r in mine if r.kind == kind]
            cells.append(f"{sum(r.false_success for r in k)}/{len(k)}" if k else "-")
        cells.append(f"{sum(r.false_success for r in mine)}/{len(mine)}")
        wrong = [r.confidence for r in mine if r.false_success or not r.success]
        finite = [c for c in wrong if math.isfinite(c)]
        cells.append(f"{max(finite):.3f}" if finite else "-")
        rows.append(cells)
    return header, rows
