"""Computed once, carried through: a montage of N fields and a series of N visits detect
each image once and estimate each field of view once; the public contract is exported."""

from __future__ import annotations

import importlib

import cv2
import numpy as np
import pytest

import fundusfeat
from fundusfeat.evaluation.fields import make_field_set
from fundusfeat.features import fov as fov_module
from fundusfeat.io.arrays import resize_long_side
from fundusfeat.io.demo import load_demo_pair
from fundusfeat.pipeline.changes import compare_series

CONTRACT = (
    "R2D2Fundus",
    "FundusMatcher",
    "estimate_projective",
    "register",
    "register_many",
    "register_dataset",
    "montage",
    "compare",
    "RegistrationResult",
    "MontageResult",
    "ComparisonResult",
    "Transform",
)
"""ARCHITECTURE.md's public contract: names, and the result types they return."""


def test_all_is_exact():
    names = fundusfeat.__all__
    assert len(names) == len(set(names)), [n for n in names if names.count(n) > 1]
    for name in names:
        assert hasattr(fundusfeat, name), name
    assert set(CONTRACT) <= set(names), set(CONTRACT) - set(names)
    module = importlib.import_module("fundusfeat")
    star: dict = {}
    exec("from fundusfeat import *", star)  # noqa: S102 - what a user's star import gets
    assert {n for n in star if not n.startswith("__")} | {"__version__"} == set(names)
    assert module.__version__


@pytest.fixture
def counts(monkeypatch):
    """``{"fov": estimates, "detect": images through the network}`` while a test runs."""
    seen = {"fov": 0, "detect": 0}
    component = fov_module._foreground_component

    def counting_fov(*args, **kwargs):
        seen["fov"] += 1
        return component(*args, **kwargs)

    monkeypatch.setattr(fov_module, "_foreground_component", counting_fov)
    return seen


def _count_detections(monkeypatch, det, seen):
    extract = det.core.extract

    def counting(prepared):
        seen["detect"] += len(prepared)
        return extract(prepared)

    monkeypatch.setattr(det.core, "extract", counting)


def test_montage_detects_and_finds_each_fov_once(monkeypatch, counts, retina):
    images = make_field_set(resize_long_side(retina, 384)[0], "cross5", 0).images[:4]
    det = fundusfeat.R2D2Fundus.create(device="cpu", target_diameter=256, max_keypoints=500)
    _count_detections(monkeypatch, det, counts)
    counts["fov"] = 0  # the field set's own estimate
    result = fundusfeat.montage(images, detector=det)
    assert sum(t is not None for t in result.transforms) >= 3
    assert counts == {"fov": 4, "detect": 4}


def test_series_detects_and_finds_each_fov_once(monkeypatch, counts):
    img1, img2, _ = load_demo_pair()
    shift = np.array([[1.0, 0, 9], [0, 1, -6], [0, 0, 1]])
    img3 = cv2.warpPerspective(img2, shift, img2.shape[1::-1])
    img4 = cv2.warpPerspective(img1, shift, img1.shape[1::-1])
    det = fundusfeat.R2D2Fundus.create(max_keypoints=1500)
    _count_detections(monkeypatch, det, counts)
    results = compare_series([img1, img2, img3, img4], detector=det)
    assert all(r.success for r in results), [r.reason for r in results]
    assert counts == {"fov": 4, "detect": 4}


def test_compare_finds_each_fov_once(monkeypatch, counts):
    img1, img2, _ = load_demo_pair()
    det = fundusfeat.R2D2Fundus.create(max_keypoints=1500)
    _count_detections(monkeypatch, det, counts)
    assert fundusfeat.compare(img1, img2, detector=det).success
    assert counts == {"fov": 2, "detect": 2}


def test_transform_model_keyword_and_its_deprecated_name(demo_pair, detector):
    """``transform_model=`` chooses the transform; ``model=`` (the network's name in
    R2D2Fundus.create) still works for register/montage/compare, with a warning."""
    from fundusfeat.pipeline.register import make_options

    img1, img2, _ = demo_pair
    res = fundusfeat.register(img1, img2, detector=detector, transform_model="homography")
    assert res.transform is None or res.transform.model == "homography"
    with pytest.warns(DeprecationWarning, match="transform_model"):
        old = fundusfeat.register(img1, img2, detector=detector, model="homography")
    assert old.success == res.success and old.confidence == res.confidence
    with pytest.warns(DeprecationWarning):
        assert make_options("compare", model="quadratic").transform_model == "quadratic"
    with pytest.raises(TypeError, match="transform_model only"):
        fundusfeat.register(
            img1, img2, detector=detector, model="homography", transform_model="quadratic"
        )
    with pytest.raises(TypeError, match="unexpected"):
        fundusfeat.register(img1, img2, detector=detector, modle="homography")
    with pytest.raises(ValueError, match="transform_model"):
        fundusfeat.montage([img1, img2], detector=detector, transform_model="cubic")
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="transform_model"):
        fundusfeat.montage([img1, img2], detector=detector, model="cubic")
