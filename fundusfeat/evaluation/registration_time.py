"""Whole-registration time: ``fundusfeat.register`` against the classical pipeline, per
pair, in the same run.

The classical pipeline is what a SIFT-based fundus script does: the field-of-view mask
(:func:`fundusfeat.features.fov.estimate_fov`), SIFT on the CLAHE-enhanced green channel
(:class:`~fundusfeat.evaluation.peers.ClaheSift`) inside it, ``cv2.BFMatcher`` 2-NN with
Lowe's ratio test (0.8) and ``cv2.findHomography`` with RANSAC (5 px). Both pipelines
get the same pairs; each pair is timed ``repeat`` times per pipeline after one untimed
warm-up, alternating the pipelines so that a slow moment of the machine hits both.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from fundusfeat.evaluation.peers import ClaheSift
from fundusfeat.evaluation.report import markdown
from fundusfeat.features.fov import estimate_fov

RATIO = 0.8
"""Lowe's ratio of the classical pipeline."""
RANSAC_PX = 5.0


@dataclass
class ClassicalPipeline:
    """The classical SIFT-CLAHE registration of a pair (see the module docstring)."""

    sift: ClaheSift = field(default_factory=ClaheSift)
    matcher: cv2.BFMatcher = field(default_factory=lambda: cv2.BFMatcher(cv2.NORM_L2))

    def __call__(self, img1: np.ndarray, img2: np.ndarray) -> np.ndarray | None:
        """The homography mapping image-1 pixels onto image 2, or None."""
        feats = []
        for img in (img1, img2):
            mask = estimate_fov(img).mask.astype(np.uint8) * 255
            feats.append(self.sift.detectAndCompute(img, mask))
        (k1, d1), (k2, d2) = feats
        if d1 is None or d2 is None or len(k1) < 4 or len(k2) < 4:
            return None
        pairs = self.matcher.knnMatch(d1, d2, k=2)
        good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < RATIO * p[1].distance]
        if len(good) < 4:
            return None
        src = np.float32([k1[m.queryIdx].pt for m in good])
        dst = np.float32([k2[m.trainIdx].pt for m in good])
        H, _ = cv2.findHomography(src, dst, cv2.RANSAC, RANSAC_PX)
        return H


@dataclass(frozen=True)
class PipelineTiming:
    """Median seconds per pair of both pipelines on the same pairs.

    Attributes:
        pairs: number of pairs.
        image_size: ``(width, height)`` of the first pair's image 1.
        threads: CPU threads.
        fundusfeat_s: median seconds of ``register()``.
        classical_s: median seconds of the classical pipeline.
        stages_s: median seconds of each stage of ``register()`` (its ``timings``).
    """

    pairs: int
    image_size: tuple[int, int]
    threads: int
    fundusfeat_s: float
    classical_s: float
    stages_s: dict[str, float]

    @property
    def ratio(self) -> float:
        """``fundusfeat_s / classical_s``."""
        return self.fundusfeat_s / self.classical_s


def _timed(call: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = call()
    return time.perf_counter() - start, out


def time_pipelines(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    register: Callable[[np.ndarray, np.ndarray], object],
    threads: int,
    repeat: int = 3,
) -> PipelineTiming:
    """Time ``register`` (e.g. ``partial(fundusfeat.register, detector=...)``) and the
    classical pipeline on every pair.

    Args:
        pairs: ``(img1, img2)`` uint8 BGR images.
        register: the fundusfeat registration; its result's ``timings`` are collected.
        threads: CPU threads (recorded; set them before calling).
        repeat: timed calls per pair and pipeline (>= 1).
    """
    if not pairs or repeat < 1:
        raise ValueError("pairs must not be empty and repeat must be >= 1")
    classical = ClassicalPipeline()
    register(*pairs[0])
    classical(*pairs[0])
    ours, theirs, stages = [], [], {}
    for img1, img2 in pairs:
        for _ in range(repeat):
            seconds, result = _timed(lambda a=img1, b=img2: register(a, b))
            ours.append(seconds)
            for name, value in getattr(result, "timings", {}).items():
                stages.setdefault(name, []).append(value)
            theirs.append(_timed(lambda a=img1, b=img2: classical(a, b))[0])
    return PipelineTiming(
        pairs=len(pairs),
        image_size=(pairs[0][0].shape[1], pairs[0][0].shape[0]),
        threads=threads,
        fundusfeat_s=statistics.median(ours),
        classical_s=statistics.median(theirs),
        stages_s={k: statistics.median(v) for k, v in stages.items()},
    )


def pipeline_table(rows: Sequence[tuple[str, PipelineTiming]]) -> str:
    """A markdown table: one row per labelled timing."""
    header = ["pairs", "image", "threads", "register s/pair", "SIFT-CLAHE s/pair", "ratio"]
    header += ["stages of register (s)"]
    body = []
    for label, t in rows:
        stages = ", ".join(f"{k} {v:.3f}" for k, v in t.stages_s.items() if k != "total")
        body.append(
            [
                f"{label} ({t.pairs})",
                f"{t.image_size[0]}x{t.image_size[1]}",
                t.threads,
                f"{t.fundusfeat_s:.3f}",
                f"{t.classical_s:.3f}",
                f"{t.ratio:.2f}x",
                stages,
            ]
        )
    return markdown(header, body)
