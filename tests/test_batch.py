"""register_dataset / fundusfeat register-batch: each image once, rows as they finish,
resumable, parallel (processes and Dask) with the same rows as register()."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from fundusfeat import R2D2Fundus, cli, register
from fundusfeat.evaluation.cohort import make_cohort
from fundusfeat.pipeline.batch import (
    COLUMNS,
    BatchInputError,
    load_features,
    read_pairs,
    register_dataset,
    result_row,
    save_features,
)
from fundusfeat.pipeline.register import image_features

from .conftest import DEFAULT_MODEL


@pytest.fixture(scope="module", autouse=True)
def workers_thread_count():
    """Serial and parallel runs with the same torch thread count: 2 workers get half the
    cores each, and so does the serial run here. On some CPUs (oneDNN on AMX) the
    summation order of a convolution depends on the thread count, which moves keypoints
    in the last float32 digits: rows are equal bit for bit only when the arithmetic is."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def small_detector() -> R2D2Fundus:
    return R2D2Fundus.create(model=DEFAULT_MODEL, device="cpu", max_keypoints=800)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, demo_pair) -> Path:
    """2 eyes x 3 visits at 384 px: 6 images, 6 pairs, each image in 2 pairs."""
    folder = tmp_path_factory.mktemp("cohort")
    second = np.ascontiguousarray(demo_pair[1][:, ::-1])  # another "eye"
    return make_cohort([demo_pair[0], second], 3, folder, seed=1, long_side=384)


