"""Synthetic pairs: reproducible from the seed, control points exact, FOVs respected."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fundusfeat.evaluation import PRESETS, make_synthetic_pair, synthetic_pairs
from fundusfeat.features.fov import estimate_fov
from fundusfeat.geometry.homography import transform_points
from fundusfeat.io.images import expand_image_args


@pytest.mark.parametrize("preset", ["easy", "hard"])
def test_pair_is_reproducible_and_exact(retina, preset):
    a = make_synthetic_pair(retina, PRESETS[preset], 7)
    b = make_synthetic_pair(retina, PRESETS[preset], 7)
    c = make_synthetic_pair(retina, PRESETS[preset], 8)
    np.testing.assert_array_equal(a.image1, b.image1)
    np.testing.assert_array_equal(a.image2, b.image2)
    np.testing.assert_array_equal(a.H, b.H)
    assert not np.array_equal(a.H, c.H)
    assert a.image1.shape == a.image2.shape == retina.shape and a.image2.dtype == np.uint8
    np.testing.assert_allclose(a.points_moving, transform_points(a.H, a.points_fixed))
    assert a.overlap >= PRESETS[preset].min_overlap
    assert len(a.points_fixed) == PRESETS[preset].num_points


def test_points_inside_both_fovs_and_black_outside(retina):
    fov = estimate_fov(retina).mask
    for seed in range(4):
        pair = make_synthetic_pair(retina, PRESETS["hard"], seed)
        for pts in (pair.points_fixed, pair.points_moving):
            ij = np.round(pts).astype(int)
            assert np.all(fov[ij[:, 1], ij[:, 0]])
        assert not pair.image1[~fov].any() and not pair.image2[~fov].any()


def test_benchmark_pairs_reproducible(image_path, retina):
    pairs = synthetic_pairs([image_path], "easy", 3, seed=5)
    again = synthetic_pairs([image_path], PRESETS["easy"], 3, seed=5)
    other = synthetic_pairs([image_path], "easy", 3, seed=6)
    assert [p.name for p in pairs] == ["syn000", "syn001", "syn002"]
    assert {p.category for p in pairs} <= {"S", "P"}
    for p, q, r in zip(pairs, again, other, strict=True):
        np.testing.assert_array_equal(p.H_true, q.H_true)
        np.testing.assert_array_equal(p.points_fixed, q.points_fixed)
        assert not np.array_equal(p.H_true, r.H_true)
    img1, img2 = pairs[1].load()
    np.testing.assert_array_equal(img2, pairs[1].load()[1])
    assert img1.shape == retina.shape
    np.testing.assert_allclose(
        pairs[1].points_moving, transform_points(pairs[1].H_true, pairs[1].points_fixed)
    )


def test_benchmark_bad_arguments(image_path):
    with pytest.raises(ValueError, match="preset"):
        synthetic_pairs([image_path], "medium", 1)
    with pytest.raises(ValueError, match="num_pairs"):
        synthetic_pairs([image_path], "easy", 0)
    with pytest.raises(ValueError, match="images"):
        synthetic_pairs([], "easy", 1)


def test_image_lists(tmp_path, image_path):
    sub = tmp_path / "lists"
    sub.mkdir()
    (sub / "a.txt").write_text(f"# comment\n\n{image_path}  # trailing\n../other.png\n")
    (tmp_path / "other.png").write_bytes(image_path.read_bytes())
    paths = expand_image_args([sub / "a.txt", tmp_path])
    assert paths == [image_path.resolve(), (tmp_path / "other.png").resolve()]
    (sub / "b.txt").write_text("missing.png\n")
    with pytest.raises(FileNotFoundError, match="b.txt:1"):
        expand_image_args([sub / "b.txt"])
    with pytest.raises(FileNotFoundError, match="no such"):
        expand_image_args([tmp_path / "none.jpg"])


@pytest.mark.parametrize("scale", [0.4, 1.6])
def test_cross_resolution_pair_is_exact(image_path, scale):
    """Image 2 resized by ``scale``: its points and homography follow the resize exactly
    (the true transform still scores 0 px), image 1 and its points are unchanged."""
    from fundusfeat.evaluation.metrics import pair_error
    from fundusfeat.evaluation.pairs import rescale_moving
    from fundusfeat.geometry.transforms import homography_transform

    pair = synthetic_pairs([image_path], "easy", 1, seed=2)[0]
    cross = rescale_moving(pair, scale)
    (img1, img2), (cross1, cross2) = pair.load(), cross.load()
    np.testing.assert_array_equal(cross1, img1)
    np.testing.assert_array_equal(cross.points_fixed, pair.points_fixed)
    assert cross2.shape[:2] == tuple(round(n * scale) for n in img2.shape[:2])
    np.testing.assert_allclose(
        cross.points_moving, transform_points(cross.H_true, pair.points_fixed)
    )
    assert (
        pair_error(homography_transform(cross.H_true), cross.points_fixed, cross.points_moving)
        < 1e-6
    )
    # the content moved with the points: image 1 warped by the new H_true agrees with
    # image 2 as well as it did at scale 1 (the preset's photometric changes included)
    assert _agreement(img1, cross2, cross.H_true) > _agreement(img1, img2, pair.H_true) - 0.05
    assert rescale_moving(pair, 1.0) is pair
    with pytest.raises(ValueError, match="scale"):
        rescale_moving(pair, 0.0)


def _agreement(img1, img2, H):
    """Correlation of ``img1`` warped by ``H`` with ``img2`` where both have content."""
    size = img2.shape[1::-1]
    warped = cv2.warpPerspective(img1, H, size).astype(float)
    inside = cv2.warpPerspective(np.ones(img1.shape[:2], np.uint8), H, size) > 0
    inside &= img2.max(axis=2) > 0
    return np.corrcoef(warped[inside].ravel(), img2[inside].astype(float).ravel())[0, 1]
