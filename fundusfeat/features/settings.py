"""DetectorConfig: the validated, immutable settings of the learned detector.

Every default lives here once. The class defaults are the default model's settings
(``"lean-dw-s1"``); a model whose inference differs (the other lean models and ``"fast"``
keep the unsmoothed repeatability and ``rel_thr`` 0.5 they were measured with, the
paper's ``"r2d2"`` its own thresholds and scales) states its own values in its registry entry
(:mod:`fundusfeat.features.models`), and ``R2D2Fundus.create`` fills whatever the caller
leaves unset from that entry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DetectorConfig:
    """Settings of one detector (see ``R2D2Fundus.create`` for how they are used).

    Attributes:
        max_keypoints: most keypoints returned per image (over all scales).
        rep_thr: minimum repeatability of a keypoint, in [0, 1].
        rel_thr: minimum reliability of a keypoint, in [0, 1].
        scale_f: ratio between pyramid scales (> 1; the paper uses 2**0.25).
        min_scale: smallest pyramid scale (1 = one scale; the paper stops below 1/3).
        max_scale: largest pyramid scale.
        fov: restrict keypoints to the estimated field of view and normalise the scale
            by its diameter (else by ``max(H, W)``).
        target_diameter: FOV diameter in px at the working scale; None = no resize.
        max_upscale: the largest enlargement to the working scale (4 by default: every
            image whose FOV is at least a quarter of ``target_diameter`` is seen by the
            network at one scale, so ``KeyPoint.size`` and the descriptors follow the
            image's scale; 1 = images smaller than the working size keep their own size).
        scale_tolerance: a working scale within this fraction of 1 is taken as 1, so an
            image already near the working size is not resampled (which would only blur
            it and move its pixels off their grid).
        border: keypoints within this many level pixels of the FOV rim, mask edge or
            image border are dropped.
        keypoint_size: ``KeyPoint.size`` in working-scale pixels at pyramid scale 1.
        nms_size: side of the non-maximum suppression window in level pixels (odd).
        rep_blur: Gaussian sigma (level pixels) by which the repeatability is smoothed
            before its maxima are taken; 0 = none. Smoothing makes keypoints follow a
            resampled image's sub-pixel shifts (the default model's 2.0 with
            ``rel_thr`` 0.3: docs/benchmarks.md, "Keypoints that follow a shift" and
            "Images side by side, a smoother repeatability").
    """

    max_keypoints: int = 5000
    rep_thr: float = 0.5
    rel_thr: float = 0.3
    scale_f: float = 2**0.25
    min_scale: float = 1.0
    max_scale: float = 1.0
    fov: bool = True
    target_diameter: float | None = 1000.0
    max_upscale: float = 4.0
    scale_tolerance: float = 0.1
    border: int = 8
    keypoint_size: float = 8.0
    nms_size: int = 3
    rep_blur: float = 2.0

    def __post_init__(self) -> None:
        if not _is_int(self.max_keypoints) or self.max_keypoints < 0:
            raise ValueError(f"max_keypoints must be an int >= 0, got {self.max_keypoints!r}")
        for name in ("rep_thr", "rel_thr"):
            value = getattr(self, name)
            if not _is_real(value) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
        if not _is_real(self.scale_f) or not self.scale_f > 1.0:
            raise ValueError(f"scale_f must be a finite number > 1, got {self.scale_f!r}")
        scales = (self.min_scale, self.max_scale)
        if not all(_is_real(s) for s in scales) or not 0.0 < self.min_scale <= self.max_scale:
            raise ValueError(
                f"min_scale and max_scale must satisfy 0 < min_scale <= max_scale, "
                f"got {self.min_scale!r}, {self.max_scale!r}"
            )
        if not isinstance(self.fov, (bool, np.bool_)):
            raise TypeError(f"fov must be a bool, got {type(self.fov).__name__}")
        diameter = self.target_diameter
        if diameter is not None and (not _is_real(diameter) or not diameter > 0):
            raise ValueError(
                f"target_diameter must be a finite number > 0 or None, got {diameter!r}"
            )
        if not _is_real(self.max_upscale) or not self.max_upscale >= 1.0:
            raise ValueError(f"max_upscale must be a number >= 1, got {self.max_upscale!r}")
        if not _is_real(self.scale_tolerance) or not 0.0 <= self.scale_tolerance < 1.0:
            raise ValueError(f"scale_tolerance must be in [0, 1), got {self.scale_tolerance!r}")
        if not _is_int(self.nms_size) or self.nms_size < 1 or self.nms_size % 2 == 0:
            raise ValueError(f"nms_size must be a positive odd integer, got {self.nms_size!r}")
        if not _is_real(self.rep_blur) or not 0.0 <= self.rep_blur <= 10.0:
            raise ValueError(f"rep_blur must be a number in [0, 10], got {self.rep_blur!r}")
        if not _is_int(self.border) or self.border < 0:
            raise ValueError(f"border must be an int >= 0, got {self.border!r}")
        if not _is_real(self.keypoint_size) or not self.keypoint_size > 0:
            raise ValueError(f"keypoint_size must be a number > 0, got {self.keypoint_size!r}")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The names of the settings, in declaration order."""
        return tuple(f.name for f in fields(cls))

    def replace(self, **changes: Any) -> DetectorConfig:
        """A validated copy with ``changes`` applied (unknown names raise TypeError)."""
        unknown = set(changes) - set(self.field_names())
        if unknown:
            raise TypeError(f"unknown detector setting(s): {sorted(unknown)}")
        values = {name: getattr(self, name) for name in self.field_names()}
        return DetectorConfig(**{**values, **changes})


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value: object) -> bool:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        return False
    return math.isfinite(float(value))
