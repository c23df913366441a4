"""Run registration methods over evaluation pairs and measure each pair's error.

Every method sees the same images: each pair is loaded once and registered by all
methods in turn. With a working size, both images are resized (``cv2.INTER_AREA``) so
their long side is ``size`` and the estimated transform is mapped back to the original
pixels exactly (:meth:`fundusfeat.geometry.transforms.Transform.in_original_pixels`, cv2.resize's
pixel-centre convention ``x_work = (x + 0.5) * s - 0.5``). Errors are therefore always in
original pixels, through the transform's inverse (FIRE's convention).

A method's result needs ``success``, ``reason``, ``matches`` and ``num_inliers``, and
either ``transform`` (a :class:`~fundusfeat.geometry.transforms.Transform`, as
``fundusfeat.register`` returns) or ``H`` (a homography).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from fundusfeat.evaluation.metrics import pair_error
from fundusfeat.evaluation.pairs import EvalPair
from fundusfeat.geometry.transforms import Transform, homography_transform
from fundusfeat.io.arrays import resize_long_side
from fundusfeat.io.progress import Progress

logger = logging.getLogger(__name__)


class RegistrationLike(Protocol):
    """What the runner reads from a registration (``fundusfeat.RegistrationResult``)."""

    H: np.ndarray | None
    success: bool
    reason: str
    matches: Sequence[Any]
    num_inliers: int


Registrar = Callable[[np.ndarray, np.ndarray], RegistrationLike]
"""A method: ``(img1, img2) -> result`` whose ``H`` maps img1 pixels onto img2."""


@dataclass(frozen=True)
class PairResult:
    """One method on one pair.

    Attributes:
        method: method name.
        pair: pair name.
        category: pair category (``"S"``, ``"P"``, ``"A"`` ...).
        error: mean control-point error in original fixed-image pixels (``inf`` = failed).
        success: whether the method returned a transform.
        reason: the method's reason (``"ok"`` on success for ``fundusfeat.register``).
        num_matches: number of tentative matches.
        num_inliers: number of inliers.
        model: the transform model (``"homography"``, ``"quadratic"``, ...; "" failed).
        confidence: the method's confidence (``nan`` when it reports none).
        seconds: wall-clock seconds of the registration (detection of both images,
            matching, estimation), excluding image loading and resizing.
    """

    method: str
    pair: str
    category: str
    error: float
    success: bool
    reason: str
    num_matches: int
    num_inliers: int
    seconds: float
    model: str = ""
    confidence: float = math.nan


def _resize_long_side(
    image: np.ndarray, size: int | None
) -> tuple[np.ndarray, tuple[float, float]]:
    """Resize to long side ``size``; returns the image and its resize factors."""
    if size is None:
        return image, (1.0, 1.0)
    return resize_long_side(image, size)


def result_transform(result: Any) -> Transform | None:
    """The transform of a successful result (its ``transform``, else its ``H``)."""
    if not result.success:
        return None
    transform = getattr(result, "transform", None)
    if transform is not None:
        return transform
    return None if result.H is None else homography_transform(result.H)


def register_pair(
    registrar: Registrar,
    images: tuple[np.ndarray, np.ndarray],
    pair: EvalPair,
    method: str,
    size: int | None = None,
) -> PairResult:
    """Register one loaded pair with one method and score it.

    Args:
        registrar: the method.
        images: ``(img1, img2)`` as loaded by ``pair.load()``.
        pair: the pair (control points in original pixels).
        method: the method's name for the result.
        size: working long side in pixels, or None for the original images.

    Returns:
        The :class:`PairResult`.
    """
    work1, f1 = _resize_long_side(images[0], size)
    work2, f2 = _resize_long_side(images[1], size)
    start = time.perf_counter()
    result = registrar(work1, work2)
    seconds = time.perf_counter() - start
    transform = result_transform(result)
    if transform is not None:
        transform = transform.in_original_pixels(f1, f2)
    error = pair_error(transform, pair.points_fixed, pair.points_moving)
    if not result.success:
        logger.debug("%s failed on %s: %s", method, pair.name, result.reason)
    return PairResult(
        method=method,
        pair=pair.name,
        category=pair.category,
        error=error,
        success=bool(result.success) and math.isfinite(error),
        reason=str(result.reason or ""),
        num_matches=len(result.matches),
        num_inliers=int(result.num_inliers),
        seconds=seconds,
        model="" if transform is None else transform.model,
        confidence=float(getattr(result, "confidence", math.nan)),
    )


ORACLE = "oracle-homography"
"""Method name of the oracle homography's rows (pairs whose ``H_oracle`` is known)."""


def oracle_results(pairs: Sequence[EvalPair]) -> list[PairResult]:
    """The oracle homography of every pair that has one, scored like a method: the
    ceiling of every projective model on pairs no homography relates exactly."""
    return [
        PairResult(
            method=ORACLE,
            pair=p.name,
            category=p.category,
            error=pair_error(p.H_oracle, p.points_fixed, p.points_moving),
            success=True,
            reason="oracle",
            num_matches=0,
            num_inliers=0,
            seconds=0.0,
            model="homography",
        )
        for p in pairs
        if p.H_oracle is not None
    ]


def run_evaluation(
    pairs: Sequence[EvalPair],
    methods: Mapping[str, Registrar],
    size: int | None = None,
    progress: Progress | None = None,
) -> list[PairResult]:
    """Register every pair with every method.

    Args:
        pairs: the evaluation pairs.
        methods: ``{name: registrar}``, run in this order on each pair.
        size: working long side in pixels, or None (the methods get the full images;
            ``R2D2Fundus`` normalises the scale itself).
        progress: optional callback after each registration.

    Returns:
        One :class:`PairResult` per (pair, method), pair-major.
    """
    total, done, out = len(pairs) * len(methods), 0, []
    for pair in pairs:
        images = pair.load()
        for name, registrar in methods.items():
            out.append(register_pair(registrar, images, pair, name, size))
            done += 1
            if progress is not None:
                progress(done, total, f"{pair.name} {name}")
    return out
