"""``fundusfeat montage``: outputs, exit codes 0 (all placed) / 1 (some unplaced, named) /
2 (bad input, named)."""

from __future__ import annotations

import csv
import json

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
