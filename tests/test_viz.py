"""fundusfeat.io.figures: figure helpers (shapes, conventions, known answers, bad input)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fundusfeat.geometry.warp import warp_to
from fundusfeat.io import figures as viz


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    return cv2.GaussianBlur(img, (0, 0), 2)


def _keypoints(points) -> tuple[cv2.KeyPoint, ...]:
    return tuple(cv2.KeyPoint(float(x), float(y), 4.0) for x, y in points)


@pytest.mark.parametrize(
    ("shape", "dtype"), [((20, 30), np.uint8), ((20, 30, 1), np.uint8), ((20, 30, 3), np.float32)]
)
def test_to_bgr_uint8(shape, dtype):
    img = np.full(shape, 1.0 if dtype == np.float32 else 255, dtype)
    out = viz.to_bgr_uint8(img)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8 and out.min() == 255


@pytest.mark.parametrize("bad", [np.zeros((0, 5)), np.zeros((4, 4, 2)), np.zeros(5)])
def test_to_bgr_uint8_rejects_bad_shapes(bad):
    with pytest.raises(ValueError, match="image"):
        viz.to_bgr_uint8(bad)


def test_to_bgr_uint8_rejects_non_arrays():
    with pytest.raises(TypeError, match="image"):
        viz.to_bgr_uint8([[1, 2]])


def test_warp_to_identity(image):
    np.testing.assert_array_equal(warp_to(image, np.eye(3), image.shape), image)


def test_warp_to_undoes_the_warp_that_h_describes(image):
    """img2 = img1 moved by H (H maps img1 points to img2); warp_to brings it back."""
    H = np.array([[1.0, 0.0, 5.0], [0.0, 1.0, -3.0], [0.0, 0.0, 1.0]])
    img2 = cv2.warpPerspective(image, H, (80, 60))
    back = warp_to(img2, H, image.shape)
    assert back.shape == image.shape
    np.testing.assert_array_equal(back[5:-5, 5:-8], image[5:-5, 5:-8])


def test_warp_to_output_size(image):
    assert warp_to(image, np.eye(3), (30, 40, 3)).shape == (30, 40, 3)


def test_warp_to_rejects_bad_h(image):
    with pytest.raises(ValueError, match="H"):
        warp_to(image, np.eye(2), image.shape)


def test_checkerboard_tiles(image):
    other = 255 - image
    out = viz.checkerboard(image, other, tiles=2)
    np.testing.assert_array_equal(out[:30, :40], image[:30, :40])
    np.testing.assert_array_equal(out[:30, 40:], other[:30, 40:])
    np.testing.assert_array_equal(out[30:, :40], other[30:, :40])
    np.testing.assert_array_equal(out[30:, 40:], image[30:, 40:])
    np.testing.assert_array_equal(viz.checkerboard(image, other, tiles=1), image)


def test_checkerboard_rejects_bad_input(image):
    with pytest.raises(ValueError, match="img2_warped"):
        viz.checkerboard(image, image[:10])
    with pytest.raises(ValueError, match="tiles"):
        viz.checkerboard(image, image, tiles=0)


def test_overlay_is_grey_where_images_agree(image):
    out = viz.overlay(image, image)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], out[..., 1])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_overlay_colours(image):
    black = np.zeros_like(image)
    out = viz.overlay(np.full_like(image, 200), black)
    assert out[..., 1].min() > 100 and out[..., 0].max() < 20 and out[..., 2].max() < 20


def _colour_count(img: np.ndarray, bgr) -> int:
    """Pixels dominated by the channel that dominates ``bgr`` (lines are anti-aliased)."""
    channel = int(np.argmax(bgr))
    others = np.delete(img, channel, axis=-1).max(axis=-1)
    return int(((img[..., channel] > 100) & (others < 50)).sum())


def test_draw_matches_colours_inliers_and_outliers():
    img1, img2 = np.zeros((50, 60), np.uint8), np.zeros((40, 70, 3), np.uint8)
    kps1, kps2 = _keypoints([(10, 10), (30, 40)]), _keypoints([(20, 5), (50, 30)])
    matches = [cv2.DMatch(0, 0, 0.1), cv2.DMatch(1, 1, 0.2)]
    inliers = np.array([[1], [0]], np.uint8)

    out = viz.draw_matches(img1, kps1, img2, kps2, matches, inliers)
    assert out.shape == (50, 130, 3) and out.dtype == np.uint8
    assert _colour_count(out, viz.INLIER_COLOR) > 0
    assert _colour_count(out, viz.OUTLIER_COLOR) > 0

    only = viz.draw_matches(img1, kps1, img2, kps2, matches, inliers, inliers_only=True)
    assert _colour_count(only, viz.INLIER_COLOR) > 0
    assert _colour_count(only, viz.OUTLIER_COLOR) == 0


def test_draw_matches_without_mask_or_matches():
    img = np.zeros((20, 20, 3), np.uint8)
    kps = _keypoints([(5, 5)])
    out = viz.draw_matches(img, kps, img, kps, [cv2.DMatch(0, 0, 0.0)])
    assert _colour_count(out, viz.INLIER_COLOR) > 0
    empty = viz.draw_matches(img, (), img, (), [], np.empty((0, 1), np.uint8))
    assert empty.shape == (20, 40, 3) and empty.max() == 0


def test_draw_matches_rejects_mask_of_wrong_length():
    img = np.zeros((20, 20), np.uint8)
    kps = _keypoints([(5, 5)])
    with pytest.raises(ValueError, match="inliers"):
        viz.draw_matches(img, kps, img, kps, [cv2.DMatch(0, 0, 0.0)], np.ones((2, 1)))


def test_draw_matches_max_draw_thins_evenly() -> None:
    from fundusfeat.io.figures import _thin

    assert _thin(list(range(10)), 3) == [0, 4, 9]  # linspace 0, 4.5, 9 rounded half to even
    assert _thin(list(range(3)), 5) == [0, 1, 2]
    with pytest.raises(ValueError, match="max_draw"):
        _thin([1], -1)


# ------------------------------------------------------------ legends and figure sizes
def test_with_legend_adds_a_readable_strip(image):
    out = viz.with_legend(image, "green: a | magenta: b")
    assert out.shape[1] == image.shape[1] and out.shape[0] > image.shape[0]
    np.testing.assert_array_equal(out[: image.shape[0]], image)
    strip = out[image.shape[0] :]
    assert strip.max() > 200 and np.median(strip) < 64  # white text on a dark strip
    wide = viz.with_legend(np.zeros((100, 3000, 3), np.uint8), "x" * 20)
    assert wide.shape[0] - 100 > out.shape[0] - image.shape[0]  # the font grows with width
    long = viz.with_legend(image, "a very long legend " * 20)  # shrunk to fit
    assert long.shape[1] == image.shape[1]


def test_draw_matches_max_side_shrinks_and_keeps_the_lines():
    img = np.zeros((1000, 1500, 3), np.uint8)
    kps = _keypoints([(100, 100), (1400, 900)])
    matches = [cv2.DMatch(0, 1, 0.1), cv2.DMatch(1, 0, 0.2)]
    out = viz.draw_matches(img, kps, img, kps, matches, max_side=600)
    assert out.shape == (200, 600, 3)
    assert _colour_count(out, viz.INLIER_COLOR) > 50  # lines drawn after shrinking
    assert viz.draw_matches(img, kps, img, kps, matches, max_side=5000).shape == (1000, 3000, 3)


class _Result:
    """The fields of a RegistrationResult the figures read."""

    def __init__(self, size: int, transform) -> None:
        self.keypoints1 = self.keypoints2 = _keypoints([(size / 3, size / 2), (size / 2, size / 3)])
        self.matches = [cv2.DMatch(0, 0, 0.1), cv2.DMatch(1, 1, 0.1)]
        self.inliers = np.array([[1], [0]], np.uint8)
        self.transform = transform


def test_registration_figures_of_a_large_pair_are_shrunk_but_the_crop_is_not():
    from fundusfeat.geometry.transforms import homography_transform

    size = 2912
    rng = np.random.default_rng(1)
    img = cv2.resize(rng.integers(0, 255, (91, 91, 3), dtype=np.uint8), (size, size))
    figures = viz.registration_figures(
        img, img, _Result(size, homography_transform(np.eye(3))), ("a.jpg", "b.jpg")
    )
    assert set(figures) == {"matches", "registered", "checkerboard", "overlay", "overlay_crop"}
    assert max(figures["matches"].shape[:2]) == viz.MAX_FIGURE_SIDE
    for name in ("registered", "checkerboard", "overlay"):
        assert figures[name].shape[1] == viz.MAX_FIGURE_SIDE, name
    assert figures["overlay_crop"].shape[1] == 512  # full resolution, not shrunk
    png = cv2.imencode(".png", figures["matches"])[1]
    assert png.nbytes < 8e6


def test_registration_figures_without_a_transform():
    img = np.zeros((64, 64, 3), np.uint8)
    figures = viz.registration_figures(img, img, _Result(64, None))
    assert list(figures) == ["matches"]
