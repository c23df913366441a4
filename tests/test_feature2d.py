"""Tests for fundusfeat.features.feature2d.R2D2Fundus: the cv2.Feature2D mirror."""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.spatial import cKDTree

from fundusfeat import R2D2Fundus
from fundusfeat.features import models

from .conftest import DEFAULT_MODEL


def _check_features(kps, desc, det):
    assert isinstance(kps, tuple) and all(isinstance(k, cv2.KeyPoint) for k in kps)
    assert isinstance(desc, np.ndarray) and desc.dtype == np.float32
    assert desc.shape == (len(kps), det.descriptorSize())
    if len(kps):
        np.testing.assert_allclose(np.linalg.norm(desc, axis=1), 1.0, atol=1e-5)


def _same(a, b):
    (k1, d1), (k2, d2) = a, b
    assert [k.pt for k in k1] == [k.pt for k in k2]
    assert [(k.size, k.response, k.octave) for k in k1] == [
        (k.size, k.response, k.octave) for k in k2
    ]
    np.testing.assert_array_equal(d1, d2)


class TestConformance:
    def test_smoke(self, detector, retina):
        kps, desc = detector.detectAndCompute(retina, None)
        _check_features(kps, desc, detector)
        assert 0 < len(kps) <= detector.getMaxKeypoints()

    def test_constants(self, detector):
        assert detector.descriptorSize() == 128
        assert detector.descriptorType() == cv2.CV_32F
        assert detector.defaultNorm() == cv2.NORM_L2
        assert detector.getDefaultName() == "Feature2D.R2D2Fundus"
        assert detector.empty() is False
        detector.clear()
        assert not detector.empty()

    def test_every_feature2d_method_exists(self, detector):
        public = [m for m in dir(cv2.Feature2D) if not m.startswith("_")]
        for name in public:
            assert callable(getattr(detector, name)), name

    def test_keypoint_fields(self, detector, retina):
        kps = detector.detect(retina)
        scales = {k.octave for k in kps}
        assert scales <= set(range(8))
        responses = [k.response for k in kps]
        assert responses == sorted(responses, reverse=True)
        for k in kps:
            assert k.size > 0 and 0 <= k.response <= 1 and k.angle == -1

    def test_default_untrained_thresholds_give_keypoints(self, detector, retina):
        assert len(detector.detect(retina)) > 0

    @pytest.mark.parametrize("value", [0, 128, 255])
    def test_blank_image_is_documented_empty(self, detector, value):
        kps, desc = detector.detectAndCompute(np.full((128, 160, 3), value, np.uint8), None)
        assert kps == () and desc.shape == (0, 128) and desc.dtype == np.float32
        assert detector.detect(np.full((64, 64), value, np.uint8)) == ()

    def test_empty_mask(self, detector, retina):
        kps, desc = detector.detectAndCompute(retina, np.zeros(retina.shape[:2], np.uint8))
        assert kps == () and desc.shape == (0, 128)

    def test_compute_empty_keypoints(self, detector, retina):
        kps, desc = detector.compute(retina, ())
        assert kps == () and desc.shape == (0, 128)

    def test_input_forms(self, dense_detector, retina):
        gray = cv2.cvtColor(retina, cv2.COLOR_BGR2GRAY)
        for img in (
            gray,
            retina.astype(np.float32) / 255,
            cv2.cvtColor(retina, cv2.COLOR_BGR2BGRA),
        ):
            _check_features(*dense_detector.detectAndCompute(img, None), dense_detector)


