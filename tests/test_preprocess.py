"""Tests for image validation (fundusfeat.io.validation), tensors and the working scale
(fundusfeat.features.tensors, .scale) and
fundusfeat.features.prepare (one image made ready for the network)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fundusfeat.features.network import IMAGE_MEAN, IMAGE_STD
from fundusfeat.features.prepare import prepare
from fundusfeat.features.scale import from_working, to_working, working_scale
from fundusfeat.features.settings import DetectorConfig
from fundusfeat.features.tensors import normalize_rgb, to_tensor
from fundusfeat.io.arrays import resize_image
from fundusfeat.io.validation import uint16_bit_depth, validate_image, validate_mask


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

    @pytest.mark.parametrize("bits", [8, 10, 12, 14, 16])
    def test_uint16_bit_depth_is_detected(self, retina, bits):
        """10- and 12-bit camera data in uint16 keep their range (not divided by 65535)."""
        data = np.round(retina.astype(np.float64) / 255 * (2**bits - 1)).astype(np.uint16)
        assert uint16_bit_depth(data) == bits
        out = validate_image(data)
        np.testing.assert_allclose(out, retina / 255.0, atol=0.5 / 255)

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

    def test_one_pass_is_normalize_rgb_of_the_swapped_channels(self):
        rng = np.random.default_rng(1)
        for img in (rng.integers(0, 256, (33, 47, 3), dtype=np.uint8), rng.random((20, 19, 3))):
            unit = img / 255.0 if img.dtype == np.uint8 else img
            rgb = torch.from_numpy(unit[..., ::-1].astype(np.float32).copy()).permute(2, 0, 1)
            want = normalize_rgb(rgb[None])
            torch.testing.assert_close(to_tensor(img), want, rtol=0, atol=1e-6)

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


class TestWorkingScale:
    def test_known_answer(self):
        assert working_scale(1500.0, 750.0) == pytest.approx(750 / 1500)
        assert working_scale(100.0, 750.0) == 2.0  # enlargement capped
        assert working_scale(760.0, 768.0, tolerance=0.05) == 1.0  # near 1: no resampling
        assert working_scale(700.0, 768.0, tolerance=0.05) == pytest.approx(768 / 700)

    @pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
    def test_exception(self, bad):
        with pytest.raises(ValueError, match="fov_diameter"):
            working_scale(bad, 750.0)
        with pytest.raises(ValueError, match="target_diameter"):
            working_scale(750.0, bad)

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


class TestPrepare:
    def test_working_scale_and_region(self, retina):
        cfg = DetectorConfig(target_diameter=192.0)
        prep = prepare(retina, None, cfg, torch.device("cpu"))
        h, w = prep.tensor.shape[-2:]
        assert prep.tensor.shape[:2] == (1, 3) and prep.valid.shape == (1, 1, h, w)
        assert prep.fov is not None and prep.fov.found
        assert prep.factors[0] == pytest.approx(192 / prep.fov.diameter, rel=0.01)
        assert prep.input_size == (384, 384) and prep.region.shape == (384, 384)
        assert prep.region.mean() == pytest.approx(prep.valid.float().mean().item(), abs=0.02)
        assert not prep.blank

    def test_mask_and_no_resize(self, retina):
        mask = np.zeros(retina.shape[:2], np.uint8)
        mask[100:200, 50:300] = 1
        prep = prepare(retina, mask, DetectorConfig(target_diameter=None), torch.device("cpu"))
        assert prep.factors == (1.0, 1.0) and prep.tensor.shape[-2:] == (384, 384)
        assert prep.region.sum() <= mask.sum() and not prep.region[:100].any()

    def test_errors_name_the_caller_arguments(self, retina):
        cfg = DetectorConfig()
        with pytest.raises(TypeError, match="img2"):
            prepare([1, 2], None, cfg, torch.device("cpu"), image_name="img2")
        with pytest.raises(ValueError, match="mask2"):
            prepare(retina, np.zeros((3, 3), np.uint8), cfg, torch.device("cpu"), mask_name="mask2")

    def test_thin_strip_keeps_a_usable_working_size(self):
        """A 16 x 2000 image is not shrunk below 16 px (it used to fail inside)."""
        strip = np.random.default_rng(0).integers(0, 255, (16, 2000, 3), dtype=np.uint8)
        prep = prepare(strip, None, DetectorConfig(), torch.device("cpu"))
        assert min(prep.tensor.shape[-2:]) >= 16
