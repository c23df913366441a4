"""``fundusfeat montage``: outputs, exit codes 0 (all placed) / 1 (some unplaced, named) /
2 (bad input, named)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import pytest

from fundusfeat import cli
from fundusfeat.evaluation.fields import impostor_field, make_field_set
from fundusfeat.io.arrays import resize_long_side
from fundusfeat.pipeline.montage import MontageResult

from .conftest import DEFAULT_MODEL

FAST = ["--model", DEFAULT_MODEL, "--max-keypoints", "800", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def field_dir(tmp_path_factory, retina):
    folder = tmp_path_factory.mktemp("fields")
    source = resize_long_side(retina, 512)[0]
    fs = make_field_set(source, "cross5", 0)
    for k in (0, 1, 3):
        cv2.imwrite(str(folder / f"field{k}.png"), fs.images[k])
    other = impostor_field(resize_long_side(cv2.flip(retina, 1), 512)[0])
    cv2.imwrite(str(folder / "zz_other_eye.png"), other)
    return folder


def test_some_unplaced_exit_1(field_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["montage", str(field_dir), "--out", str(out), *FAST])
    captured = capsys.readouterr()
    assert code == 1
    assert "not placed: zz_other_eye.png" in captured.err
    for name in ("montage.jpg", "montage.png", "transforms.json", "edges.csv", "field_graph.png"):
        assert (out / name).is_file(), name
    data = json.loads((out / "transforms.json").read_text())
    assert [p.endswith("zz_other_eye.png") for p in data["images"]] == [False] * 3 + [True]
    back = MontageResult.from_dict(data)
    assert back.placed == [True, True, True, False]
    rows = list(csv.DictReader((out / "edges.csv").open()))
    assert rows and {r["image_i"] for r in rows} <= {"field0.png", "field1.png", "field3.png"}
    assert cv2.imread(str(out / "montage.png")).shape[:2] == tuple(data["size"][::-1])


def test_all_placed_exit_0(field_dir, tmp_path, capsys):
    paths = [str(field_dir / "field0.png"), str(field_dir / "field1.png")]
    code = cli.main(["montage", *paths, "--out", str(tmp_path), *FAST])
    assert code == 0
    assert "placed 2/2 fields" in capsys.readouterr().out


def test_unreadable_file_exit_2(field_dir, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xda not a jpeg")
    code = cli.main(["montage", str(field_dir / "field0.png"), str(bad), "--out", str(tmp_path)])
    assert code == 2
    assert "broken.jpg" in capsys.readouterr().err


def test_fewer_than_two_images_exit_2(field_dir, tmp_path, capsys):
    code = cli.main(["montage", str(field_dir / "field0.png"), "--out", str(tmp_path)])
    assert code == 2
    assert "at least 2" in capsys.readouterr().err


def test_missing_file_exit_2(tmp_path, capsys):
    code = cli.main(["montage", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--out", "x"])
    assert code == 2
    assert "a.png" in capsys.readouterr().err


@pytest.fixture
def no_detection(monkeypatch):
    """Fail the test if a detector is built or an image read: exit 2 must come first."""

    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the input was checked")

    for module in ("montage", "compare", "register"):
        monkeypatch.setattr(f"fundusfeat.cli.{module}.make_detector", forbidden)
        monkeypatch.setattr(f"fundusfeat.cli.{module}.read_image_arg", forbidden)


def _bad_outputs(tmp_path):
    """An existing file, and a folder that cannot be created (under a read-only folder;
    as root, which writes anywhere, under /proc)."""
    import os

    a_file = tmp_path / "taken.txt"
    a_file.write_text("x")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    unwritable = Path("/proc/fundusfeat-out") if os.geteuid() == 0 else locked / "out"
    return {"a file": (a_file, "existing file"), "read-only": (unwritable, "not a writable")}


@pytest.mark.parametrize("command", ["montage", "compare", "register"])
def test_bad_out_exit_2_before_any_work(command, field_dir, tmp_path, capsys, no_detection):
    images = [str(field_dir / "field0.png"), str(field_dir / "field1.png")]
    for name, (out, words) in _bad_outputs(tmp_path).items():
        code = cli.main([command, *images, "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and words in err, (name, err)
        assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("command", ["montage", "compare"])
def test_a_repeated_path_is_named_before_any_work(
    command, field_dir, tmp_path, capsys, no_detection
):
    one = field_dir / "field0.png"
    other = field_dir / ".." / field_dir.name / "field0.png"
    code = cli.main(
        [command, str(one), str(field_dir / "field1.png"), str(other), "--out", str(tmp_path)]
    )
    err = capsys.readouterr().err
    assert code == 2 and "given twice" in err and "field0.png" in err, err


def test_a_folder_given_as_an_image_is_named_as_a_folder(field_dir, tmp_path, capsys):
    code = cli.main(["register", str(field_dir), str(field_dir / "field0.png")])
    err = capsys.readouterr().err
    assert code == 2 and "is a folder" in err, err
