"""FIRE loader and runner on a FIRE-format directory built from synthetic pairs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from fundusfeat.evaluation import (
    PRESETS,
    load_fire,
    make_registrar,
    make_synthetic_pair,
    read_control_points,
    register_pair,
    run_evaluation,
    summarize,
)
from fundusfeat.geometry.homography import scaling
from fundusfeat.io.demo import load_demo_pair

NAMES = ("A01", "P02", "S01")


def _oracle(H: np.ndarray, size1: tuple[int, int], size2: tuple[int, int]):
    """A perfect method: the true H, expressed at whatever size the images arrive."""

    def register(img1: np.ndarray, img2: np.ndarray) -> SimpleNamespace:
        s1 = scaling(img1.shape[1] / size1[0], img1.shape[0] / size1[1])
        s2 = scaling(img2.shape[1] / size2[0], img2.shape[0] / size2[1])
        H_work = s2 @ H @ np.linalg.inv(s1)
        return SimpleNamespace(H=H_work, success=True, reason="ok", matches=[], num_inliers=0)

    return register


@pytest.fixture(scope="module")
def fire_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """Images/ and Ground Truth/ with three easy synthetic pairs at 512 px."""
    root = tmp_path_factory.mktemp("FIRE")
    (root / "Images").mkdir()
    (root / "Ground Truth").mkdir()
    image = cv2.resize(load_demo_pair()[0], (512, 512), interpolation=cv2.INTER_AREA)
    truth = {}
    for seed, name in enumerate(NAMES):
        pair = make_synthetic_pair(image, PRESETS["easy"], seed)
        cv2.imwrite(str(root / "Images" / f"{name}_1.jpg"), pair.image1)
        cv2.imwrite(str(root / "Images" / f"{name}_2.jpg"), pair.image2)
        rows = np.hstack([pair.points_fixed, pair.points_moving])
        np.savetxt(root / "Ground Truth" / f"control_points_{name}_1_2.txt", rows, fmt="%.4f")
        truth[name] = pair.H
    (root / "Ground Truth" / "README.txt").write_text("not a control-point file")
    return root, truth


def test_load_fire(fire_dir):
    root, _ = fire_dir
    pairs = load_fire(root)
    assert [p.name for p in pairs] == list(NAMES)
    assert [p.category for p in pairs] == ["A", "P", "S"]
    img1, img2 = pairs[0].load()
    assert img1.shape == img2.shape == (512, 512, 3) and img1.dtype == np.uint8
    fixed, moving = read_control_points(root / "Ground Truth" / "control_points_A01_1_2.txt")
    np.testing.assert_array_equal(pairs[0].points_fixed, fixed)
    assert fixed.shape == moving.shape == (10, 2)


@pytest.mark.parametrize("size", [None, 256, 333])
def test_oracle_errors_are_zero_at_any_working_size(fire_dir, size):
    root, truth = fire_dir
    for pair in load_fire(root):
        images = pair.load()
        oracle = _oracle(truth[pair.name], images[0].shape[1::-1], images[1].shape[1::-1])
        result = register_pair(oracle, images, pair, "oracle", size)
        assert result.success
        assert result.error < 1e-3  # only the 4-decimal rounding of the text file


def test_run_evaluation_with_sift(fire_dir):
    root, _ = fire_dir
    pairs = load_fire(root)
    results = run_evaluation(pairs, {"sift-clahe": make_registrar("sift-clahe")})
    assert len(results) == len(NAMES)
    assert all(r.success and r.error < 3.0 for r in results), results
    report = summarize(results)[0]
    assert report.scores.pooled.auc > 0.85
    assert set(report.scores.by_category) == {"S", "P", "A"}


def test_progress_callback(fire_dir):
    root, truth = fire_dir
    calls = []
    methods = {"a": _oracle(truth["A01"], (512, 512), (512, 512))}
    run_evaluation(load_fire(root)[:1], methods, progress=lambda *a: calls.append(a))
    assert calls == [(1, 1, "A01 a")]


# ------------------------------------------------------------------ malformed inputs
def test_missing_directories(tmp_path):
    with pytest.raises(FileNotFoundError, match="FIRE layout"):
        load_fire(tmp_path / "nope")
    (tmp_path / "Images").mkdir()
    with pytest.raises(FileNotFoundError, match="Ground Truth"):
        load_fire(tmp_path)
    (tmp_path / "Ground Truth").mkdir()
    with pytest.raises(FileNotFoundError, match="no control_points"):
        load_fire(tmp_path)


def test_missing_image(tmp_path):
    (tmp_path / "Images").mkdir()
    (tmp_path / "Ground Truth").mkdir()
    (tmp_path / "Ground Truth" / "control_points_S01_1_2.txt").write_text("1 2 3 4\n")
    with pytest.raises(FileNotFoundError, match="S01_1"):
        load_fire(tmp_path)


@pytest.mark.parametrize(
    "text, match",
    [("1 2 3\n", r":1: expected 4 numbers"), ("1 2 3 4\n1 2 x 4\n", ":2:"), ("\n\n", "no control")],
)
def test_malformed_control_points(tmp_path, text, match):
    path = tmp_path / "control_points_S01_1_2.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        read_control_points(path)


def test_control_points_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="ground-truth"):
        read_control_points(tmp_path / "control_points_S01_1_2.txt")


def test_unreadable_image_raises_on_load(tmp_path):
    (tmp_path / "Images").mkdir()
    (tmp_path / "Ground Truth").mkdir()
    (tmp_path / "Ground Truth" / "control_points_S01_1_2.txt").write_text("1 2 3 4\n")
    for k in (1, 2):
        (tmp_path / "Images" / f"S01_{k}.jpg").write_bytes(b"not a jpeg")
    (pair,) = load_fire(tmp_path)
    with pytest.raises(ValueError, match="not a readable image"):
        pair.load()
