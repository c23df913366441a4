"""Guided re-matching, the model choice in register(), and the verification's evidence."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from fundusfeat import register
from fundusfeat.evaluation.eye import EYE_PRESETS, make_eye_pair
from fundusfeat.evaluation.metrics import pair_error
from fundusfeat.geometry.guided import KeypointSet, guided_match, refine
from fundusfeat.geometry.homography import transform_points
from fundusfeat.geometry.transforms import homography_transform
from fundusfeat.geometry.verification import (
    CALIBRATION,
    FEATURES,
    Evidence,
    confidence,
    vessel_correlation,
    vessel_image,
    weakest_evidence,
)

H = np.array([[1.02, 0.05, -12.0], [-0.04, 0.98, 9.0], [3e-5, -2e-5, 1.0]])


def _synthetic_keypoints(n: int = 400, seed: int = 0):
    """Keypoints of image 1, their exact correspondents in image 2 (shuffled, with
    distractors), and unit descriptors that agree for true pairs."""
    rng = np.random.default_rng(seed)
    xy1 = rng.uniform(20, 780, (n, 2))
    desc1 = rng.standard_normal((n, 32)).astype(np.float32)
    desc1 /= np.linalg.norm(desc1, axis=1, keepdims=True)
    order = rng.permutation(n)
    xy2 = transform_points(H, xy1)[order]
    desc2 = desc1[order] + 0.05 * rng.standard_normal((n, 32)).astype(np.float32)
    extra = rng.uniform(20, 780, (100, 2))
    xy2 = np.vstack([xy2, extra])
    noise = rng.standard_normal((100, 32)).astype(np.float32)
    desc2 = np.vstack([desc2, noise / np.linalg.norm(noise, axis=1, keepdims=True)])
    desc2 /= np.linalg.norm(desc2, axis=1, keepdims=True)
    return xy1, desc1, xy2, desc2, order


def test_guided_match_finds_the_true_pairs():
    xy1, desc1, xy2, desc2, order = _synthetic_keypoints()
    rough = homography_transform(H @ np.array([[1, 0, 2.0], [0, 1, -1.5], [0, 0, 1]]))
    kp1, kp2 = KeypointSet.of(xy1, desc1), KeypointSet.of(xy2, desc2)
    query, train = guided_match(kp1, kp2, rough, radius=8.0)
    truth = np.empty(len(order), int)
    truth[order] = np.arange(len(order))
    assert len(query) > 0.95 * len(xy1)
    np.testing.assert_array_equal(train, truth[query])


@pytest.mark.parametrize("noise", [0.8, 1.2])
def test_guided_match_is_the_mutual_pairs_of_both_full_directions(noise):
    """The reverse search runs only for image-2 keypoints some image-1 keypoint chose;
    the pairs are those of searching every keypoint both ways (dense and noisy sets, so
    that many first choices are not mutual)."""
    rng = np.random.default_rng(3)
    xy1 = rng.uniform(0, 200, (2000, 2))
    xy2 = np.vstack(
        [transform_points(H, xy1) + rng.normal(0, 1.0, xy1.shape), rng.uniform(0, 200, (500, 2))]
    )
    desc1 = rng.standard_normal((2000, 16)).astype(np.float32)
    desc2 = np.vstack(
        [desc1 + noise * rng.standard_normal(desc1.shape), rng.standard_normal((500, 16))]
    )
    desc2 = desc2.astype(np.float32)
    kp1, kp2 = KeypointSet.of(xy1, desc1), KeypointSet.of(xy2, desc2)
    transform = homography_transform(H)
    to2 = kp2.nearest_in_window(transform.apply(xy1), kp1, 6.0, np.inf)
    to1 = kp1.nearest_in_window(transform.inverse(xy2), kp2, 6.0, np.inf)
    mutual = np.flatnonzero((to2 >= 0) & (to1[np.maximum(to2, 0)] == np.arange(len(xy1))))
    query, train = guided_match(kp1, kp2, transform, 6.0, np.inf)
    assert 100 < len(query) < (to2 >= 0).sum()
    np.testing.assert_array_equal(query, mutual)
    np.testing.assert_array_equal(train, to2[mutual])


def test_guided_match_distance_limit_refuses_lookalikes():
    """Around a wrong transform nothing looks like a match under the distance limit."""
    xy1, desc1, xy2, desc2, _ = _synthetic_keypoints()
    wrong = homography_transform(np.array([[1, 0, 60.0], [0, 1, 40.0], [0, 0, 1]]))
    kp1, kp2 = KeypointSet.of(xy1, desc1), KeypointSet.of(xy2, desc2)
    free = guided_match(kp1, kp2, wrong, radius=15.0)[0]
    limited = guided_match(kp1, kp2, wrong, radius=15.0, max_distance=0.05)[0]
    assert len(free) > 20 and len(limited) == 0


def test_refine_recovers_the_transform_and_keeps_the_homography():
    xy1, desc1, xy2, desc2, _ = _synthetic_keypoints()
    start = homography_transform(H @ np.array([[1, 0, 3.0], [0, 1, 2.0], [0, 0, 1]]))
    refined = refine(xy1, desc1, xy2, desc2, start, threshold=3.0, max_distance=0.3)
    assert refined.transform.model == "homography" and refined.choice.model == "homography"
    assert refined.num_inliers > 0.95 * len(xy1)
    grid = np.random.default_rng(1).uniform(50, 750, (50, 2))
    err = np.linalg.norm(refined.transform.apply(grid) - transform_points(H, grid), axis=1)
    assert err.max() < 0.01
    with pytest.raises(ValueError, match="model"):
        refine(xy1, desc1, xy2, desc2, start, 3.0, model="spline")


@pytest.fixture(scope="module")
def eye_pair(demo_pair):
    """An eye-model pair that no homography fits to better than 2 px."""
    for seed in range(20):
        pair = make_eye_pair(demo_pair[0], EYE_PRESETS["eye"], seed)
        if pair_error(pair.H_oracle, pair.points_fixed, pair.points_moving) > 2.0:
            return pair
    raise AssertionError("no eye pair with a 2 px oracle error in 20 seeds")


@pytest.fixture(scope="module")
def full_detector():
    """The default detector (the known-answer tests hold for its settings)."""
    from fundusfeat import R2D2Fundus

    return R2D2Fundus.create(device="cpu")


def test_register_chooses_the_quadratic_on_a_curved_retina(eye_pair, full_detector):
    """On an eye-model pair the chosen model beats the best homography that exists."""
    detector = full_detector
    auto = register(eye_pair.image1, eye_pair.image2, detector=detector)
    assert auto.success and auto.transform is not None
    error = pair_error(auto.transform, eye_pair.points_fixed, eye_pair.points_moving)
    oracle = pair_error(eye_pair.H_oracle, eye_pair.points_fixed, eye_pair.points_moving)
    assert auto.transform.model == "quadratic" and error < oracle
    homography = register(
        eye_pair.image1, eye_pair.image2, detector=detector, transform_model="homography"
    )
    assert homography.transform.model == "homography"
    assert error <= pair_error(homography.transform, eye_pair.points_fixed, eye_pair.points_moving)
    np.testing.assert_allclose(auto.H, auto.transform.homography())


def test_evidence_of_a_true_and_an_impossible_pair(demo_pair, detector):
    img1, img2, _ = demo_pair
    good = register(img1, img2, detector=detector)
    # 256 px and 500 keypoints: about 240 keypoints, inliers in 40% of the overlap's cells
    assert good.success and good.evidence.ncc > 0.5 and good.evidence.coverage > 0.3
    assert 0.0 <= good.confidence <= 1.0 and good.confidence >= 0.5
    other = np.ascontiguousarray(img2[::-1])  # the other image upside down: not this eye
    bad = register(img1, other, detector=detector)
    assert not bad.success and bad.H is None and bad.transform is None
    assert bad.confidence < 0.5


def test_vessel_correlation_known_answers(retina):
    v = vessel_image(retina)
    region = np.ones(retina.shape[:2], bool)
    identity = homography_transform(np.eye(3))
    assert vessel_correlation(v, v, region, region, identity) == pytest.approx(1.0)
    shifted = homography_transform(np.array([[1, 0, 25.0], [0, 1, 0], [0, 0, 1]]))
    assert vessel_correlation(v, v, region, region, shifted) < 0.3


def test_vessel_image_is_the_green_channels(retina):
    """Only the green channel is resized: the same map as the green channel given alone,
    as uint8 or float, and as a BGRA image's."""
    green = np.ascontiguousarray(retina[..., 1])
    ref, factors = vessel_image(retina)
    assert ref.dtype == np.float32 and max(ref.shape) == 384
    for image in (green, green[..., None], np.dstack([retina, green]), retina / 255.0):
        out, f = vessel_image(image)
        np.testing.assert_array_equal(out, ref)
        assert f == factors


