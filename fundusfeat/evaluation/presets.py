"""Every synthetic preset by name: the homography presets (:mod:`.synthetic`: easy,
hard) and the eye-model presets (:mod:`.eye`: eye, eye-hard)."""

from __future__ import annotations

from pathlib import Path

from fundusfeat.evaluation.eye import EYE_PRESETS, eye_pairs
from fundusfeat.evaluation.pairs import EvalPair
from fundusfeat.evaluation.synthetic import PRESETS, synthetic_pairs

NAMES = tuple(sorted({*PRESETS, *EYE_PRESETS}))
"""All preset names."""


def preset_pairs(images: list[Path], preset: str, num_pairs: int, seed: int = 0) -> list[EvalPair]:
    """The pairs of any preset (see :func:`.synthetic.synthetic_pairs`, :func:`.eye.eye_pairs`).

    Raises:
        ValueError: an unknown preset, no images or ``num_pairs < 1``.
    """
    if preset in EYE_PRESETS:
        return eye_pairs(images, preset, num_pairs, seed)
    if preset in PRESETS:
        return synthetic_pairs(images, preset, num_pairs, seed)
    raise ValueError(f"preset: expected one of {NAMES}, got {preset!r}")
