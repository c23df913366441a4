"""Smoke tests of the example scripts (run in-process, on the embedded demo pair)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import cv2
import pytest

from .conftest import DEFAULT_MODEL

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(monkeypatch, script: str, *args: str) -> int | None:
    """The script's exit code (0 when it ends without ``sys.exit``)."""
    monkeypatch.setattr(sys, "argv", [script, *args])
    try:
        runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    except SystemExit as exc:
        return exc.code
    return 0


def test_swap_sift_registers_the_demo_pair_with_sift(monkeypatch, tmp_path, capsys):
    out = tmp_path / "overlay.png"
    assert _run(monkeypatch, "swap_sift.py", "--detector", "sift", "--out", str(out)) == 0
    assert "RANSAC inliers" in capsys.readouterr().out
    assert cv2.imread(str(out)).shape == (768, 768, 3)


def test_draw_matches_example(monkeypatch, tmp_path):
    out = tmp_path / "m.png"
    assert _run(monkeypatch, "draw_matches.py", "--model", DEFAULT_MODEL, "--out", str(out)) == 0
    assert cv2.imread(str(out)).shape == (768, 1536, 3)


def test_batch_register_from_csv(monkeypatch, tmp_path):
    data = Path(__file__).resolve().parents[1] / "fundusfeat" / "data"
    table = tmp_path / "pairs.csv"
    table.write_text(f"image1,image2\n{data / 'retina_a.jpg'},{data / 'retina_b.jpg'}\n")
    out = tmp_path / "results.csv"
    assert (
        _run(
            monkeypatch,
            "batch_register.py",
            "--csv",
            str(table),
            "--out",
            str(out),
            "--model",
            DEFAULT_MODEL,
        )
        == 0
    )
    rows = out.read_text().splitlines()
    header = rows[0].split(",")
    assert header[:4] == ["index", "image1", "image2", "success"] and len(rows) == 2
    assert rows[1].split(",")[header.index("success")] == "True"


