"""OpenCV's invariance protocol (evaluation/invariance.py): the overlap criterion, the
warp and the three measures on SIFT (fast, deterministic)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from fundusfeat.evaluation import invariance
from fundusfeat.io.demo import load_demo_pair


def test_disc_overlap_known_values() -> None:
    c = np.zeros(2)
    assert invariance.disc_overlap(c, 1.0, c, 1.0) == pytest.approx(1.0)
    assert invariance.disc_overlap(c, 1.0, np.array([3.0, 0]), 1.0) == pytest.approx(0.0)
    assert invariance.disc_overlap(c, 1.0, c, 2.0) == pytest.approx(0.25)  # contained
    # two unit discs one radius apart: lens area 2 pi / 3 - sqrt(3) / 2
    lens = 2 * math.pi / 3 - math.sqrt(3) / 2
    expected = lens / (2 * math.pi - lens)
    assert invariance.disc_overlap(c, 1.0, np.array([1.0, 0]), 1.0) == pytest.approx(expected)


def test_similarity_maps_the_centre_to_the_centre() -> None:
    A, size = invariance.similarity((100, 200), 30.0, 1.5)
    assert size == (300, 150)
    centre = invariance._apply(A, np.array([[99.5, 49.5]]))
    np.testing.assert_allclose(centre, [[149.5, 74.5]], atol=1e-9)


def test_identity_warp_is_perfect_and_sift_is_invariant() -> None:
    img = cv2.resize(load_demo_pair()[0], (384, 384))
    sift = cv2.SIFT_create()
    kps, desc = sift.detectAndCompute(img, None)
    A, size = invariance.similarity(img.shape[:2], 0.0, 1.0)
    rep, count = invariance.repeatability(kps, kps, A, size, size)
    assert rep == pytest.approx(1.0) and count > 0  # no duplicates in SIFT's output
    rows = invariance.run({"sift": sift}, img, rotations=(20.0,), scales=(0.8,))
    assert [r.kind for r in rows] == ["rotation", "scale"]
    for r in rows:
        assert 0.3 < r.repeatability <= 1 and 0.3 < r.match_ratio <= 1 and r.correct_matches > 5
    assert "mean" in invariance.format_table(rows)
    with pytest.raises(ValueError, match="kind"):
        invariance.measure("sift", sift, img, "shear", 1.0)
