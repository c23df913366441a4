"""Tests for fundusfeat.features.fov: the circular field of view."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fundusfeat.features.fov import estimate_fov
from fundusfeat.io.arrays import disc_mask


class TestEstimateFov:
    def test_real_image(self, retina):
        fov = estimate_fov(retina)
        assert fov.found and fov.mask.shape == retina.shape[:2] and fov.mask.dtype == bool
        assert 0.9 * 384 < fov.diameter < 1.0 * 384

    def test_clipped_circle_idrid_like(self, make_fundus):
        img = make_fundus(1536, 1283, 1450.0, center=(770.0, 640.0))
        fov = estimate_fov(img)
        assert fov.diameter == pytest.approx(1450, rel=0.02)
        assert fov.center[0] == pytest.approx(770, abs=10)
        assert fov.center[1] == pytest.approx(640, abs=10)

    @pytest.mark.parametrize("brightness", [0.25, 0.12])
    def test_dark_image(self, make_fundus, brightness):
        fov = estimate_fov(make_fundus(400, 360, 330.0, brightness=brightness))
        assert fov.found and fov.diameter == pytest.approx(330, rel=0.03)

    def test_notched_circle_and_black_border(self, make_fundus):
        img = make_fundus(400, 360, 300.0)
        img[170:190, 40:80] = 0  # notch on the left rim
        img = cv2.copyMakeBorder(img, 20, 20, 30, 30, cv2.BORDER_CONSTANT)
        fov = estimate_fov(img)
        assert fov.diameter == pytest.approx(300, rel=0.02)
        assert not fov.mask[200, 90]  # notch (shifted by the border) excluded

    def test_no_fov_falls_back_to_whole_image(self):
        for img in (np.full((50, 60, 3), 128, np.uint8), np.zeros((50, 60), np.uint8)):
            fov = estimate_fov(img)
            assert not fov.found and fov.mask.all() and fov.diameter == 60

    def test_huge_image(self):
        img = np.zeros((4000, 4000, 3), np.uint8)
        cv2.circle(img, (2000, 2000), 1900, (30, 80, 190), -1)
        fov = estimate_fov(img)
        assert fov.diameter == pytest.approx(3800, rel=0.01)

    def test_rejects_bad_image(self):
        with pytest.raises(TypeError, match="image"):
            estimate_fov(None)


def test_disc_mask_known_answer():
    m = disc_mask(7, 9, (4.0, 3.0), 2.0)  # rows 2..4: 3, 5 and 3 pixels inside
    assert m[3, 2] and m[3, 6] and m[2, 3] and m[4, 5] and not m[2, 2]
    assert not m[3, 1] and not m[1, 4] and m.sum() == 11
