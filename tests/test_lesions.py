"""evaluation.lesions: longitudinal pairs differ from their control only at the painted
lesions, which lie inside the overlap; scoring; clipped channels."""

from __future__ import annotations

import numpy as np
import pytest

from fundusfeat.evaluation.eye import EYE_PRESETS
from fundusfeat.evaluation.lesions import (
    LESION_KINDS,
    Lesion,
    clip_channel,
    make_longitudinal_pair,
    score_changes,
)
from fundusfeat.pipeline.changes import Change


def test_lesion_pair_differs_from_its_control_only_at_the_lesions(retina):
    painted = make_longitudinal_pair(retina, EYE_PRESETS["eye"], 3, num_lesions=3)
    control = make_longitudinal_pair(retina, EYE_PRESETS["eye"], 3, num_lesions=0)
    assert control.lesions == [] and len(painted.lesions) == 3
    assert {les.kind for les in painted.lesions} == set(LESION_KINDS)
    assert np.array_equal(painted.pair.image1, control.pair.image1)
    diff = np.abs(painted.pair.image2.astype(int) - control.pair.image2.astype(int)).max(axis=2)
    moved = painted.pair.geometry.map_1_to_2(np.array([[les.x, les.y] for les in painted.lesions]))
    ys, xs = np.nonzero(diff > 3)
    assert len(xs) > 0
    near = np.min(np.hypot(xs[:, None] - moved[:, 0], ys[:, None] - moved[:, 1]), axis=1)
    assert near.max() < 3 * max(les.radius for les in painted.lesions) + 6


def _change(x, y, w, h):
    return Change(x + w / 2, y + h / 2, w * h, (x, y, w, h), "darker", -0.1, 8.0)


def test_score_counts_found_lesions_and_false_regions():
    lesions = [Lesion(50, 50, 6, "haemorrhage"), Lesion(200, 80, 4, "exudate")]
    score = score_changes([_change(44, 45, 12, 11), _change(300, 300, 10, 10)], lesions)
    assert score.found == [True, False] and score.false_regions == 1 and score.regions == 2


def test_clip_channel():
    img = np.full((4, 4, 3), 200, np.uint8)
    out = clip_channel(img, "red")
    assert (out[..., 2] == 255).all() and (out[..., :2] == 200).all()
    with pytest.raises(ValueError, match="channel"):
        clip_channel(img, "alpha")
