"""``fundusfeat compare``: the figures, tables and page of a two-visit and a three-visit
comparison, DICOM input with its pixel spacing, exit codes 1 (registration failed, no
change map) and 2 (unreadable input, named)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from fundusfeat import cli
from fundusfeat.io import compare_figures as fig
from fundusfeat.io.demo import load_demo_pair
from fundusfeat.io.report_html import VisitInfo, area_mm2, report_html
from fundusfeat.pipeline.changes import compare

from .conftest import DEFAULT_MODEL

FAST = ["--model", DEFAULT_MODEL, "--device", "cpu", "--quiet"]


def _painted_followup() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The demo pair with a dark spot painted into visit 2; the spot in baseline px."""
    img1, img2, H = load_demo_pair()
    spot1 = np.array([[img1.shape[1] * 0.4, img1.shape[0] * 0.55]])
    spot2 = cv2.perspectiveTransform(spot1[None].astype(np.float64), H)[0, 0]
    follow = img2.copy()
    cv2.circle(follow, (int(spot2[0]), int(spot2[1])), 10, (10, 10, 40), -1, cv2.LINE_AA)
    return img1, follow, spot1[0]


@pytest.fixture(scope="module")
def comparison():
    img1, follow, spot = _painted_followup()
    res = compare(img1, follow)
    assert res.success, res.reason
    return res, spot


@pytest.fixture(scope="module")
def visit_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("visits")
    img1, follow, spot = _painted_followup()
    cv2.imwrite(str(folder / "baseline.png"), img1)
    cv2.imwrite(str(folder / "followup.png"), follow)
    return folder, spot


def test_figures_have_the_analysis_size_and_show_the_change(comparison):
    res, spot = comparison
    h, w = res.baseline.shape[:2]
    frames = fig.flicker_frames([res])
    assert len(frames) == 2 and all(f.shape == (h, w, 3) for f in frames)
    changes = fig.changes_figure(res)
    assert changes.shape == (h, w, 3)
    # a contour is drawn around the painted spot: its neighbourhood differs from the baseline
    sx, sy = res.factors
    x, y = int(spot[0] * sx), int(spot[1] * sy)
    box = (slice(max(0, y - 30), y + 30), slice(max(0, x - 30), x + 30))
    assert np.any(changes[box] != frames[0][box])
    diff = fig.difference_figure(res)
    assert diff.dtype == np.uint8 and diff.shape[0] >= h and diff.shape[1] > w  # + colour bar
    board = fig.checkerboard_figure(res)
    assert board.shape == (h, w, 3)
    lut = fig.diverging_lut()
    assert lut.shape == (256, 1, 3) or lut.shape == (256, 3)


def test_flicker_gif_round_trip(comparison, tmp_path):
    res, _ = comparison
    path = tmp_path / "flicker.gif"
    fig.write_flicker_gif(path, fig.flicker_frames([res]))
    ok, anim = cv2.imreadanimation(str(path))
    assert ok and len(anim.frames) == 2
    with pytest.raises(ValueError):
        fig.write_flicker_gif(path, fig.flicker_frames([res])[:1])


def test_report_is_self_contained_and_lists_the_change(comparison):
    res, spot = comparison
    visits = [
        VisitInfo("visit 1", "baseline.dcm", "2023-01-01", (0.01, 0.01)),
        VisitInfo("visit 2", "follow.dcm", "2024-01-01", (0.01, 0.01)),
    ]
    page = report_html([res], visits)
    assert page.startswith("<!DOCTYPE html>")
    assert "src='http" not in page and 'src="http' not in page and "<link" not in page
    assert page.count("data:image/") >= 5
    assert "input" in page and "swipe" in page and "flicker" in page
    assert f"{res.registration.confidence:.3f}" in page
    assert "mm²" in page or "mm&sup2;" in page
    assert area_mm2(100.0, (0.01, 0.02)) == pytest.approx(0.02)
    assert area_mm2(100.0, None) is None
    with pytest.raises(ValueError, match="visits"):
        report_html([res], visits[:1])


def test_a_failed_comparison_has_no_figures():
    img1, _, _ = load_demo_pair()
    noise = np.random.default_rng(1).integers(0, 255, img1.shape, dtype=np.uint8)
    res = compare(img1, noise)
    assert not res.success
    with pytest.raises(ValueError):
        fig.changes_figure(res)


