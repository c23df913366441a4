"""The embedded demo pair: loadable, reproducible from make_demo_pair, licence noted."""

from __future__ import annotations

from importlib import resources

import cv2
import numpy as np
import pytest

from fundusfeat.evaluation.demo_pair import demo_homography, make_demo_pair
from fundusfeat.evaluation.metrics import mean_corner_error
from fundusfeat.io.demo import DEMO_SIZE, load_demo_pair

DATA = resources.files("fundusfeat") / "data"


@pytest.fixture(scope="module")
def pair():
    return load_demo_pair()


def test_load_shapes_and_types(pair):
    img1, img2, H = pair
    assert img1.shape == img2.shape == (DEMO_SIZE, DEMO_SIZE, 3)
    assert img1.dtype == img2.dtype == np.uint8
    assert H.shape == (3, 3) and H.dtype == np.float64
    assert np.all(np.isfinite(H)) and H[2, 2] == pytest.approx(1.0)


def test_regenerating_gives_the_stored_homography(pair):
    img1, img2, H_stored = pair
    a, b, H = make_demo_pair(img1)
    np.testing.assert_array_equal(a, img1)  # already at DEMO_SIZE: no resize
    np.testing.assert_allclose(H, H_stored, rtol=0, atol=1e-12)
    # b differs from the stored view B only by JPEG compression (applied twice here)
    assert np.abs(b.astype(float) - img2.astype(float)).mean() < 3.0


def test_view_a_is_the_source_resized_to_demo_size(pair):
    """A larger source is brought down to DEMO_SIZE (the shipped view A came from the
    1411 px retina.jpg this way); the round trip through an enlargement stays close."""
    big = cv2.resize(pair[0], (1411, 1411), interpolation=cv2.INTER_CUBIC)
    a, _, _ = make_demo_pair(big)
    assert a.shape == pair[0].shape
    assert np.abs(a.astype(float) - pair[0].astype(float)).mean() < 2.0


def test_warp_is_moderate():
    H = demo_homography(DEMO_SIZE, DEMO_SIZE)
    moved = mean_corner_error(H, np.eye(3), DEMO_SIZE, DEMO_SIZE)
    assert 20.0 < moved < 0.25 * DEMO_SIZE


def test_view_b_is_view_a_warped(pair):
    """Warping A by H lands its vessels on B's: the green channels correlate strongly."""
    img1, img2, H = pair
    warped = cv2.warpPerspective(img1, H, (DEMO_SIZE, DEMO_SIZE))
    inside = warped[..., 1] > 20
    corr = np.corrcoef(warped[..., 1][inside], img2[..., 1][inside])[0, 1]
    shifted = np.corrcoef(np.roll(warped[..., 1], 8, 1)[inside], img2[..., 1][inside])[0, 1]
    assert corr > 0.9 and corr > shifted


@pytest.mark.parametrize(
    "bad", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32), [[0]]]
)
def test_make_demo_pair_rejects_bad_input(bad):
    with pytest.raises(ValueError, match="image"):
        make_demo_pair(bad)


def test_mean_corner_error_known_answer():
    shift = np.array([[1.0, 0, 3], [0, 1, 4], [0, 0, 1]])
    assert mean_corner_error(np.eye(3), np.eye(3), 100, 50) == 0.0
    assert mean_corner_error(shift, np.eye(3), 100, 50) == pytest.approx(5.0)


def test_data_files_are_small_and_licensed():
    names = ("retina_a.jpg", "retina_b.jpg", "demo_pair.json")
    total = sum(len(DATA.joinpath(name).read_bytes()) for name in names)
    assert total < 400_000
    readme = DATA.joinpath("README.md").read_text(encoding="utf-8")
    assert "CC0" in readme and "make_demo_pair" in readme
