"""Shared fixtures: a small real fundus image, synthetic circular-FOV images, detectors.

Every image comes from the package itself (``fundusfeat/data``) or is made by a test, so
a fresh clone runs the whole suite without ``../shared``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

from fundusfeat import R2D2Fundus
from fundusfeat.features import models
from fundusfeat.io.demo import load_demo_pair
from fundusfeat.io.user_cache import ENV_CACHE_DIR
from fundusfeat.training.warps import PhotoRange

NO_PHOTO = PhotoRange(
    gamma=(1, 1),
    gain=(1, 1),
    contrast=(1, 1),
    color=0.0,
    hue_deg=0.0,
    saturation=(1, 1),
    illumination=0.0,
    blur_sigma=0.0,
    noise_sigma=0.0,
)
"""No photometric change at all: tests that compare geometry exactly."""

PACKAGE_DATA = Path(__file__).resolve().parents[1] / "fundusfeat" / "data"
"""The embedded demo pair (retina_a.jpg, retina_b.jpg: skimage's CC0 retina photograph)."""

settings.register_profile(
    "fundusfeat",
    deadline=None,
    max_examples=10,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile("fundusfeat")


def pytest_configure(config: pytest.Config) -> None:
    """The user's cache dir of every test (and of the commands they start) is a folder of
    the run's own, removed at the end: the suite leaves nothing in the home or the system
    temporary folder."""
    config._fundusfeat_cache = tempfile.mkdtemp(prefix="fundusfeat-tests-cache-")
    os.environ[ENV_CACHE_DIR] = config._fundusfeat_cache


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = getattr(config, "_fundusfeat_cache", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu``-marked tests when CUDA is not available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def demo_pair() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The embedded demo pair ``(img1, img2, H_true)`` (768 x 768 BGR uint8)."""
    return load_demo_pair()


@pytest.fixture(scope="session")
def retina(demo_pair: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """The package's demo image 1 (a real fundus photograph) resized to 384x384, BGR uint8."""
    return cv2.resize(demo_pair[0], (384, 384), interpolation=cv2.INTER_AREA)


def synthetic_fundus(
    width: int,
    height: int,
    diameter: float,
    center: tuple[float, float] | None = None,
    brightness: float = 1.0,
    seed: int = 0,
) -> np.ndarray:
    """Orange disc with random dark 'vessels' on a black background, BGR uint8.

    The disc may be clipped by the image (``diameter > height``).
    """
    rng = np.random.default_rng(seed)
    cx, cy = center if center is not None else ((width - 1) / 2, (height - 1) / 2)
    img = np.zeros((height, width, 3), np.uint8)
    shift = 4
    c = (round(cx * 2**shift), round(cy * 2**shift))
    cv2.circle(img, c, round(diameter / 2 * 2**shift), (40, 90, 200), -1, cv2.LINE_AA, shift)
    inside = img[..., 2] > 0
    for _ in range(40):
        p = rng.uniform([0, 0], [width, height], size=(2, 2)).astype(int)
        cv2.line(img, tuple(map(int, p[0])), tuple(map(int, p[1])), (20, 40, 110), 3)
    img[~inside] = 0
    noise = rng.normal(0, 3, img.shape)
    return np.clip((img + noise * inside[..., None]) * brightness, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def make_fundus() -> Callable[..., np.ndarray]:
    """Factory for :func:`synthetic_fundus` images."""
    return synthetic_fundus


DEFAULT_MODEL = models.default_model("cpu")
"""The default model (shipped, trained weights) the detector fixtures use."""


@pytest.fixture(scope="session")
def detector() -> R2D2Fundus:
    """Small, fast CPU detector with the default model and thresholds."""
    return R2D2Fundus.create(
        model=DEFAULT_MODEL, device="cpu", target_diameter=256, max_keypoints=500
    )


@pytest.fixture(scope="session")
def dense_detector() -> R2D2Fundus:
    """CPU detector with zero thresholds: many keypoints on any image."""
    return R2D2Fundus.create(
        model=DEFAULT_MODEL,
        device="cpu",
        target_diameter=192,
        max_keypoints=300,
        rep_thr=0.0,
        rel_thr=0.0,
    )


@pytest.fixture(scope="session")
def image_path(tmp_path_factory: pytest.TempPathFactory, retina: np.ndarray) -> Path:
    """:func:`retina` written to a PNG file."""
    path = tmp_path_factory.mktemp("images") / "fundus.png"
    cv2.imwrite(str(path), retina)
    return path
