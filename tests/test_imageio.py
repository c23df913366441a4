"""Reading images: truncated or corrupt files are unreadable, not grey strips."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fundusfeat import R2D2Fundus, cli
from fundusfeat.io.images import expand_image_args, integrity_problem, read_image


@pytest.fixture(scope="module")
def encoded(retina):
    ok_jpg, jpg = cv2.imencode(".jpg", retina, [cv2.IMWRITE_JPEG_QUALITY, 90])
    ok_png, png = cv2.imencode(".png", retina)
    assert ok_jpg and ok_png
    return {"jpg": jpg.tobytes(), "png": png.tobytes()}


@pytest.mark.parametrize("ext", ["jpg", "png"])
def test_whole_files_read(tmp_path, encoded, retina, ext):
    path = tmp_path / f"ok.{ext}"
    path.write_bytes(encoded[ext])
    img = read_image(path)
    assert img.shape == retina.shape and img.dtype == np.uint8
    assert integrity_problem(encoded[ext]) is None


@pytest.mark.parametrize("ext", ["jpg", "png"])
@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_truncated_files_are_value_errors(tmp_path, encoded, ext, keep):
    data = encoded[ext]
    path = tmp_path / f"cut.{ext}"
    path.write_bytes(data[: int(len(data) * keep)])
    if ext == "jpg":
        assert cv2.imread(str(path)) is not None  # OpenCV alone decodes it (a grey strip)
    with pytest.raises(ValueError, match="truncated or corrupt") as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_cli_exits_2_on_a_truncated_image(tmp_path, encoded, capsys):
    good, bad = tmp_path / "good.jpg", tmp_path / "bad.jpg"
    good.write_bytes(encoded["jpg"])
    bad.write_bytes(encoded["jpg"][: len(encoded["jpg"]) // 2])
    assert cli.main(["register", str(good), str(bad), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "bad.jpg" in err and "truncated" in err


def test_garbage_and_missing_files(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        read_image(text)
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.png")
    with pytest.raises(FileNotFoundError):
        expand_image_args([tmp_path / "nowhere"])


def test_a_thin_strip_is_handled(detector):
    """A 16 x 2000 image: no keypoints (its border is all of it), not an internal error."""
    strip = np.random.default_rng(0).integers(0, 255, (16, 2000, 3), dtype=np.uint8)
    kps, desc = detector.detectAndCompute(strip, None)
    assert desc.shape == (len(kps), 128)
    assert isinstance(R2D2Fundus.create(max_keypoints=10).detect(strip), tuple)
