"""fundusfeat.geometry.warp (the one warp, the one overlap) and fitting.compose."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fundusfeat.geometry import fitting as F
from fundusfeat.geometry import transforms as T
from fundusfeat.geometry import warp as W

COEF = np.array([[0.02, -0.01, 0.015, 1.02, 0.05, 0.01], [-0.01, 0.02, 0.01, -0.04, 0.98, -0.02]])
STRONG = np.array([[0.3, -0.2, 0.25, 1.02, 0.05, 0.01], [-0.2, 0.3, 0.2, -0.04, 0.98, -0.02]])


def _quadratic(coef=COEF) -> T.QuadraticTransform:
    return T.QuadraticTransform(
        coef, (200.0, 190.0), (120.0, 120.0), (205.0, 185.0), (125.0, 125.0), (0, 0, 400, 400)
    )


def _exact_map(source, size, offset=(0, 0)):
    w, h = size
    ys, xs = np.mgrid[0:h, 0:w]
    pts = np.stack([xs.ravel() + offset[0], ys.ravel() + offset[1]], 1).astype(np.float64)
    return source(pts).reshape(h, w, 2)


@pytest.mark.parametrize("coef", [COEF, STRONG], ids=["mild", "strong"])
@pytest.mark.parametrize("offset", [(0, 0), (13, -7)])
def test_sampling_map_within_its_stated_accuracy(coef, offset):
    t = _quadratic(coef)
    size = (203, 157)
    mx, my = W.sampling_map(t.apply, size, offset)
    exact = _exact_map(t.apply, size, offset)
    assert mx.shape == my.shape == (157, 203) and mx.dtype == np.float32
    err = np.hypot(mx - exact[..., 0], my - exact[..., 1])
    assert err.max() <= W.MAP_ACCURACY + 1e-3  # float32 rounding of ~400-px values


def test_projective_resample_is_warp_perspective():
    img = np.random.default_rng(0).integers(0, 255, (120, 150, 3), dtype=np.uint8)
    H = np.array([[1.01, 0.02, 3.0], [-0.01, 0.99, -4.0], [1e-5, 0.0, 1.0]])
    t = T.homography_transform(H)
    want = cv2.warpPerspective(img, H, (140, 110), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    np.testing.assert_array_equal(W.resample(img, t, (140, 110)), want)
    np.testing.assert_array_equal(t.warp(img, (140, 110)), want)
    # source px -> output px, a rectangle of the output frame
    shift = np.array([[1.0, 0, 10], [0, 1, 5], [0, 0, 1]])
    want = cv2.warpPerspective(img, np.linalg.inv(shift) @ H, (50, 40))
    got = W.resample(img, t, (50, 40), inverse=True, offset=(10, 5))
    np.testing.assert_array_equal(got, want)


def test_quadratic_resample_samples_where_the_transform_says():
    ys, xs = np.mgrid[0:300, 0:320]
    ramp = np.stack([xs, ys], axis=2).astype(np.float32)  # a pixel's value is its position
    t = _quadratic()
    out = W.resample(ramp, t, (200, 180), border_value=-1)
    exact = _exact_map(t.apply, (200, 180))
    inside = (exact[..., 0] < 318) & (exact[..., 1] < 298) & (exact >= 1).all(axis=2)
    assert np.abs(out[inside] - exact[inside]).max() < 0.05  # remap resolves 1/32 px
    back = W.resample(ramp, t, (200, 180), inverse=True, offset=(20, 10))
    exact_back = _exact_map(t.inverse, (200, 180), (20, 10))
    ok = (exact_back >= 1).all(axis=2) & (exact_back[..., 0] < 318) & (exact_back[..., 1] < 298)
    assert np.abs(back[ok] - exact_back[ok]).max() < 0.05


def test_overlap_is_both_fields_of_view():
    mask = np.zeros((100, 120), np.uint8)
    cv2.circle(mask, (60, 50), 45, 1, -1)
    shift = T.homography_transform(np.array([[1.0, 0, 30], [0, 1, 0], [0, 0, 1]]))
    both = W.overlap(shift, mask, mask)
    assert both.dtype == bool and both.shape == mask.shape
    # output px x sees source px x + 30: the overlap is x in [15, 75] on the middle row
    assert both[50, 20] and both[50, 70] and not both[50, 10] and not both[50, 80]
    assert both.sum() < mask.sum()


def test_compose_is_one_then_the_other():
    a = T.homography_transform(np.array([[1.0, 0.01, 5], [0, 1.0, -3], [1e-5, 0, 1]]))
    q = _quadratic()
    box = (0.0, 0.0, 399.0, 399.0)
    pts = np.random.default_rng(1).uniform(20, 380, (50, 2))
    hh = F.compose(a, a, box)
    assert hh.model == "homography"
    np.testing.assert_allclose(hh.apply(pts), a.apply(a.apply(pts)), atol=1e-6)
    aq = F.compose(a, q, box)
    assert aq.model == "quadratic"
    np.testing.assert_allclose(aq.apply(pts), q.apply(a.apply(pts)), atol=0.05)


def test_resample_rejects_a_bad_size():
    with pytest.raises(ValueError, match="dsize"):
        W.resample(np.zeros((10, 10), np.uint8), _quadratic(), (0, 5))
