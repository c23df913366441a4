"""Comparison of visits: a painted spot is found at its place, a failure gives no map."""

import cv2
import numpy as np

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
