"""The eye-model generator: exact geometry, rendering that agrees with it, presets."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fundusfeat.evaluation.eye import (
    EYE_PRESETS,
    EyeRange,
    eye_geometry,
    eye_pairs,
    make_eye_pair,
    render_second_image,
)
from fundusfeat.evaluation.metrics import pair_error
from fundusfeat.features.fov import estimate_fov

from .conftest import NO_PHOTO


@pytest.fixture(scope="module")
def fov(demo_pair):
    return estimate_fov(demo_pair[0])


@given(
    x=st.floats(100, 660),
    y=st.floats(100, 660),
    seed=st.integers(0, 1000),
)
def test_maps_are_inverse_of_each_other(fov, x, y, seed):
    geometry = eye_geometry(fov, np.random.default_rng(seed), EYE_PRESETS["eye"])
    p1 = np.array([[x, y]])
    p2 = geometry.map_1_to_2(p1)
    if np.isfinite(p2).all():
        np.testing.assert_allclose(geometry.map_2_to_1(p2), p1, atol=1e-6)


def test_camera_projection_and_rays_agree(fov):
    geometry = eye_geometry(fov, np.random.default_rng(0), EYE_PRESETS["eye-hard"])
    cam = geometry.camera2
    pixels = np.random.default_rng(1).uniform(100, 600, (50, 2))
    points = cam.centre + 7.0 * cam.rays(pixels)
    np.testing.assert_allclose(cam.project(points), pixels, atol=1e-6)


def test_identity_camera_is_the_identity(fov):
    still = dataclasses.replace(
        EYE_PRESETS["eye"],
        eye=EyeRange(lateral_mm=0, axial_mm=0, rotation_deg=0, roll_deg=0, distortion=(0.1, 0.1)),
    )
    geometry = eye_geometry(fov, np.random.default_rng(0), still)
    p = np.random.default_rng(2).uniform(100, 600, (20, 2))
    np.testing.assert_allclose(geometry.map_1_to_2(p), p, atol=1e-6)


def test_rendering_agrees_with_the_control_points(demo_pair, fov):
    """Image 2 warped back with the true map is image 1 over the overlap."""
    image = demo_pair[0]
    geometry = eye_geometry(fov, np.random.default_rng(3), EYE_PRESETS["eye"])
    image2 = render_second_image(image, fov, geometry)
    h, w = fov.mask.shape
    ys, xs = np.mgrid[0:h, 0:w]
    p1 = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    p2 = geometry.map_1_to_2(p1).astype(np.float32)
    p2[~np.isfinite(p2)] = -1e6
    back = cv2.remap(image2, p2[:, 0].reshape(h, w), p2[:, 1].reshape(h, w), cv2.INTER_LINEAR)
    inner = cv2.erode(fov.mask.astype(np.uint8), np.ones((31, 31), np.uint8)) > 0
    seen = cv2.remap(
        inner.astype(np.float32), p2[:, 0].reshape(h, w), p2[:, 1].reshape(h, w), cv2.INTER_NEAREST
    )
    both = inner & (seen > 0.5)
    assert both.mean() > 0.2
    diff = np.abs(back[both] - image[both].astype(np.float32) / 255.0)
    assert np.median(diff) < 2.0 / 255 and np.mean(diff) < 4.0 / 255


@pytest.mark.parametrize("preset", sorted(EYE_PRESETS))
def test_pair_is_reproducible_with_exact_points(demo_pair, preset):
    spec = dataclasses.replace(EYE_PRESETS[preset], photo=NO_PHOTO)
    a = make_eye_pair(demo_pair[0], spec, 11)
    b = make_eye_pair(demo_pair[0], spec, 11)
    np.testing.assert_array_equal(a.image2, b.image2)
    np.testing.assert_array_equal(a.points_moving, b.points_moving)
    assert a.overlap >= spec.min_overlap and len(a.points_fixed) == spec.num_points
    np.testing.assert_allclose(a.geometry.map_1_to_2(a.points_fixed), a.points_moving)
    # the images agree at the control points (vessel patches around them correlate)
    for (x1, y1), (x2, y2) in zip(a.points_fixed[:3], a.points_moving[:3], strict=True):
        p1 = cv2.getRectSubPix(a.image1, (21, 21), (x1, y1)).astype(float)
        p2 = cv2.getRectSubPix(a.image2, (21, 21), (x2, y2)).astype(float)
        assert np.abs(p1 - p2).mean() < 12


def test_no_homography_fits_an_eye_pair_exactly(demo_pair):
    pair = make_eye_pair(demo_pair[0], EYE_PRESETS["eye"], 0)
    oracle = pair_error(pair.H_oracle, pair.points_fixed, pair.points_moving)
    assert 0.3 < oracle < 50  # the best homography still misses (a curved retina)


def test_benchmark_pairs(image_path):
    pairs = eye_pairs([image_path], "eye", 3, seed=2)
    again = eye_pairs([image_path], EYE_PRESETS["eye"], 3, seed=2)
    assert [p.name for p in pairs] == ["eye000", "eye001", "eye002"]
    for p, q in zip(pairs, again, strict=True):
        assert p.H_true is None and p.H_oracle.shape == (3, 3)
        np.testing.assert_array_equal(p.points_moving, q.points_moving)
    img1, img2 = pairs[0].load()
    assert img1.shape == img2.shape and img1.dtype == np.uint8
    with pytest.raises(ValueError, match="preset"):
        eye_pairs([image_path], "eyes", 1)
    with pytest.raises(ValueError, match="num_pairs"):
        eye_pairs([image_path], "eye", 0)
