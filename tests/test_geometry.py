"""Tests for fundusfeat.geometry: estimate_projective and homography_is_plausible."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fundusfeat import estimate_projective
from fundusfeat.geometry.estimation import homography_is_plausible


def _project(H: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return cv2.perspectiveTransform(pts.reshape(-1, 1, 2).astype(np.float64), H).reshape(-1, 2)


def _mild_h(rng: np.random.Generator) -> np.ndarray:
    a = rng.uniform(-0.1, 0.1)
    s = rng.uniform(0.8, 1.25)
    H = np.array(
        [[s * np.cos(a), -s * np.sin(a), rng.uniform(-50, 50)],
         [s * np.sin(a), s * np.cos(a), rng.uniform(-50, 50)],
         [rng.uniform(-1e-4, 1e-4), rng.uniform(-1e-4, 1e-4), 1.0]]
    )  # fmt: skip
    return H


def _identity_matches(n: int) -> list[cv2.DMatch]:
    return [cv2.DMatch(i, i, 0.0) for i in range(n)]


class TestEstimateProjective:
    @given(seed=st.integers(0, 10_000), n=st.integers(4, 60))
    def test_recovers_noiseless_h(self, seed, n):
        rng = np.random.default_rng(seed)
        H = _mild_h(rng)
        p1 = rng.uniform(0, 500, (n, 2))
        p2 = _project(H, p1)
        est, inliers = estimate_projective(p1, p2, _identity_matches(n), ransac_threshold=1.0)
        if est is None:  # degenerate (near-collinear) random points
            return
        np.testing.assert_allclose(_project(est, p1), p2, atol=1e-2)
        assert inliers.shape == (n, 1) and inliers.dtype == np.uint8

    @pytest.mark.parametrize("method", ["ransac", "magsac", "lmeds"])
    def test_outliers_and_keypoint_input(self, method):
        rng = np.random.default_rng(0)
        H = _mild_h(rng)
        p1 = rng.uniform(0, 500, (100, 2))
        p2 = _project(H, p1)
        p2[:20] = rng.uniform(0, 500, (20, 2))
        k1 = tuple(cv2.KeyPoint(float(x), float(y), 8) for x, y in p1)
        k2 = tuple(cv2.KeyPoint(float(x), float(y), 8) for x, y in p2)
        est, inliers = estimate_projective(k1, k2, _identity_matches(100), 3.0, method=method)
        assert est is not None and est.dtype == np.float64 and est[2, 2] == pytest.approx(1)
        assert inliers[20:].all() and inliers.sum() <= 82
        np.testing.assert_allclose(est, H / H[2, 2], atol=1e-3)

    def test_deterministic(self):
        rng = np.random.default_rng(5)
        p1 = rng.uniform(0, 500, (60, 2))
        p2 = p1 + rng.normal(0, 2, p1.shape)
        runs = [estimate_projective(p1, p2, _identity_matches(60), 3.0, seed=7) for _ in range(2)]
        np.testing.assert_array_equal(runs[0][0], runs[1][0])
        np.testing.assert_array_equal(runs[0][1], runs[1][1])

    def test_too_few_matches(self):
        p = np.zeros((3, 2))
        H, inliers = estimate_projective(p, p, _identity_matches(3))
        assert H is None and inliers.shape == (3, 1) and not inliers.any()
        H, inliers = estimate_projective((), (), [])
        assert H is None and inliers.shape == (0, 1)

    @pytest.mark.parametrize(
        ("kwargs", "exc", "name"),
        [
            ({"kps1": np.zeros((5, 3))}, ValueError, "kps1"),
            ({"kps2": "abc"}, TypeError, "kps2"),
            ({"matches": [1, 2]}, TypeError, "matches"),
            ({"matches": [cv2.DMatch(0, 9, 0.0)] * 4}, ValueError, "trainIdx"),
            ({"method": "foo"}, ValueError, "method"),
            ({"ransac_threshold": -1.0}, ValueError, "ransac_threshold"),
        ],
    )
    def test_exceptions(self, kwargs, exc, name):
        args = {"kps1": np.zeros((5, 2)), "kps2": np.zeros((5, 2)), "matches": _identity_matches(5)}
        args.update(kwargs)
        with pytest.raises(exc, match=name):
            estimate_projective(**args)


class TestPlausible:
    def test_identity_and_mild(self):
        assert homography_is_plausible(np.eye(3)) == (True, "ok")
        assert homography_is_plausible(_mild_h(np.random.default_rng(0)), (800, 800))[0]

    @pytest.mark.parametrize(
        ("H", "reason"),
        [
            (None, "no homography"),
            (np.full((3, 3), np.nan), "finite"),
            (np.zeros((3, 3)), "singular"),
            (np.diag([10.0, 10.0, 1.0]), "scale"),
            (np.diag([0.1, 0.1, 1.0]), "scale"),
            (np.diag([-1.0, 1.0, 1.0]), "reflection"),
            (np.array([[1.0, 0, 0], [0, 1, 0], [-0.002, 0, 1]]), "infinity"),
        ],
    )
    def test_rejections(self, H, reason):
        ok, why = homography_is_plausible(H, (1000, 1000))
        assert not ok and reason in why

    def test_strong_but_real_perspective_is_no_reason_to_refuse(self):
        """Only sanity bounds: a camera tilted far (a true pair of the eye model) is
        judged by the verification's evidence, not by the shape of H."""
        tilted = np.array([[1.1, 0.3, 0], [-0.2, 0.9, 0], [0.0008, 0.0005, 1]])
        assert homography_is_plausible(tilted, (1000, 1000)) == (True, "ok")