def test_batch_benchmark_runs_both_modes(monkeypatch, tmp_path, capsys):
    data = Path(__file__).resolve().parents[1] / "fundusfeat" / "data"
    args = ["--sources", str(data / "retina_a.jpg"), "--eyes", "1", "--visits", "2"]
    assert _run(monkeypatch, "batch_benchmark.py", *args, "--folder", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "loop:" in out and "batch:" in out and "rows identical: True" in out


def test_warp_with_transform_example(monkeypatch, tmp_path, capsys):
    assert _run(monkeypatch, "warp_with_transform.py", "--out", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "model homography" in out and '"matrix"' in out
    assert cv2.imread(str(tmp_path / "registered.png")).shape == (768, 768, 3)
    assert cv2.imread(str(tmp_path / "overlay_crop.png")).shape == (512, 512, 3)


def test_matcher_speed_example(monkeypatch, capsys):
    assert _run(monkeypatch, "matcher_speed.py", "--n", "300", "--repeat", "1") == 0
    out = capsys.readouterr().out
    assert "identical to two passes: True; identical to cv2: True" in out


def test_verification_summary(monkeypatch, tmp_path, image_path, make_fundus, capsys):
    from fundusfeat.cli import main

    other = tmp_path / "other.png"
    cv2.imwrite(str(other), make_fundus(384, 384, 370.0, seed=3))
    common = ["--methods", "sift", "--quiet"]
    assert main(["evaluate", "--synthetic", str(image_path), "--preset", "easy", "--pairs",
                 "2", *common, "--out", str(tmp_path / "easy")]) == 0  # fmt: skip
    assert main(["evaluate", "--impostors", str(image_path), str(other), *common,
                 "--out", str(tmp_path / "imp")]) == 0  # fmt: skip
    capsys.readouterr()
    args = ["--method", "sift", "--true", str(tmp_path / "easy"), "--impostors"]
    assert _run(monkeypatch, "verification_summary.py", *args, str(tmp_path / "imp")) == 0
    out = capsys.readouterr().out
    assert "/2 refused" in out and "/20 accepted" in out and "margin:" in out


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_every_example_has_help(monkeypatch, tmp_path, capsys, script):
    monkeypatch.chdir(tmp_path)  # a user's clone: no ../shared beside it
    assert _run(monkeypatch, script, "--help") == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("script", "args", "written"),
    [
        ("swap_sift.py", (), "out/swap_sift_overlay.png"),
        ("draw_matches.py", ("--model", DEFAULT_MODEL), "out/matches.png"),
        ("warp_with_transform.py", (), "out/registered.png"),
        ("eye_model_figure.py", (), "out/eye_model_overlay.png"),
        pytest.param(
            "sweep_defaults.py", ("--pairs", "1", "--presets", "easy"), None, marks=pytest.mark.slow
        ),
        ("batch_benchmark.py", ("--eyes", "1", "--visits", "2", "--modes", "batch"), None),
    ],
)
def test_examples_run_with_their_defaults_without_shared(
    monkeypatch, tmp_path, capsys, script, args, written
):
    """Defaults use the package's own data and write under out/ of the working folder."""
    monkeypatch.chdir(tmp_path)
    assert _run(monkeypatch, script, *args) == 0
    assert capsys.readouterr().out
    if written is not None:
        assert (tmp_path / written).is_file()
    assert {p.name for p in tmp_path.iterdir()} <= {"out"}


def test_compare_visits_example(monkeypatch, tmp_path, capsys):
    args = ["--out", str(tmp_path), "--side", "300"]
    assert _run(monkeypatch, "compare_visits.py", *args) == 0
    assert "painted lesions found: 3/3; false regions: 0" in capsys.readouterr().out
    for name in ("flicker.gif", "changes.png", "difference.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_sift_clahe_script_registers_the_demo_pair(monkeypatch, capsys):
    data = Path(__file__).resolve().parents[1] / "fundusfeat" / "data"
    a, b = str(data / "retina_a.jpg"), str(data / "retina_b.jpg")
    assert _run(monkeypatch, "sift_clahe_register.py", a, b) == 0
    out = capsys.readouterr().out
    assert "H = [[" in out and int(out.split("inliers: ")[1].split()[0]) >= 20


def test_cold_commands_times_both(monkeypatch, capsys):
    assert _run(monkeypatch, "cold_commands.py", "--repeat", "1", "--side", "600") == 0
    out = capsys.readouterr().out
    assert "fundusfeat register:" in out and "SIFT-CLAHE script:" in out and "ratio:" in out


def test_shift_misses_example(monkeypatch, capsys):
    args = ("--models", DEFAULT_MODEL, "--fov", "400", "--shifts", "1,0")
    assert _run(monkeypatch, "shift_misses.py", *args) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith(f"| {DEFAULT_MODEL} |")]
    found, drifted, lost = (float(v) for v in rows[0].split("|")[3:6])
    assert len(rows) == 2 and found > 0.5 and abs(found + drifted + lost - 1.0) < 2e-3
    raw = ("--rep-blur", "0", "--rel-thr", "0.5")
    assert _run(monkeypatch, "shift_misses.py", *args, *raw) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith(f"| {DEFAULT_MODEL} |")]
    assert len(rows) == 2 and float(rows[0].split("|")[3]) > 0.5


def test_working_fov_speed_example(monkeypatch, capsys):
    import torch

    args = ("--fov", "300", "--diameters", "320,256", "--rounds", "1", "--threads", "1")
    serial = ("--fov", "300", "--diameters", "256", "--serial", "--rounds", "1", "--threads", "1")
    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    try:
        assert _run(monkeypatch, "working_fov_speed.py", *args) == 0
        out = capsys.readouterr().out
        assert _run(monkeypatch, "working_fov_speed.py", *serial) == 0
        out_serial = capsys.readouterr().out
    finally:  # the script sets the process's thread counts
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)
    rows = [r for r in out.splitlines() if r.startswith(("| 320 px", "| 256 px"))]
    assert len(rows) == 2 and "SIFT-CLAHE pipeline" in out
    ratios = [float(r.split("|")[3].strip().rstrip("x")) for r in rows]
    assert all(v > 0 for v in ratios)
    rows = [r for r in out_serial.splitlines() if r.startswith("| 256 px")]
    assert len(rows) == 2 and rows[1].startswith("| 256 px, one after the other |")
    assert _run(monkeypatch, "working_fov_speed.py", "--diameters", "big") == 2
