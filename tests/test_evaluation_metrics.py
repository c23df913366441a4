"""Registration Score: hand-computed examples, error direction, both conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fundusfeat.evaluation.metrics import (
    Score,
    pair_error,
    registration_score,
    score_conventions,
    success_curve,
)
from fundusfeat.geometry.homography import translation

INF = math.inf


def test_auc_hand_computed():
    # exact area of the step function over [0, 25], normalised:
    # (25 - 0) + (25 - 5) + (25 - 10) + 0 = 60 -> 60 / (4 * 25) = 0.6
    assert registration_score([0.0, 5.0, 10.0, INF]) == pytest.approx(0.6)
    assert registration_score([30.0, INF]) == 0.0
    assert registration_score([0.0, 0.0]) == 1.0
    assert math.isnan(registration_score([]))


def test_auc_matches_fine_grid_trapezoid():
    errors = [0.0, 5.0, 10.0, INF, 24.9, 3.3]
    grid = np.linspace(0.0, 25.0, 25001)
    trapezoid = np.trapezoid(success_curve(errors, grid), grid) / 25.0
    assert registration_score(errors) == pytest.approx(trapezoid, abs=1e-4)


def test_success_curve_counts_equal_error_as_success():
    np.testing.assert_allclose(
        success_curve([0.0, 5.0, 10.0, INF], [0.0, 5.0, 10.0, 25.0]), [0.25, 0.5, 0.75, 0.75]
    )


def test_score_summary_hand_computed():
    s = Score.from_errors([0.0, 5.0, 10.0, INF])
    assert s.auc == pytest.approx(0.6)
    assert (s.num_pairs, s.num_failures) == (4, 1)
    assert s.median_error == pytest.approx(7.5)
    assert s.success == {5.0: 0.5, 10.0: 0.75, 25.0: 0.75}


def test_negative_or_nan_errors_rejected():
    with pytest.raises(ValueError, match="errors"):
        registration_score([1.0, -1.0])
    with pytest.raises(ValueError, match="errors"):
        registration_score([math.nan])
    with pytest.raises(ValueError, match="max_threshold"):
        registration_score([1.0], max_threshold=0.0)


def test_pair_error_direction():
    # H maps image 1 (fixed) onto image 2 (moving): moving = fixed + (10, 0)
    fixed = np.array([[0.0, 0.0], [100.0, 50.0], [30.0, 70.0]])
    moving = fixed + [10.0, 0.0]
    assert pair_error(translation(10.0, 0.0), fixed, moving) == pytest.approx(0.0)
    assert pair_error(np.eye(3), fixed, moving) == pytest.approx(10.0)
    # the wrong direction would give 20 px
    assert pair_error(translation(-10.0, 0.0), fixed, moving) == pytest.approx(20.0)


def test_pair_error_measured_in_fixed_image():
    # a 2x zoom: moving = 2 * fixed; H = I maps moving back unchanged: error is
    # |fixed - 2 fixed| = |fixed| in fixed-image pixels
    fixed = np.array([[3.0, 4.0], [6.0, 8.0]])
    assert pair_error(np.eye(3), fixed, 2 * fixed) == pytest.approx((5.0 + 10.0) / 2)


@pytest.mark.parametrize("H", [None, np.zeros((3, 3)), np.full((3, 3), np.nan)])
def test_pair_error_failed_is_inf(H):
    pts = np.ones((2, 2))
    assert pair_error(H, pts, pts) == INF


def test_pair_error_point_at_infinity_is_inf():
    H = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-0.01, 0.0, 1.0]])
    moving = np.array([[-100.0, 0.0]])  # inv(H) sends it to the line at infinity
    assert pair_error(H, moving, moving) == INF


def test_pair_error_bad_shapes():
    with pytest.raises(ValueError, match="points_fixed"):
        pair_error(np.eye(3), np.ones((3, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="points_fixed"):
        pair_error(np.eye(3), np.ones((0, 2)), np.ones((0, 2)))


def test_both_conventions_hand_computed():
    names = ["S01", "S02", "P01", "P37", "A01"]
    cats = ["S", "S", "P", "P", "A"]
    errors = [0.0, 5.0, 10.0, INF, 12.5]
    conv = score_conventions(names, cats, errors)
    # paper: pooled over all five pairs: (1 + 0.8 + 0.6 + 0 + 0.5) / 5
    assert conv.pooled.auc == pytest.approx(2.9 / 5)
    assert list(conv.by_category) == ["S", "P", "A"]
    assert conv.by_category["S"].auc == pytest.approx(0.9)
    assert conv.by_category["P"].auc == pytest.approx(0.3)  # P37 included here
    assert conv.by_category["A"].auc == pytest.approx(0.5)
    # SuperRetina: P37 left out, mean of S (0.9), P (0.6), A (0.5)
    assert conv.mauc == pytest.approx((0.9 + 0.6 + 0.5) / 3)
    assert conv.mauc_categories == ("S", "P", "A")


def test_conventions_without_fire_categories():
    conv = score_conventions(["a", "b"], ["x", "x"], [0.0, INF])
    assert conv.pooled.auc == pytest.approx(0.5)
    assert math.isnan(conv.mauc)
    with pytest.raises(ValueError, match="same length"):
        score_conventions(["a"], [], [0.0])
