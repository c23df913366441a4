"""Tests for fundusfeat.pipeline.register: register() and register_many()."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fundusfeat import RegistrationResult, register
from fundusfeat.pipeline.register import register_many

H_TRUE = np.array([[1.03, 0.04, -12.0], [-0.03, 0.99, 9.0], [2e-5, -1e-5, 1.0]])


@pytest.fixture(scope="module")
def warped_pair(retina):
    """retina and its warp by H_TRUE (H_TRUE maps retina pixels to the warped image)."""
    return retina, cv2.warpPerspective(retina, H_TRUE, retina.shape[1::-1])


def _reprojection_error(H: np.ndarray, size: int = 384) -> float:
    g = np.stack(np.meshgrid(np.linspace(60, size - 60, 5), np.linspace(60, size - 60, 5)), -1)
    pts = g.reshape(-1, 1, 2)
    diff = cv2.perspectiveTransform(pts, H) - cv2.perspectiveTransform(pts, H_TRUE)
    return float(np.linalg.norm(diff, axis=2).mean())


def _check_result(res: RegistrationResult) -> None:
    assert isinstance(res.success, bool) and isinstance(res.reason, str)
    assert res.inliers.dtype == np.uint8 and res.inliers.shape == (len(res.matches), 1)
    assert set(res.timings) >= {"detect", "match", "estimate", "total"}
    assert all(t >= 0 for t in res.timings.values())
    if res.success:
        assert res.H.shape == (3, 3) and res.H.dtype == np.float64 and res.reason == "ok"
        assert res.num_inliers >= 8
    else:
        assert res.H is None and res.reason != "ok"


def test_known_h_with_sift(warped_pair):
    res = register(*warped_pair, detector=cv2.SIFT_create())
    _check_result(res)
    assert res.success
    assert _reprojection_error(res.H) < 1.0


def test_orb_uses_hamming(warped_pair):
    res = register(*warped_pair, detector=cv2.ORB_create(1000))
    _check_result(res)
    assert res.success and _reprojection_error(res.H) < 3.0


def test_r2d2fundus_well_formed(warped_pair, detector):
    res = register(*warped_pair, detector=detector, method="magsac")
    _check_result(res)
    assert len(res.keypoints1) > 0 and all(isinstance(k, cv2.KeyPoint) for k in res.keypoints1)


def test_default_detector_float_input(warped_pair):
    a, b = (im.astype(np.float32) / 255 for im in warped_pair)
    _check_result(register(a[::2, ::2].copy(), b[::2, ::2].copy()))


def test_failure_is_a_result(retina, detector):
    blank = np.zeros_like(retina)
    res = register(retina, blank, detector=detector)
    _check_result(res)
    assert not res.success and "keypoints" in res.reason
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, retina.shape, dtype=np.uint8)
    res = register(retina, noise, detector=cv2.SIFT_create(), min_inliers=50)
    _check_result(res)
    assert not res.success


def test_masks(warped_pair):
    mask = np.zeros(warped_pair[0].shape[:2], np.uint8)
    mask[100:300, 100:300] = 1
    res = register(*warped_pair, detector=cv2.SIFT_create(), mask1=mask, mask2=mask)
    _check_result(res)
    pts = cv2.KeyPoint_convert(res.keypoints1)
    assert ((pts >= 99) & (pts <= 300)).all()


@pytest.mark.parametrize(
    ("kwargs", "exc", "name"),
    [
        ({"img1": None}, TypeError, "img1"),
        ({"img2": np.zeros((4, 4), np.uint8)}, ValueError, "img2"),
        ({"img2": [[0]]}, TypeError, "img2"),
        ({"mask1": np.zeros((3, 3), np.uint8)}, ValueError, "mask1"),
        ({"detector": "sift"}, TypeError, "detector"),
        ({"matcher": 3}, TypeError, "matcher"),
        ({"method": "x"}, ValueError, "method"),
        ({"min_inliers": 2}, ValueError, "min_inliers"),
    ],
)
def test_bad_inputs(retina, kwargs, exc, name):
    args = {"img1": retina, "img2": retina, "detector": cv2.SIFT_create()}
    args.update(kwargs)
    with pytest.raises(exc, match=name):
        register(**args)


def test_register_many_equals_register(warped_pair, dense_detector):
    pairs = [warped_pair, (warped_pair[1], warped_pair[0])]
    many = register_many(pairs, dense_detector)
    assert len(many) == 2
    for pair, res in zip(pairs, many, strict=True):
        _check_result(res)
        single = register(*pair, detector=dense_detector)
        assert res.success == single.success and res.reason == single.reason
        assert len(res.matches) == len(single.matches)
    sift = register_many(pairs, cv2.SIFT_create())
    assert sift[0].success and sift[1].success
    assert _reprojection_error(sift[0].H) < 1.0
    with pytest.raises(TypeError, match="pairs"):
        register_many([warped_pair[0]])