class TestBadInputs:
    @pytest.mark.parametrize(
        ("bad", "exc"),
        [
            (None, TypeError),
            (np.zeros((64, 64), np.int64), TypeError),
            (np.zeros((64, 64, 3, 2), np.uint8), ValueError),
            (np.zeros((1, 1), np.uint8), ValueError),
            (np.zeros((0, 64, 3), np.uint8), ValueError),
            (np.full((64, 64), np.nan, np.float32), ValueError),
        ],
    )
    def test_image(self, detector, bad, exc):
        with pytest.raises(exc, match="image"):
            detector.detectAndCompute(bad, None)
        with pytest.raises(exc, match="image"):
            detector.detect(bad)

    @pytest.mark.parametrize(
        ("bad", "exc"),
        [
            (np.zeros((10, 10), np.uint8), ValueError),
            (np.zeros((384, 384), np.float32), TypeError),
            (np.zeros((384, 384, 3), np.uint8), ValueError),
        ],
    )
    def test_mask(self, detector, retina, bad, exc):
        with pytest.raises(exc, match="mask"):
            detector.detectAndCompute(retina, bad)

    def test_compute_keypoints_type(self, detector, retina):
        with pytest.raises(TypeError, match="keypoints"):
            detector.compute(retina, np.zeros((3, 2)))

    @pytest.mark.parametrize(
        "kwargs",
        [{"max_keypoints": -1}, {"rep_thr": 2.0}, {"scale_f": 1.0}, {"min_scale": 0.0}],
    )
    def test_config(self, kwargs):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            R2D2Fundus.create(model=DEFAULT_MODEL, device="cpu", **kwargs)

    @pytest.mark.parametrize(
        ("kwargs", "exc", "name"),
        [
            ({"target_diameter": float("inf")}, ValueError, "target_diameter"),
            ({"target_diameter": float("nan")}, ValueError, "target_diameter"),
            ({"device": "gpu0"}, ValueError, "device"),
            ({"device": 3.5}, TypeError, "device"),
            ({"model": "vgg"}, ValueError, "model"),
            ({"weights": 7}, TypeError, "weights"),
            ({"nms_size": 4}, ValueError, "nms_size"),
            ({"rep_blur": -1.0}, ValueError, "rep_blur"),
            ({"rep_blur": float("nan")}, ValueError, "rep_blur"),
            ({"fov": "yes"}, TypeError, "fov"),
            ({"backend": "tensorrt"}, ValueError, "backend"),
        ],
    )
    def test_create_validates_every_argument(self, kwargs, exc, name):
        with pytest.raises(exc, match=name):
            R2D2Fundus.create(**kwargs)