def test_cli_two_visits_writes_every_output(visit_files, tmp_path, capsys):
    folder, spot = visit_files
    out = tmp_path / "out"
    code = cli.main(
        ["compare", str(folder / "baseline.png"), str(folder / "followup.png"), "--out", str(out)]
        + FAST
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    for name in (
        "flicker.gif",
        "changes.png",
        "difference.png",
        "checkerboard.png",
        "changes.json",
        "changes.csv",
        "report.html",
    ):
        assert (out / name).is_file(), name
    data = json.loads((out / "changes.json").read_text())
    (visit,) = data["visits"]
    assert visit["success"] and visit["confidence"] > 0.5
    dists = [np.hypot(c["x"] - spot[0], c["y"] - spot[1]) for c in visit["changes"]]
    assert dists and min(dists) < 8.0
    rows = list(csv.DictReader((out / "changes.csv").open()))
    assert len(rows) == len(visit["changes"]) and rows[0]["file"] == "followup.png"


def test_cli_three_visits_one_folder_per_visit(visit_files, tmp_path, capsys):
    folder, _ = visit_files
    out = tmp_path / "series"
    base, follow = str(folder / "baseline.png"), str(folder / "followup.png")
    again = tmp_path / "followup_again.png"  # a third visit (one file twice is refused)
    again.write_bytes((folder / "followup.png").read_bytes())
    code = cli.main(["compare", base, follow, str(again), "--out", str(out)] + FAST)
    assert code == 0, capsys.readouterr().err
    for sub in ("visit2", "visit3"):
        assert (out / sub / "changes.png").is_file() and (out / sub / "report.html").is_file()
    assert (out / "flicker.gif").is_file() and (out / "report.html").is_file()
    ok, anim = cv2.imreadanimation(str(out / "flicker.gif"))
    assert ok and len(anim.frames) == 3
    assert len(json.loads((out / "changes.json").read_text())["visits"]) == 2


def test_cli_failed_registration_exit_1_no_change_map(visit_files, tmp_path, capsys):
    folder, _ = visit_files
    noise = np.random.default_rng(2).integers(0, 255, (400, 400, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "noise.png"), noise)
    out = tmp_path / "failed"
    code = cli.main(
        ["compare", str(folder / "baseline.png"), str(tmp_path / "noise.png"), "--out", str(out)]
        + FAST
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "noise.png: no change map" in captured.err
    assert not (out / "changes.png").exists() and not (out / "report.html").exists()
    data = json.loads((out / "changes.json").read_text())
    assert data["visits"][0]["success"] is False and data["visits"][0]["reason"]


def test_cli_unreadable_file_exit_2_named(visit_files, tmp_path, capsys):
    folder, _ = visit_files
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"this is not an image")
    code = cli.main(
        ["compare", str(folder / "baseline.png"), str(bad), "--out", str(tmp_path / "o")] + FAST
    )
    assert code == 2
    assert "broken.jpg" in capsys.readouterr().err


def test_cli_dicom_visits_ordered_by_date_with_mm2(visit_files, tmp_path, capsys, monkeypatch):
    pytest.importorskip("pydicom")
    from fundusfeat.io import dicom

    from .test_dicom import write_rgb

    headers = []
    read_info = dicom.read_dicom_info

    def counting(path):
        headers.append(Path(path).name)
        return read_info(path)

    monkeypatch.setattr(dicom, "read_dicom_info", counting)

    folder, _ = visit_files
    base = cv2.imread(str(folder / "baseline.png"))
    follow = cv2.imread(str(folder / "followup.png"))
    # given in the wrong order: the dates put the baseline first
    late = write_rgb(tmp_path / "late.dcm", follow[..., ::-1].copy(), date="20240601")
    early = write_rgb(tmp_path / "early.dcm", base[..., ::-1].copy(), date="20210301")
    out = tmp_path / "dicom"
    code = cli.main(["compare", str(late), str(early), "--out", str(out)] + FAST)
    assert code == 0, capsys.readouterr().err
    data = json.loads((out / "changes.json").read_text())
    assert data["baseline"]["file"] == "early.dcm"
    assert sorted(headers) == ["early.dcm", "late.dcm"]  # each header read once
    assert data["baseline"]["pixel_spacing_mm"] == [0.01, 0.012]
    assert data["visits"][0]["changes"][0]["area_mm2"] > 0
    text = "".join(p.read_text() for p in out.iterdir() if p.suffix in (".html", ".json", ".csv"))
    text = re.sub(r"data:image/[a-z]+;base64,[A-Za-z0-9+/=]+", "", text)  # embedded pixels
    for secret in ("Doe^Jane", "SECRET-123", "19500101"):
        assert secret not in text


def test_cli_dicom_without_pixel_data_exit_2(visit_files, tmp_path, capsys):
    pytest.importorskip("pydicom")
    from .test_dicom import _gradient, write_rgb

    folder, _ = visit_files
    header = write_rgb(tmp_path / "header.dcm", _gradient(), pixels=False)
    code = cli.main(
        ["compare", str(folder / "baseline.png"), str(header), "--out", str(tmp_path / "o")] + FAST
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "header.dcm" in err and "pixel data" in err
