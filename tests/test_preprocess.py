"""Tests for fundusfeat.preprocess: validation, tensors, FOV, working scale."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fundusfeat.network import IMAGE_MEAN, IMAGE_STD
from fundusfeat.preprocess import (
    TARGET_FOV_DIAMETER,
    estimate_fov,
    from_working,
    normalize_rgb,
    resize_image,
    to_tensor,
    to_working,
    validate_image,
    validate_mask,
    working_scale,
)


class TestValidateImage:
    def test_smoke_bgr(self, retina):
        out = validate_image(retina)
        assert out.shape == retina.shape and out.dtype == np.uint8

    @pytest.mark.parametrize(
        ("img", "shape", "dtype"),
        [
            (np.zeros((20, 30), np.uint8), (20, 30, 3), np.uint8),
            (np.zeros((20, 30, 1), np.uint8), (20, 30, 3), np.uint8),
            (np.zeros((20, 30, 4), np.uint8), (20, 30, 3), np.uint8),
            (np.full((20, 30, 3), 0.5), (20, 30, 3), np.float32),
            (np.full((20, 30, 3), 65535, np.uint16), (20, 30, 3), np.float32),
        ],
    )
    def test_canonical_forms(self, img, shape, dtype):
        out = validate_image(img)
        assert out.shape == shape and out.dtype == dtype
        if img.dtype == np.uint16:
            assert out.max() == pytest.approx(1.0)

    @pytest.mark.parametrize(
        ("bad", "exc"),
        [
            (None, TypeError),
            ([[0] * 20] * 20, TypeError),
            (np.zeros((20, 20), np.int32), TypeError),
            (np.zeros((20, 20, 3, 1), np.uint8), ValueError),
            (np.zeros((20,), np.uint8), ValueError),
            (np.zeros((20, 20, 2), np.uint8), ValueError),
            (np.zeros((0, 0, 3), np.uint8), ValueError),
            (np.zeros((1, 1), np.uint8), ValueError),
            (np.full((20, 20, 3), np.nan, np.float32), ValueError),
            (np.full((20, 20, 3), np.inf), ValueError),
            (np.full((20, 20, 3), 255.0, np.float32), ValueError),
        ],
    )
    def test_exception_names_argument(self, bad, exc):
        with pytest.raises(exc, match="photo"):
            validate_image(bad, "photo")


class TestValidateMask:
    def test_none(self):
        assert validate_mask(None, (20, 20, 3)) is None

    def test_bool_and_uint8(self):
        m = np.zeros((20, 30), np.uint8)
        m[5, 5] = 255
        out = validate_mask(m, (20, 30, 3))
        assert out.dtype == bool and out.sum() == 1
        assert validate_mask(m.astype(bool), (20, 30)).sum() == 1

    @pytest.mark.parametrize(
        ("bad", "exc"),
        [
            (np.zeros((20, 31), np.uint8), ValueError),
            (np.zeros((20, 30, 3), np.uint8), ValueError),
            (np.zeros((20, 30), np.float32), TypeError),
            ([[1]], TypeError),
        ],
    )
    def test_exception_names_argument(self, bad, exc):
        with pytest.raises(exc, match="mask"):
            validate_mask(bad, (20, 30, 3))


class TestToTensor:
    def test_known_values(self):
        img = np.zeros((16, 16, 3), np.uint8)
        img[..., 2] = 255  # red in BGR
        x = to_tensor(img)
        assert x.shape == (1, 3, 16, 16) and x.dtype == torch.float32
        expected = [(1 - IMAGE_MEAN[0]) / IMAGE_STD[0], -IMAGE_MEAN[1] / IMAGE_STD[1]]
        assert x[0, 0, 0, 0].item() == pytest.approx(expected[0], rel=1e-5)
        assert x[0, 1, 0, 0].item() == pytest.approx(expected[1], rel=1e-5)

    def test_uint8_float_gray_agree(self):
        gray = np.random.default_rng(0).integers(0, 256, (16, 20), dtype=np.uint8)
        a = to_tensor(gray)
        b = to_tensor(np.repeat(gray[..., None], 3, 2).astype(np.float64) / 255.0)
        torch.testing.assert_close(a, b)

    def test_batch_and_normalize_rgb(self):
        imgs = [np.full((16, 16, 3), v, np.uint8) for v in (0, 128)]
        x = to_tensor(imgs)
        assert x.shape == (2, 3, 16, 16)
        rgb = torch.full((2, 3, 16, 16), 0.0)
        rgb[1] = 128 / 255
        torch.testing.assert_close(normalize_rgb(rgb), x)

    def test_exceptions(self):
        with pytest.raises(ValueError, match="batch"):
            normalize_rgb(torch.zeros(1, 4, 8, 8))
        with pytest.raises(ValueError, match="same size"):
            to_tensor([np.zeros((16, 16), np.uint8), np.zeros((17, 16), np.uint8)])


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


class TestWorkingScale:
    def test_known_answer(self):
        assert working_scale(1500.0) == pytest.approx(TARGET_FOV_DIAMETER / 1500)
        assert working_scale(100.0) == 2.0  # enlargement capped

    @pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
    def test_exception(self, bad):
        with pytest.raises(ValueError, match="fov_diameter"):
            working_scale(bad)

    def test_resize_image_exact_factors(self):
        img = np.zeros((101, 203, 3), np.uint8)
        out, (sx, sy) = resize_image(img, 0.37)
        assert out.shape[:2] == (round(101 * 0.37), round(203 * 0.37))
        assert sx == out.shape[1] / 203 and sy == out.shape[0] / 101

    def test_pixel_centre_convention_matches_cv2_resize(self):
        img = np.zeros((64, 64), np.float32)
        img[20, 30] = 1.0  # a pixel-centred blob at (x=30, y=20)
        img = cv2.GaussianBlur(img, (0, 0), 3)
        small, f = resize_image(img, 0.5)
        y, x = np.unravel_index(np.argmax(small), small.shape)
        expected = to_working([[30, 20]], f)[0]
        assert abs(x - expected[0]) <= 0.5 and abs(y - expected[1]) <= 0.5

    @given(
        xy=st.lists(st.tuples(st.floats(-10, 5000), st.floats(-10, 5000)), min_size=1, max_size=20),
        sx=st.floats(0.05, 4.0),
        sy=st.floats(0.05, 4.0),
    )
    def test_round_trip(self, xy, sx, sy):
        pts = np.array(xy)
        np.testing.assert_allclose(
            from_working(to_working(pts, (sx, sy)), (sx, sy)), pts, atol=1e-6
        )
