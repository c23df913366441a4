"""Tests for fundusfeat.geometry.transforms: the Transform value objects, fitting, model choice."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fundusfeat.geometry import fitting as F
from fundusfeat.geometry import transforms as T
from fundusfeat.geometry.homography import scaling, transform_points

H_MILD = np.array([[1.02, 0.05, -12.0], [-0.04, 0.98, 9.0], [3e-5, -2e-5, 1.0]])
COEF = np.array([[0.02, -0.01, 0.015, 1.02, 0.05, 0.01], [-0.01, 0.02, 0.01, -0.04, 0.98, -0.02]])


def _quadratic() -> T.QuadraticTransform:
    return T.QuadraticTransform(
        COEF, (400.0, 380.0), (250.0, 250.0), (410.0, 370.0), (260.0, 260.0), (0, 0, 800, 800)
    )


def _every_model() -> list[T.Transform]:
    similarity = np.array([[0.99, -0.1, 5.0], [0.1, 0.99, -3.0], [0.0, 0.0, 1.0]])
    affine = np.array([[1.03, 0.04, 2.0], [-0.02, 0.97, 7.0], [0.0, 0.0, 1.0]])
    return [
        T.ProjectiveTransform(similarity, "similarity"),
        T.ProjectiveTransform(affine, "affine"),
        T.homography_transform(H_MILD),
        _quadratic(),
    ]


points = st.lists(st.tuples(st.floats(20, 780), st.floats(20, 780)), min_size=1, max_size=30).map(
    np.array
)


@pytest.mark.parametrize("transform", _every_model(), ids=lambda t: t.model)
@given(pts=points)
def test_inverse_apply_round_trip(transform, pts):
    back = transform.inverse(transform.apply(pts))
    np.testing.assert_allclose(back, pts, atol=0.01)


@pytest.mark.parametrize("transform", _every_model(), ids=lambda t: t.model)
def test_dict_round_trip_through_json(transform):
    again = T.from_dict(json.loads(json.dumps(transform.to_dict())))
    assert again.model == transform.model
    pts = np.random.default_rng(0).uniform(0, 800, (40, 2))
    np.testing.assert_array_equal(again.apply(pts), transform.apply(pts))


def test_from_dict_rejects_bad_input():
    with pytest.raises(ValueError, match="model"):
        T.from_dict({"model": "spline"})
    with pytest.raises(ValueError, match="quadratic"):
        T.from_dict({"model": "quadratic", "coefficients": COEF.tolist()})
    with pytest.raises(ValueError, match="model"):
        T.from_dict([1, 2])


def test_warp_equals_warp_perspective(retina):
    t = T.homography_transform(H_MILD)
    expected = cv2.warpPerspective(
        retina, H_MILD, (384, 384), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    )
    np.testing.assert_array_equal(t.warp(retina, (384, 384)), expected)
    generic = T.Transform.warp(t, retina, (384, 384))  # the remap path of any transform
    assert np.mean(generic != expected) < 1e-4


def test_quadratic_warp_samples_where_apply_says(retina):
    q = F.fit("quadratic", *_quadratic_points(_quadratic(), 200))
    out = q.warp(retina.astype(np.float32), (384, 384))
    p = np.array([[150.0, 170.0]])
    x, y = q.apply(p)[0]
    expected = cv2.getRectSubPix(retina.astype(np.float32), (1, 1), (x, y))[0, 0]
    np.testing.assert_allclose(out[170, 150], expected, atol=1.0)


def _quadratic_points(q, n, seed=1):
    p1 = np.random.default_rng(seed).uniform(40, 360, (n, 2))
    return p1, q.apply(p1)


def test_quadratic_fit_recovers_a_known_warp():
    truth = _quadratic()
    p1, p2 = _quadratic_points(truth, 300)
    for threshold in (None, 3.0):
        fitted = F.fit("quadratic", p1, p2, threshold)
        grid = np.random.default_rng(2).uniform(40, 360, (100, 2))
        np.testing.assert_allclose(fitted.apply(grid), truth.apply(grid), atol=1e-6)


@pytest.mark.parametrize("model", ["homography", "quadratic"])
def test_robust_fits_ignore_outliers(model):
    rng = np.random.default_rng(3)
    truth = T.homography_transform(H_MILD) if model == "homography" else _quadratic()
    p1 = rng.uniform(40, 760, (200, 2))
    p2 = truth.apply(p1)
    p2[:40] += rng.uniform(-80, 80, (40, 2))  # 20 % gross outliers
    fitted = F.fit(model, p1, p2, threshold=3.0)
    err = np.linalg.norm(fitted.apply(p1[40:]) - truth.apply(p1[40:]), axis=1)
    assert np.median(err) < 0.1
    plain = F.fit(model, p1, p2)  # least squares: pulled by the outliers
    assert np.median(np.linalg.norm(plain.apply(p1[40:]) - p2[40:], axis=1)) > np.median(err)


def test_fit_needs_enough_points():
    assert F.fit("homography", np.zeros((3, 2)), np.zeros((3, 2))) is None
    assert F.fit("quadratic", np.ones((6, 2)), np.ones((6, 2))) is None  # degenerate
    with pytest.raises(ValueError, match="model"):
        F.fit("spline", np.zeros((10, 2)), np.zeros((10, 2)))
    with pytest.raises(ValueError, match="length"):
        F.fit("affine", np.zeros((10, 2)), np.zeros((9, 2)))


def test_pure_homography_pairs_choose_the_homography():
    rng = np.random.default_rng(4)
    p1 = rng.uniform(0, 800, (400, 2))
    p2 = transform_points(H_MILD, p1) + rng.normal(0, 0.7, (400, 2))
    choice = F.choose_model(p1, p2)
    assert choice.model == "homography"
    assert set(choice.held_out) == {"homography", "quadratic"}


def test_curved_pairs_choose_the_quadratic():
    truth = _quadratic()
    p1, p2 = _quadratic_points(truth, 400)
    p2 = p2 + np.random.default_rng(5).normal(0, 0.5, p2.shape)
    choice = F.choose_model(p1, p2)
    assert choice.model == "quadratic"
    assert choice.held_out["quadratic"] < 0.9 * choice.held_out["homography"]


def test_too_few_points_keep_the_simplest_model():
    p1, p2 = _quadratic_points(_quadratic(), 20)
    assert F.choose_model(p1, p2) == F.ModelChoice("homography", {})


@pytest.mark.parametrize("transform", _every_model(), ids=lambda t: t.model)
def test_in_original_pixels_composes_the_resizes(transform):
    f1, f2 = (0.5, 0.51), (0.49, 0.5)
    original = transform.in_original_pixels(f1, f2)
    p = np.random.default_rng(6).uniform(0, 1500, (30, 2))
    via_resized = transform.apply(transform_points(scaling(*f1), p))
    expected = transform_points(np.linalg.inv(scaling(*f2)), via_resized)
    np.testing.assert_allclose(original.apply(p), expected, atol=1e-8)


def test_quadratic_homography_approximates_it():
    q = _quadratic()
    H = q.homography()
    grid = np.random.default_rng(7).uniform(100, 700, (50, 2))
    err = np.linalg.norm(transform_points(H, grid) - q.apply(grid), axis=1)
    assert np.median(err) < 0.05 * 250  # close over the fitted region, not exact


def test_bad_arguments():
    with pytest.raises(ValueError, match="matrix"):
        T.ProjectiveTransform(np.eye(2))
    with pytest.raises(ValueError, match="model"):
        T.ProjectiveTransform(np.eye(3), "quadratic")
    with pytest.raises(ValueError, match="points1"):
        T.homography_transform(np.eye(3)).apply(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="dsize"):
        T.homography_transform(np.eye(3)).warp(np.zeros((4, 4)), (0, 4))
    with pytest.raises(ValueError, match="scale1"):
        T.QuadraticTransform(COEF, (0, 0), (0.0, 1.0), (0, 0), (1.0, 1.0), (0, 0, 1, 1))


@given(
    seed=st.integers(0, 2**16),
    rows=st.integers(1, 300),
    cols=st.integers(1, 8),
    rhs=st.sampled_from([None, 1, 2]),
    drop=st.booleans(),
)
def test_least_squares_svd_equals_lstsq(seed: int, rows: int, cols: int, rhs, drop: bool) -> None:
    """The SVD least squares give lstsq's solution (to rounding) and its rank, also for
    rank-deficient and wide matrices."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(rows, cols)) * rng.uniform(0.1, 100.0, size=cols)
    if drop and cols > 1:
        a[:, -1] = 3.0 * a[:, 0]  # one column a multiple of another
    b = rng.normal(size=rows if rhs is None else (rows, rhs))
    x0, _, rank0, _ = np.linalg.lstsq(a, b, rcond=None)
    x1, rank1 = F.least_squares_svd(a, b)
    assert rank1 == rank0
    assert x1.shape == x0.shape
    np.testing.assert_allclose(x1, x0, rtol=1e-7, atol=1e-9 * max(1.0, np.abs(x0).max()))