def test_confidence_is_monotone_in_the_evidence():
    base = Evidence(200, 400, 0.5, 0.2, 0.7, 0.8, 0.3, 0.6)
    worse = Evidence(20, 400, 0.05, 0.01, 0.1, 0.8, 5.0, 0.0)
    assert 0 <= confidence(worse) < confidence(base) <= 1
    assert len(CALIBRATION.weights) == len(FEATURES) == len(base.features())
    assert CALIBRATION.source and "placeholder" not in CALIBRATION.source
    assert isinstance(weakest_evidence(worse), str)
    few = Evidence(9, 300, 0.03, 0.005, 0.05, 0.9, 100.0, 0.02)
    assert math.isfinite(confidence(few))


def test_threshold_is_the_callers(demo_pair, detector):
    img1, img2, _ = demo_pair
    strict = register(img1, img2, detector=detector, threshold=1.0)
    loose = register(img1, img2, detector=detector, threshold=0.0)
    assert loose.success and loose.confidence == strict.confidence
    assert strict.success == (strict.confidence >= 1.0)
    with pytest.raises(ValueError, match="threshold"):
        register(img1, img2, detector=detector, threshold=1.5)
    with pytest.raises(ValueError, match="model"), pytest.warns(DeprecationWarning):
        register(img1, img2, detector=detector, model="spline")


def test_sift_goes_through_the_same_pipeline(demo_pair):
    img1, img2, H_true = demo_pair
    res = register(img1, img2, detector=cv2.SIFT_create())
    assert res.success and res.transform is not None and res.evidence is not None
    corners = np.array([[0, 0], [767, 0], [767, 767], [0, 767]], float)
    err = np.linalg.norm(res.transform.apply(corners) - transform_points(H_true, corners), axis=1)
    assert err.mean() < 2.0
