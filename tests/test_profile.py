"""The forward-time profile of the detector."""

from __future__ import annotations

import numpy as np

from fundusfeat import R2D2Fundus
from fundusfeat.evaluation.profile import forward_share

from .conftest import DEFAULT_MODEL


def test_forward_share_counts_levels_and_is_a_fraction(retina: np.ndarray) -> None:
    det = R2D2Fundus.create(model=DEFAULT_MODEL, device="cpu", target_diameter=256, min_scale=0.5)
    p = forward_share(det, retina, repeat=1)
    assert p.levels == 5  # scales 1, 2^-1/4, 2^-1/2, 2^-3/4, 1/2
    assert 0.0 < p.forward_s <= p.total_s
    assert 0.0 < p.share <= 1.0
