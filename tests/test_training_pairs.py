"""Training pairs: exact correspondence, crop rules, reproducibility."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fundusfeat.geometry.homography import transform_points
from fundusfeat.training.pairs import PairSampler, TrainImage, load_train_image
from fundusfeat.training.warps import PhotoRange, WarpRange

from .conftest import NO_PHOTO, PACKAGE_DATA, synthetic_fundus


def _sampler(seed: int = 0, photo: PhotoRange = NO_PHOTO, crop: int = 96) -> PairSampler:
    img = synthetic_fundus(400, 360, 380, seed=3)
    fov = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) > 0
    return PairSampler(
        [TrainImage(img, fov, "synthetic")],
        crop=crop,
        scale_range=(0.5, 1.0),
        min_fov_fraction=0.7,
        min_overlap=0.5,
        warp=WarpRange(),
        photo=photo,
        seed=seed,
    )


@given(seed=st.integers(0, 10_000))
def test_flow_is_exact(seed: int) -> None:
    """Warping crop 1 by H reproduces crop 2 (no photometric change) where both are defined."""
    c1, c2, f1, f2, H = _sampler(seed).sample()
    warped = cv2.warpPerspective(c1, H, c1.shape[1::-1], flags=cv2.INTER_LINEAR)
    inside = cv2.warpPerspective(f1.astype(np.uint8), H, c1.shape[1::-1]) > 0
    inside = cv2.erode(inside.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    inside &= cv2.erode(f2.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    if inside.sum() < 50:
        return
    err = np.abs(warped - c2)[inside].mean()
    assert err < 0.03  # interpolation only; a 1-px shift of the 'vessels' gives ~0.1


def _blob_centre(gray: np.ndarray, background: float) -> np.ndarray:
    """Intensity-weighted centre (x, y) of the blob around the brightest pixel."""
    y0, x0 = np.unravel_index(np.argmax(gray), gray.shape)
    ys, xs = np.mgrid[max(y0 - 8, 0) : y0 + 9, max(x0 - 8, 0) : x0 + 9]
    w = np.clip(gray[ys, xs] - background, 0, None)
    return np.array([np.sum(xs * w), np.sum(ys * w)]) / np.sum(w)


def test_point_correspondence_matches_pixels() -> None:
    """A Gaussian dot in crop 1 lands where H says in crop 2 (intensity centroids)."""
    yy, xx = np.mgrid[0:300, 0:300]
    dot = np.exp(-((xx - 150.3) ** 2 + (yy - 149.6) ** 2) / (2 * 2.5**2))
    img = np.repeat((80 + 175 * dot)[..., None], 3, axis=2).astype(np.float32) / 255
    s = PairSampler(
        [TrainImage(img, np.ones((300, 300), bool), "dot")],
        crop=128,
        scale_range=(1.0, 1.0),
        min_fov_fraction=0.7,
        min_overlap=0.5,
        warp=WarpRange(perspective=0.02),
        photo=NO_PHOTO,
        seed=1,
    )
    checked = 0
    for _ in range(30):
        c1, c2, _, _, H = s.sample()
        g1, g2 = c1[..., 0], c2[..., 0]
        peaks = [np.unravel_index(np.argmax(g), g.shape) for g in (g1, g2)]
        if min(g1.max(), g2.max()) < 0.9 or not all(9 <= v < 119 for p in peaks for v in p):
            continue
        p1, p2 = _blob_centre(g1, 80 / 255), _blob_centre(g2, 80 / 255)
        assert np.linalg.norm(transform_points(H, p1)[0] - p2) < 0.2
        checked += 1
    assert checked >= 3


def test_crop_rules_hold() -> None:
    s = _sampler(seed=5)
    for _ in range(10):
        _, _, f1, f2, H = s.sample()
        assert f1.mean() >= 0.6  # >= 70 % on a sparse grid; pixel fraction is close
        g = np.arange(4, 96, 8, dtype=float)
        pts = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
        q = np.round(transform_points(H, pts)).astype(int)
        ok = (q >= 0).all(1) & (q < 96).all(1)
        ok[ok] = f2[q[ok, 1], q[ok, 0]]
        assert ok.mean() >= 0.45


def test_reproducible_from_seed() -> None:
    photo = PhotoRange()
    a = _sampler(seed=7, photo=photo).batch(3)
    b = _sampler(seed=7, photo=photo).batch(3)
    c = _sampler(seed=8, photo=photo).batch(3)
    assert np.array_equal(a.image2.numpy(), b.image2.numpy())
    assert np.array_equal(a.H.numpy(), b.H.numpy())
    assert not np.array_equal(a.H.numpy(), c.H.numpy())


def test_batch_shapes_and_ranges() -> None:
    b = _sampler(photo=PhotoRange()).batch(2)
    assert b.image1.shape == (2, 3, 96, 96) and b.image1.dtype.is_floating_point
    assert b.valid2.shape == (2, 1, 96, 96)
    assert b.H.shape == (2, 3, 3)
    assert float(b.image1.min()) >= 0.0 and float(b.image2.max()) <= 1.0


def test_load_train_image_scales_fov_to_target() -> None:
    item = load_train_image(PACKAGE_DATA / "retina_a.jpg", target_diameter=300)
    width = item.fov.any(axis=0).sum()
    assert 280 <= width <= 310
    assert item.image.shape[:2] == item.fov.shape


def test_sampler_rejects_empty() -> None:
    with pytest.raises(ValueError, match="images"):
        PairSampler(
            [],
            crop=64,
            scale_range=(1, 1),
            min_fov_fraction=0.5,
            min_overlap=0.5,
            warp=WarpRange(),
            photo=NO_PHOTO,
            seed=0,
        )
