"""Where the time of R2D2Fundus.detectAndCompute goes: the network's forward vs the rest.

The rest is FOV estimation, resizing, NMS, sub-pixel refinement, descriptor sampling
and the conversion to ``cv2.KeyPoint``. Forward time is measured with forward
pre/post hooks on the network (CUDA is synchronised in both hooks).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ForwardShare:
    """Median over repeats of one image.

    Attributes:
        total_s: seconds per detectAndCompute call.
        forward_s: seconds inside the network's forward (all pyramid levels).
        levels: network calls per detectAndCompute call.
        keypoints: keypoints returned.
    """

    total_s: float
    forward_s: float
    levels: int
    keypoints: int

    @property
    def share(self) -> float:
        """Fraction of the time spent in the forward (0..1)."""
        return self.forward_s / self.total_s if self.total_s > 0 else 0.0


def forward_share(detector: Any, image: np.ndarray, repeat: int = 3) -> ForwardShare:
    """Profile ``detector.detectAndCompute(image)`` (an :class:`R2D2Fundus`).

    One untimed warm-up call comes first.
    """
    import torch

    net = detector.core.network
    cuda = detector.device.type == "cuda"
    marks: list[float] = []

    def stamp(*_: Any) -> None:
        if cuda:
            torch.cuda.synchronize()
        marks.append(time.perf_counter())

    handles = [net.register_forward_pre_hook(stamp), net.register_forward_hook(stamp)]
    try:
        detector.detectAndCompute(image, None)
        totals, forwards, levels, count = [], [], 0, 0
        for _ in range(repeat):
            marks.clear()
            start = time.perf_counter()
            kps, _ = detector.detectAndCompute(image, None)
            if cuda:
                torch.cuda.synchronize()
            totals.append(time.perf_counter() - start)
            forwards.append(sum(b - a for a, b in zip(marks[::2], marks[1::2], strict=True)))
            levels, count = len(marks) // 2, len(kps)
    finally:
        for h in handles:
            h.remove()
    return ForwardShare(statistics.median(totals), statistics.median(forwards), levels, count)