class TestProperties:
    @given(
        x0=st.integers(0, 200),
        y0=st.integers(0, 200),
        w=st.integers(60, 184),
        h=st.integers(60, 184),
        max_kp=st.integers(1, 300),
    )
    def test_inside_mask_and_cardinality(self, dense_detector, retina, x0, y0, w, h, max_kp):
        mask = np.zeros(retina.shape[:2], np.uint8)
        mask[y0 : y0 + h, x0 : x0 + w] = 255
        dense_detector.setMaxKeypoints(max_kp)
        try:
            kps, desc = dense_detector.detectAndCompute(retina, mask)
        finally:
            dense_detector.setMaxKeypoints(300)
        _check_features(kps, desc, dense_detector)
        assert len(kps) <= max_kp
        pts = cv2.KeyPoint_convert(kps).reshape(-1, 2) if kps else np.zeros((0, 2))
        assert ((pts >= 0) & (pts <= np.array(retina.shape[1::-1]) - 1)).all()
        assert all(mask[int(round(y)), int(round(x))] for x, y in pts)

    @given(factor=st.sampled_from([0.5, 1.0, 1.5]))
    def test_keypoints_in_caller_coordinates(self, dense_detector, retina, factor):
        img = cv2.resize(retina, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        kps = dense_detector.detect(img)
        assert kps
        pts = cv2.KeyPoint_convert(kps)
        assert pts.max() <= img.shape[0] - 1 and pts.min() >= 0
        # size = 8 px / (pyramid scale * working scale), working scale = 192 / FOV diameter
        fov_px = 0.97 * 384 * factor
        sizes = [k.size for k in kps]
        assert 0.99 * 8 * fov_px / 192 <= min(sizes) <= max(sizes) <= 3.01 * 8 * fov_px / 192


class TestCompute:
    def test_compute_at_detected_keypoints(self, dense_detector, retina):
        kps, desc = dense_detector.detectAndCompute(retina, None)
        kps2, desc2 = dense_detector.compute(retina, kps)
        assert len(kps2) == len(kps)
        np.testing.assert_allclose(desc2, desc, atol=1e-4)
        kps3, desc3 = dense_detector.detectAndCompute(retina, None, None, True, keypoints=kps)
        np.testing.assert_array_equal(desc3, desc2)

    def test_outside_keypoints_removed(self, detector, retina):
        kps = (cv2.KeyPoint(100, 100, 8), cv2.KeyPoint(-20, 5, 8), cv2.KeyPoint(500, 5, 8))
        out, desc = detector.compute(retina, kps)
        assert len(out) == 1 and desc.shape == (1, 128)


class TestBatchPickleIO:
    def test_list_equals_single(self, dense_detector, retina):
        imgs = [retina, np.ascontiguousarray(retina[::-1]), np.full((64, 64), 9, np.uint8)]
        batch = dense_detector.detectAndCompute(imgs, None)
        assert isinstance(batch, list) and len(batch) == 3
        for img, res in zip(imgs, batch, strict=True):
            _same(res, dense_detector.detectAndCompute(img, None))
        kps_list = dense_detector.detect(imgs)
        assert [len(k) for k in kps_list] == [len(r[0]) for r in batch]

    def test_masks_list_length(self, dense_detector, retina):
        with pytest.raises(ValueError, match="masks"):
            dense_detector.detectAndCompute([retina, retina], [None])

    def test_pickle_round_trip(self, dense_detector, retina):
        clone = pickle.loads(pickle.dumps(dense_detector))
        assert clone.config == dense_detector.config and clone.model == dense_detector.model
        _same(clone.detectAndCompute(retina, None), dense_detector.detectAndCompute(retina, None))

    @pytest.mark.parametrize("ext", ["yml", "xml", "json"])
    def test_write_read(self, dense_detector, tmp_path, ext):
        path = str(tmp_path / f"det.{ext}")
        dense_detector.save(path)
        other = R2D2Fundus.create(model=DEFAULT_MODEL, device="cpu")
        other.read(path)
        assert other.config == dense_detector.config

    def test_read_reloads_the_weights(self, dense_detector, retina, tmp_path):
        """Settings that name other weights load them: the clone detects the same."""
        weights = tmp_path / "copy.pt"
        torch.save(dense_detector.core.state_dict, weights)
        source = R2D2Fundus.create(
            weights=weights, device="cpu", target_diameter=192, rep_thr=0.0, rel_thr=0.0
        )
        path = str(tmp_path / "det.yml")
        source.save(path)
        other = R2D2Fundus.create(model="r2d2", device="cpu", allow_untrained=True)  # other model
        other.read(path)
        assert other.model == DEFAULT_MODEL and other.config == source.config
        _same(other.detectAndCompute(retina, None), source.detectAndCompute(retina, None))

    def test_write_filestorage_node(self, dense_detector, tmp_path):
        path = str(tmp_path / "det.yml")
        fs = cv2.FileStorage(path, cv2.FILE_STORAGE_WRITE)
        dense_detector.write(fs, "detector")
        fs.release()
        other = R2D2Fundus.create(model=DEFAULT_MODEL, device="cpu")
        fs = cv2.FileStorage(path, cv2.FILE_STORAGE_READ)
        other.read(fs.getNode("detector"))
        fs.release()
        assert other.config == dense_detector.config


class TestInterop:
    def test_opencv_functions(self, dense_detector, retina):
        kps, desc = dense_detector.detectAndCompute(retina, None)
        matches = cv2.BFMatcher(dense_detector.defaultNorm(), crossCheck=True).match(desc, desc)
        assert len(matches) == len(kps)
        out = cv2.drawMatches(retina, kps, retina, kps, matches[:20], None)
        assert out.shape == (384, 768, 3)
        cv2.drawKeypoints(retina, kps, None, flags=cv2.DRAW_MATCHES_FLAGS_DRAW_RICH_KEYPOINTS)
        pts = cv2.KeyPoint_convert(kps)
        assert pts.shape == (len(kps), 2)
        H, _ = cv2.findHomography(pts, pts + 3.0, cv2.RANSAC, 3.0)
        np.testing.assert_allclose(H, [[1, 0, 3], [0, 1, 3], [0, 0, 1]], atol=1e-6)


@pytest.mark.gpu
def test_cpu_vs_cuda(retina):
    kw = {"model": DEFAULT_MODEL, "target_diameter": 256, "rep_thr": 0.0, "rel_thr": 0.0}
    cpu = R2D2Fundus.create(device="cpu", **kw).detectAndCompute(retina, None)
    gpu_det = R2D2Fundus.create(device="cuda", **kw)
    assert gpu_det.device.type == "cuda" and torch.cuda.is_available()
    gpu = gpu_det.detectAndCompute(retina, None)
    p_cpu, p_gpu = cv2.KeyPoint_convert(cpu[0]), cv2.KeyPoint_convert(gpu[0])
    common = min(len(p_cpu), len(p_gpu)) // 2  # top half: robust to near-tied scores
    assert abs(len(p_cpu) - len(p_gpu)) <= 0.05 * len(p_cpu)
    dist = np.linalg.norm(p_cpu[:common, None] - p_gpu[None, :], axis=2).min(axis=1)
    assert np.median(dist) < 0.05
    batch = gpu_det.detectAndCompute([retina, retina], None)
    assert len(batch[0][0]) == len(batch[1][0]) == len(gpu[0])


def test_model_defaults_fill_unset_settings() -> None:
    default = R2D2Fundus.create(model=DEFAULT_MODEL, device="cpu")
    assert default.config == models.get(DEFAULT_MODEL).defaults
    paper = R2D2Fundus.create(model="r2d2", device="cpu", allow_untrained=True)
    assert paper.config.target_diameter == 750.0 and paper.config.rel_thr == 0.7
    assert paper.config.min_scale == pytest.approx(1 / 3)
    mine = R2D2Fundus.create(model=DEFAULT_MODEL, device="cpu", rep_thr=0.9, target_diameter=None)
    assert mine.config.rep_thr == 0.9 and mine.config.target_diameter is None
    assert mine.config.rel_thr == models.get(DEFAULT_MODEL).defaults.rel_thr


def test_target_diameter_rejects_other_strings() -> None:
    with pytest.raises(ValueError, match="target_diameter"):
        R2D2Fundus.create(model=DEFAULT_MODEL, device="cpu", target_diameter="big")


def test_untrained_shipped_weights_are_refused_unless_asked_for(capsys) -> None:
    """A model whose shipped weights are a seeded placeholder is never run by accident:
    the library raises a ValueError saying so, the CLI exits 2 with that line."""
    from fundusfeat import cli

    untrained = [name for name, spec in models.MODELS.items() if not spec.trained]
    shipped = [n for n in untrained if models.MODELS[n].weights is not None]
    for name in shipped:
        with pytest.raises(ValueError, match="untrained"):
            R2D2Fundus.create(model=name, device="cpu")
        assert R2D2Fundus.create(model=name, device="cpu", allow_untrained=True).model == name
    if shipped:
        assert cli.main(["demo", "--model", shipped[0]]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "untrained" in err[0]


def test_the_input_type_does_not_change_the_keypoints(demo_pair) -> None:
    """One image as uint8, uint16 (x257) and float in [0, 1]: the same keypoints up to the
    rounding of 1/255 (before, a uint8 image was resized in integers: 13-37 % of its
    keypoints moved and the counts differed)."""
    det = R2D2Fundus.create(model=DEFAULT_MODEL, device="cpu", target_diameter=384)
    img = demo_pair[0]
    ref = det.core.extract([det.core.prepare(img, None)])[0]
    assert len(ref.xy) > 200
    for other in (img.astype(np.uint16) * 257, img.astype(np.float32) / 255, img / 255.0):
        f = det.core.extract([det.core.prepare(other, None)])[0]
        assert len(f.xy) == len(ref.xy), other.dtype
        dist, nearest = cKDTree(ref.xy).query(f.xy)  # the order of near-ties may change
        assert dist.max() < 0.01, other.dtype
        assert np.abs(f.desc - ref.desc[nearest]).max() < 1e-3, other.dtype


def test_one_working_scale_for_every_image_size(demo_pair) -> None:
    """A copy at 0.6x is enlarged back to the working scale: the network sees the same
    retina, ``KeyPoint.size`` follows the image (x 0.6) and the keypoints repeat (kept
    at their own size, the copy gave 8-px keypoints on a 0.6x retina: OpenCV's scale
    protocol found none of them again)."""
    det = R2D2Fundus.create(model=DEFAULT_MODEL, device="cpu", target_diameter=384)
    img = cv2.resize(demo_pair[0], (400, 400), interpolation=cv2.INTER_AREA)
    small = cv2.resize(img, (240, 240), interpolation=cv2.INTER_AREA)
    prep, prep_small = det.core.prepare(img, None), det.core.prepare(small, None)
    # the same working size (up to the scale tolerance: img itself is not resampled)
    assert abs(prep_small.tensor.shape[-1] / prep.tensor.shape[-1] - 1) < 0.05
    kps, kps_small = det.detect(img), det.detect(small)
    assert len(kps) > 100 and len(kps_small) > 100
    size, size_small = np.median([k.size for k in kps]), np.median([k.size for k in kps_small])
    assert size_small / size == pytest.approx(0.6, rel=0.05)  # img: within the tolerance
    pts_small = (cv2.KeyPoint_convert(kps_small) + 0.5) / 0.6 - 0.5  # in img's pixels
    dist, _ = cKDTree(cv2.KeyPoint_convert(kps)).query(pts_small)
    assert np.mean(dist < 2.0) > 0.6
    kept = R2D2Fundus.create(
        model=DEFAULT_MODEL, device="cpu", target_diameter=384, max_upscale=1.0
    ).detect(small)
    assert np.median([k.size for k in kept]) == pytest.approx(size, rel=0.03)
