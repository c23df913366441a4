"""Comparison of visits: a painted spot is found at its place, a failure gives no map."""

import cv2
import numpy as np
import pytest

from fundusfeat.io.demo import load_demo_pair
from fundusfeat.pipeline.changes import compare


def test_a_new_dark_spot_is_found_where_it_was_painted():
    img1, img2, H = load_demo_pair()  # H maps image-1 pixels onto image 2
    spot1 = np.array([[img1.shape[1] * 0.4, img1.shape[0] * 0.55]])
    spot2 = cv2.perspectiveTransform(spot1[None].astype(np.float64), H)[0, 0]
    follow = img2.copy()
    cv2.circle(follow, (int(spot2[0]), int(spot2[1])), 10, (10, 10, 40), -1, cv2.LINE_AA)
    res = compare(img1, follow)
    assert res.success, res.reason
    assert res.change_mask.shape == img1.shape[:2]
    dists = [np.hypot(c.x - spot1[0, 0], c.y - spot1[0, 1]) for c in res.changes]
    assert dists and min(dists) < 8.0, dists
    near = [c for c in res.changes if np.hypot(c.x - spot1[0, 0], c.y - spot1[0, 1]) < 8.0]
    assert near[0].polarity == "darker"


def test_a_failed_registration_gives_no_change_map():
    img1, _, _ = load_demo_pair()
    noise = np.random.default_rng(0).integers(0, 255, img1.shape, dtype=np.uint8)
    res = compare(img1, noise)
    assert not res.success and res.reason
    assert res.change_mask is None


def test_a_series_detects_each_visit_once(monkeypatch):
    """Three visits: each image detected once (not once per pair): in one call, or one
    call per image when the images are detected side by side."""
    from fundusfeat import R2D2Fundus
    from fundusfeat.pipeline.changes import compare_series

    img1, img2, _ = load_demo_pair()
    det = R2D2Fundus.create(max_keypoints=1500)
    seen = []
    extract = det.core.extract

    def counting(prepared):
        seen.append(len(prepared))
        return extract(prepared)

    monkeypatch.setattr(det.core, "extract", counting)
    results = compare_series([img1, img2, img2.copy()], detector=det)
    assert seen == ([1, 1, 1] if det.core.shares_threads else [3])
    assert len(results) == 2 and all(r.success for r in results)


def test_a_chained_registration_carries_its_own_evidence():
    """Baseline -> previous -> visit: the chained result's matches join baseline and visit
    keypoints through the previous visit, and its transform explains them."""
    from fundusfeat.pipeline.changes import through_previous
    from fundusfeat.pipeline.register import register

    img1, img2, _ = load_demo_pair()
    shift = np.array([[1.0, 0, 12], [0, 1, -7], [0, 0, 1]])
    img3 = cv2.warpPerspective(img2, shift, img2.shape[1::-1])
    first, step = register(img1, img2), register(img2, img3)
    res = through_previous(first, step, img1.shape[:2])
    assert res is not None and res.success, res and res.reason
    assert res.confidence == pytest.approx(first.confidence * step.confidence)
    assert res.num_inliers >= 20 and res.reason.startswith("ok (through")
    p1 = np.array([res.keypoints1[m.queryIdx].pt for m in res.matches])
    p3 = np.array([res.keypoints2[m.trainIdx].pt for m in res.matches])
    inl = res.inliers[:, 0] > 0
    assert np.median(np.linalg.norm(res.transform.apply(p1[inl]) - p3[inl], axis=1)) < 1.5
    assert res.keypoints1 is first.keypoints1 and res.keypoints2 is step.keypoints2
