"""Shift repeatability's bookkeeping: found again, drifted or lost."""

from __future__ import annotations

import math

import numpy as np

from fundusfeat.evaluation.shift import found_again, shift_image, why_missed


def test_integer_shift_moves_pixels_exactly():
    img = np.arange(5 * 6 * 3, dtype=np.uint8).reshape(5, 6, 3)
    moved = shift_image(img, 2, 1)
    np.testing.assert_array_equal(moved[1:, 2:], img[:-1, :-2])
    assert not moved[0].any() and not moved[:, :2].any()


def test_found_drifted_and_lost_are_told_apart():
    points = np.array([[10.0, 10.0], [20.0, 20.0], [30.0, 30.0], [40.0, 40.0], [98.0, 5.0]])
    shift = (3.0, 1.0)
    shifted = np.array(
        [
            [13.4, 11.0],  # point 0, 0.4 px off: found
            [25.0, 21.0],  # point 1, 2 px off: drifted
            [52.0, 31.0],  # point 2: nothing within 3 px: lost
            [43.0, 41.8],  # point 3, 0.8 px off: found
        ]
    )
    size = (100, 100)  # point 4 moves out of the frame: not counted
    found, drifted, lost = why_missed(points, shifted, shift, size)
    assert (found, drifted, lost) == (0.5, 0.25, 0.25)
    assert found_again(points, shifted, shift, size) == found
    assert why_missed(points, np.zeros((0, 2)), shift, size) == (0.0, 0.0, 1.0)
    assert all(math.isnan(v) for v in why_missed(points[4:], shifted, shift, size))