def _rows(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    with path.open(newline="") as fh:
        return {(r["image1"], r["image2"]): r for r in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def reference(cohort, small_detector) -> dict[tuple[str, str], dict[str, str]]:
    """register() pair by pair, as result rows."""
    out = {}
    for pair in read_pairs(cohort):
        img1, img2 = (cv2.imread(str(p)) for p in (pair.path1, pair.path2))
        out[pair.key] = result_row(pair, register(img1, img2, detector=small_detector))
    return out


@pytest.fixture(scope="module")
def serial(cohort, small_detector, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "results.csv"
    summary = register_dataset(cohort, out, small_detector)
    return out, summary


def test_rows_equal_register_and_each_image_is_detected_once(serial, reference, cohort):
    out, summary = serial
    assert summary.images_detected == 6 and summary.registered == len(reference) == 6
    assert _rows(out) == reference
    assert sum(r["success"] == "True" for r in reference.values()) >= 5
    header = out.read_text().splitlines()[0].split(",")
    assert tuple(header) == COLUMNS


def test_rerun_after_deleting_rows_computes_only_those(serial, tmp_path, small_detector, cohort):
    out = tmp_path / "results.csv"
    lines = serial[0].read_text().splitlines()
    out.write_text("\n".join([lines[0], *lines[1:4]]) + "\n")  # keep 3 of 6 rows
    meta = serial[0].with_name(serial[0].name + ".meta.json")
    out.with_name(out.name + ".meta.json").write_bytes(meta.read_bytes())
    summary = register_dataset(cohort, out, small_detector)
    assert summary.skipped == 3 and summary.registered == 3
    assert _rows(out) == _rows(serial[0])


def test_killed_run_restarts_to_identical_rows(serial, tmp_path, small_detector, cohort):
    out = tmp_path / "results.csv"
    cache = tmp_path / "cache"
    seen = []

    def die_after_two(pair, result):
        seen.append(pair)
        if len(seen) == 2:
            raise KeyboardInterrupt  # as if the run were killed

    with pytest.raises(KeyboardInterrupt):
        register_dataset(cohort, out, small_detector, cache=cache, on_result=die_after_two)
    assert len(_rows(out)) == 2  # what finished is on disk
    summary = register_dataset(cohort, out, small_detector, cache=cache)
    assert summary.images_detected == 0 and summary.images_cached >= 4  # features kept
    assert _rows(out) == _rows(serial[0])


def test_default_cache_is_reused_by_the_rerun_and_removed_when_done(
    serial, tmp_path, small_detector, cohort
):
    """No --cache: the features live under the user's cache dir (the suite points it at
    a folder of its own), an interrupted run leaves them for the rerun, a complete run
    removes them."""
    from fundusfeat.pipeline.batch import default_cache

    out = tmp_path / "results.csv"
    cache = default_cache(out)
    assert str(cache).startswith(os.environ["FUNDUSFEAT_CACHE_DIR"])
    seen = []

    def die_after_two(pair, result):
        seen.append(pair)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        register_dataset(cohort, out, small_detector, on_result=die_after_two)
    assert len(list(cache.glob("*.npz"))) == 6
    summary = register_dataset(cohort, out, small_detector)
    assert summary.images_detected == 0 and summary.images_cached >= 4
    assert _rows(out) == _rows(serial[0])
    assert not cache.exists()


def test_extra_input_columns_are_carried(serial, tmp_path, small_detector, cohort):
    table = tmp_path / "pairs.csv"
    lines = cohort.read_text().splitlines()
    rows = [f"eye,{lines[0]},success,note"]
    rows += [f'E{i % 2},{line},yes,"a, b"' for i, line in enumerate(lines[1:])]
    table.write_text("\n".join(rows) + "\n")
    for p in cohort.parent.iterdir():
        if p.suffix == ".jpg":
            (tmp_path / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "results.csv"
    register_dataset(table, out, small_detector)
    header = out.read_text().splitlines()[0].split(",")
    assert tuple(header) == (*COLUMNS, "eye", "input_success", "note")
    got = _rows(out)
    for key, row in _rows(serial[0]).items():
        assert {k: got[key][k] for k in COLUMNS} == row
        assert got[key]["input_success"] == "yes" and got[key]["note"] == "a, b"
    assert sorted(r["eye"] for r in got.values()) == ["E0", "E0", "E0", "E1", "E1", "E1"]


def test_workers_give_the_same_rows(serial, tmp_path, small_detector, cohort):
    out = tmp_path / "results.csv"
    register_dataset(cohort, out, small_detector, workers=2)
    assert _rows(out) == _rows(serial[0])


def test_dask_local_cluster_gives_the_same_rows(serial, tmp_path, small_detector, cohort):
    pytest.importorskip("dask.distributed")
    out = tmp_path / "results.csv"
    summary = register_dataset(cohort, out, small_detector, dask="local:2")
    assert summary.images_detected == 6
    assert _rows(out) == _rows(serial[0])


def test_cache_round_trip_is_bitwise(retina, small_detector, tmp_path):
    (features,) = image_features(small_detector, (retina,), (None,))
    save_features(features, tmp_path / "f.npz")
    again = load_features(tmp_path / "f.npz")
    np.testing.assert_array_equal(again.xy, features.xy)
    np.testing.assert_array_equal(again.desc, features.desc)
    np.testing.assert_array_equal(again.region, features.region)
    np.testing.assert_array_equal(again.vessels[0], features.vessels[0])
    assert [k.pt for k in again.keypoints] == [k.pt for k in features.keypoints]


def test_changed_image_or_weights_do_not_reuse_features(tmp_path, cohort, small_detector):
    from fundusfeat.pipeline.batch import cache_key, detector_digest

    image = cohort.parent / "eye00_visit00.jpg"
    copy = tmp_path / "copy.jpg"
    copy.write_bytes(image.read_bytes())
    digest = detector_digest(small_detector)
    assert cache_key(copy, digest) == cache_key(image, digest)
    copy.write_bytes(image.read_bytes()[:-10] + b"0123456789")
    assert cache_key(copy, digest) != cache_key(image, digest)
    other = R2D2Fundus.create(model=DEFAULT_MODEL, device="cpu", max_keypoints=801)
    assert detector_digest(other) != digest


def test_bad_rows_are_failed_rows_and_the_run_goes_on(tmp_path, cohort, small_detector):
    table = tmp_path / "pairs.csv"
    good = cohort.parent / "eye00_visit00.jpg"
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(good.read_bytes()[:3000])
    table.write_text(
        "image1,image2\n"
        f"{good},{cohort.parent / 'eye00_visit01.jpg'}\n"
        f"{tmp_path / 'missing.jpg'},{good}\n"
        f"{broken},{good}\n"
        f",{good}\n"
    )
    out = tmp_path / "out.csv"
    summary = register_dataset(table, out, small_detector)
    rows = list(_rows(out).values())
    assert len(rows) == 4 and summary.registered == 4
    reasons = [r["reason"] for r in rows if r["success"] == "False"]
    assert any(r == f"cannot use image {tmp_path / 'missing.jpg'}: no such file" for r in reasons)
    assert any("truncated" in r for r in reasons)
    assert any("malformed row" in r for r in reasons)
    registered = [r for r in rows if r["success"] == "True"]
    assert len(registered) == 1 and json.loads(registered[0]["transform"])["model"]
    assert len(registered[0]["H"].split()) == 9


def test_fire_style_folder(tmp_path, cohort):
    for name, target in (("S01_1.jpg", "eye00_visit00.jpg"), ("S01_2.jpg", "eye00_visit01.jpg")):
        (tmp_path / name).write_bytes((cohort.parent / target).read_bytes())
    (tmp_path / "P02_1.jpg").write_bytes((cohort.parent / "eye01_visit00.jpg").read_bytes())
    pairs = read_pairs(tmp_path)
    assert [(p.image1, p.image2) for p in pairs] == [("S01_1.jpg", "S01_2.jpg")]


def test_malformed_header_and_unwritable_out_exit_2(tmp_path, cohort, capsys):
    table = tmp_path / "pairs.csv"
    table.write_text("first,second\na.jpg,b.jpg\n")
    with pytest.raises(BatchInputError, match="image1,image2"):
        read_pairs(table)
    assert cli.main(["register-batch", str(table), "--out", str(tmp_path / "o.csv")]) == 2
    assert "image1,image2" in capsys.readouterr().err
    blocked = tmp_path / "file"
    blocked.write_text("x")
    code = cli.main(["register-batch", str(cohort), "--out", str(blocked / "o.csv")])
    assert code == 2 and "cannot write" in capsys.readouterr().err


def test_empty_table_and_folder_out_exit_2_with_a_word(tmp_path, cohort, capsys):
    table = tmp_path / "pairs.csv"
    table.write_text("image1,image2\n")
    assert cli.main(["register-batch", str(table), "--out", str(tmp_path / "o.csv")]) == 2
    assert "no pairs" in capsys.readouterr().err
    folder = tmp_path / "results"
    folder.mkdir()
    assert cli.main(["register-batch", str(cohort), "--out", str(folder)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert list(tmp_path.glob("*.json")) == []  # no sidecar left beside it


def test_cli_summary_and_figures(tmp_path, cohort, capsys):
    out, figures = tmp_path / "o.csv", tmp_path / "fig"
    argv = ["register-batch", str(cohort), "--out", str(out), "--figures", str(figures)]
    argv += ["--max-keypoints", "500", "--device", "cpu", "--quiet"]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "pairs: 6" in text and "images: 6 detected" in text and "pairs/s" in text
    assert len(list(figures.glob("*_overlay.png"))) >= 5
    done = sum(r["success"] == "True" for r in csv.DictReader(out.open()))
    assert cli.main(argv) == 0  # a resume counts the successes already written
    assert f"succeeded: {done} of 6 written (0 of them now)" in capsys.readouterr().out
