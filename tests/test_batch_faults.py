"""register-batch under faults (issue 21, items 1-14) and its CSV columns (issue 18)."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from fundusfeat import R2D2Fundus, cli, register
from fundusfeat.evaluation.cohort import make_cohort
from fundusfeat.pipeline import executors
from fundusfeat.pipeline.batch import COLUMNS, read_pairs, register_dataset
from fundusfeat.pipeline.cache import cache_key, detector_digest, entry_path
from fundusfeat.pipeline.journal import meta_path

from .conftest import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def det() -> R2D2Fundus:
    return R2D2Fundus.create(model=DEFAULT_MODEL, device="cpu", max_keypoints=500)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, demo_pair) -> Path:
    """1 eye x 3 visits at 256 px: 3 images, 3 pairs."""
    return make_cohort([demo_pair[0]], 3, tmp_path_factory.mktemp("c"), seed=2, long_side=256)


@pytest.fixture(scope="module")
def clean(cohort, det, tmp_path_factory) -> dict[str, dict[str, str]]:
    out = tmp_path_factory.mktemp("clean") / "r.csv"
    register_dataset(cohort, out, det)
    return rows(out)


def rows(path: Path) -> dict[str, dict[str, str]]:
    """Rows by index; every line must be whole and the header appear once."""
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and lines[0] == ",".join(COLUMNS)
    out = {}
    for values in csv.reader(lines[1:-1]):
        assert len(values) == len(COLUMNS) and values[0] not in out
        out[values[0]] = dict(zip(COLUMNS, values, strict=True))
    return out


def table(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "pairs.csv"
    path.write_text("image1,image2\n" + "".join(f"{a},{b}\n" for a, b in lines))
    return path


def img(cohort: Path, i: int) -> Path:
    return cohort.parent / f"eye00_visit{i:02d}.jpg"


# --------------------------------------------------------------------------- item 1
@pytest.mark.parametrize("mode", [{}, {"workers": 2}, {"dask": "local:1"}])
def test_01_zero_byte_image_is_a_failed_row_in_every_mode(tmp_path, cohort, det, mode):
    if "dask" in mode:
        pytest.importorskip("dask.distributed")
    zero = tmp_path / "zero.jpg"
    zero.write_bytes(b"")
    t = table(tmp_path, [(img(cohort, 0), img(cohort, 1)), (img(cohort, 0), zero)])
    summary = register_dataset(t, tmp_path / "o.csv", det, **mode)
    out = rows(tmp_path / "o.csv")
    assert summary.missing == 0 and len(out) == 2
    assert out["0"]["success"] == "True"
    assert out["1"]["failure"] == "input" and "empty file" in out["1"]["reason"]
    assert "zero.jpg" in out["1"]["reason"]


def test_01_register_cli_zero_byte_exits_2(tmp_path, cohort, capsys):
    zero = tmp_path / "zero.jpg"
    zero.write_bytes(b"")
    assert cli.main(["register", str(img(cohort, 0)), str(zero), "--device", "cpu"]) == 2
    assert "zero.jpg" in capsys.readouterr().err


# ----------------------------------------------------------------------- items 2, 3
@pytest.mark.parametrize(
    "damage", ["truncate", "zero", "random", "foreign"], ids=lambda d: f"item2-3-{d}"
)
def test_02_03_damaged_or_foreign_cache_entry_is_deleted_and_recomputed(
    tmp_path, cohort, det, clean, damage, caplog
):
    cache = tmp_path / "cache"
    register_dataset(cohort, tmp_path / "first.csv", det, cache=cache)
    key = cache_key(img(cohort, 1), detector_digest(det))
    entry = entry_path(cache, key)
    other = entry_path(cache, cache_key(img(cohort, 2), detector_digest(det)))
    data = entry.read_bytes()
    entry.write_bytes(
        {
            "truncate": data[: len(data) // 2],
            "zero": b"",
            "random": np.random.default_rng(0).bytes(len(data)),
            "foreign": other.read_bytes(),
        }[damage]
    )
    with caplog.at_level(logging.WARNING):
        summary = register_dataset(cohort, tmp_path / "o.csv", det, cache=cache)
    assert summary.images_detected == 1 and summary.images_cached == 2
    assert rows(tmp_path / "o.csv") == clean
    assert str(entry) in caplog.text and "allow_pickle" not in caplog.text
    with np.load(entry, allow_pickle=False) as again:  # recomputed, with its key
        assert str(again["key"]) == key


# ----------------------------------------------------------------------- items 4, 5
def test_04_partial_last_line_is_cut_off_and_redone(tmp_path, cohort, det, clean):
    out = tmp_path / "o.csv"
    register_dataset(cohort, out, det)
    data = out.read_bytes()
    out.write_bytes(data[:-25])  # a kill in the middle of the last row's write
    summary = register_dataset(cohort, out, det)
    assert summary.skipped == 2 and summary.registered == 1
    assert rows(out) == clean


def test_05_output_with_only_a_header_gets_no_second_header(tmp_path, cohort, det, clean):
    out = tmp_path / "o.csv"
    out.write_text(",".join(COLUMNS) + "\n")  # killed during detection
    register_dataset(cohort, out, det)
    assert rows(out) == clean  # rows() checks the single header


# --------------------------------------------------------------------------- item 6
def test_06_resume_with_other_settings_exits_2_naming_them(tmp_path, cohort, clean, capsys):
    out = tmp_path / "o.csv"
    base = ["register-batch", str(cohort), "--out", str(out), "--device", "cpu", "--quiet"]
    assert cli.main([*base, "--max-keypoints", "500"]) == 0
    assert cli.main([*base, "--max-keypoints", "100", "--transform", "affine"]) == 2
    err = capsys.readouterr().err
    assert "max_keypoints: 500 -> 100" in err and "model: auto -> affine" in err
    assert "--restart" in err
    other = table(tmp_path, [(img(cohort, 0), img(cohort, 2))])
    assert cli.main(["register-batch", str(other), *base[2:], "--max-keypoints", "500"]) == 2
    assert "table_sha256" in capsys.readouterr().err
    assert cli.main([*base, "--max-keypoints", "100", "--transform", "affine", "--restart"]) == 0
    assert {r["model"] for r in rows(out).values()} <= {"affine", ""}
    assert json.loads(meta_path(out).read_text())["options"]["model"] == "affine"


# --------------------------------------------------------------------------- item 7
def test_07_retry_failed_redoes_input_errors_never_refusals(tmp_path, cohort, det, retina):
    late = tmp_path / "late.jpg"
    noise = tmp_path / "noise.png"
    cv2.imwrite(str(noise), np.random.default_rng(1).integers(0, 255, (256, 256, 3), np.uint8))
    t = table(tmp_path, [(img(cohort, 0), late), (img(cohort, 0), noise)])
    out = tmp_path / "o.csv"
    register_dataset(t, out, det)
    first = rows(out)
    assert first["0"]["failure"] == "input" and first["1"]["failure"] == "refused"
    late.write_bytes(img(cohort, 1).read_bytes())  # the missing file arrives
    assert register_dataset(t, out, det).registered == 0  # plain resume: rows are done
    summary = register_dataset(t, out, det, retry_failed=True)
    assert summary.registered == 1 and summary.skipped == 1
    again = rows(out)
    assert again["0"]["success"] == "True" and again["1"] == first["1"]


# --------------------------------------------------------------------------- item 8
def _hold_lock(path: Path) -> subprocess.Popen:
    code = (
        "import sys, time; from fundusfeat.pipeline.locks import RunLock; "
        f"RunLock({str(path)!r}, 'x').acquire(); print('held', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize("which", ["out", "cache"])
def test_08_second_run_on_output_or_cache_exits_2_naming_the_holder(
    tmp_path, cohort, capsys, which
):
    out, cache = tmp_path / "o.csv", tmp_path / "cache"
    cache.mkdir()
    lock = out.with_name("o.csv.lock") if which == "out" else cache / ".lock"
    holder = _hold_lock(lock)
    try:
        start = time.monotonic()
        argv = ["register-batch", str(cohort), "--out", str(out), "--cache", str(cache)]
        assert cli.main([*argv, "--device", "cpu", "--quiet"]) == 2
        assert time.monotonic() - start < 30
        assert f"pid {holder.pid}" in capsys.readouterr().err
        assert not out.exists() or out.stat().st_size == 0
    finally:
        holder.kill()
        holder.wait()


def test_08_cache_writes_use_unique_temporary_names(tmp_path, det, retina):
    from concurrent.futures import ThreadPoolExecutor

    from fundusfeat.pipeline.cache import load_features, save_features
    from fundusfeat.pipeline.register import image_features

    (features,) = image_features(det, (retina,), (None,))
    target = tmp_path / "k.npz"
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: save_features(features, target, "k"), range(8)))
    assert [p.name for p in tmp_path.iterdir()] == ["k.npz"]
    np.testing.assert_array_equal(load_features(target, "k").desc, features.desc)


# --------------------------------------------------------------------------- item 9
def test_09_figure_names_are_unique_for_equal_stems(tmp_path, cohort):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        for i in (0, 1):
            (tmp_path / folder / f"v{i}.jpg").write_bytes(img(cohort, i).read_bytes())
    t = table(tmp_path, [("a/v0.jpg", "a/v1.jpg"), ("b/v0.jpg", "b/v1.jpg")])
    figures = tmp_path / "fig"
    argv = ["register-batch", str(t), "--out", str(tmp_path / "o.csv"), "--figures"]
    assert cli.main([*argv, str(figures), "--device", "cpu", "--quiet"]) == 0
    overlays = sorted(p.name for p in figures.glob("*_overlay.png"))
    assert len(overlays) == 2 and overlays[0].startswith("00000_") and overlays[1][:6] == "00001_"


# -------------------------------------------------------------------------- item 10
def _descendants(pid: int) -> list[int]:
    psutil = pytest.importorskip("psutil")
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@pytest.mark.parametrize("mode", [["--workers", "2"], ["--dask", "local:2"]])
def test_10_workers_die_with_a_killed_parent(tmp_path, demo_pair, mode):
    psutil = pytest.importorskip("psutil")
    if "--dask" in mode:
        pytest.importorskip("dask.distributed")
    t = make_cohort([demo_pair[0]], 6, tmp_path / "big", seed=3, long_side=768)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "fundusfeat", "register-batch", str(t)]
    argv += ["--out", str(tmp_path / "o.csv"), "--device", "cpu", "--quiet", *mode]
    proc = subprocess.Popen(argv, env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            kids = _descendants(proc.pid)
            if len(kids) >= 3 and (tmp_path / "o.csv").exists():  # workers + tracker
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before its workers could be seen"
        time.sleep(1.0)
        kids = _descendants(proc.pid)
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 5
        alive = kids
        while alive and time.monotonic() < deadline:
            alive = [
                k
                for k in alive
                if psutil.pid_exists(k) and psutil.Process(k).status() != psutil.STATUS_ZOMBIE
            ]
            time.sleep(0.1)
        assert not alive, f"orphaned workers: {alive}"
    finally:
        if proc.poll() is None:
            proc.kill()


# -------------------------------------------------------------------------- item 11
def test_11_bad_dask_and_cache_options_exit_2(tmp_path, cohort, capsys, monkeypatch):
    monkeypatch.setattr(executors, "DASK_CONNECT_TIMEOUT_S", 1)
    base = ["register-batch", str(cohort), "--out", str(tmp_path / "o.csv"), "--device", "cpu"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = {
        "local:N needs N >= 1": ["--dask", "local:0"],
        "cannot reach the Dask scheduler": ["--dask", "tcp://127.0.0.1:9"],
        "is a file, not a folder": ["--cache", str(afile)],
        "cannot use": ["--cache", str(afile / "sub")],
    }
    for message, extra in cases.items():
        if "Dask" in message:
            pytest.importorskip("dask.distributed")
        assert cli.main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


def test_11_huge_csv_field_is_a_failed_row(tmp_path, cohort, det):
    t = table(
        tmp_path, [("x" * 200_000 + ".jpg", img(cohort, 0)), (img(cohort, 0), img(cohort, 1))]
    )
    summary = register_dataset(t, tmp_path / "o.csv", det)
    out = rows(tmp_path / "o.csv")
    assert summary.missing == 0 and out["0"]["failure"] == "input" and out["1"]["success"] == "True"


def test_11_register_cli_image_under_16_px_exits_2(tmp_path, cohort, capsys):
    tiny = tmp_path / "tiny.png"
    cv2.imwrite(str(tiny), np.zeros((10, 10, 3), np.uint8))
    assert cli.main(["register", str(img(cohort, 0)), str(tiny), "--device", "cpu"]) == 2
    assert "16x16" in capsys.readouterr().err


# --------------------------------------------------------------------------- 12, 13
def test_12_csv_with_a_byte_order_mark_is_read(tmp_path, cohort):
    path = tmp_path / "bom.csv"
    path.write_bytes(
        b"\xef\xbb\xbfimage1,image2\r\n" + f"{img(cohort, 0)},{img(cohort, 1)}\r\n".encode()
    )
    pairs = read_pairs(path)
    assert len(pairs) == 1 and pairs[0].path1 == img(cohort, 0) and not pairs[0].problem


def test_13_duplicate_rows_are_not_counted_as_already_done(tmp_path, cohort, det):
    pair = (img(cohort, 0), img(cohort, 1))
    summary = register_dataset(table(tmp_path, [pair, pair]), tmp_path / "o.csv", det)
    assert summary.skipped == 0 and summary.registered == 2 and summary.duplicates == 1
    out = rows(tmp_path / "o.csv")
    assert set(out) == {"0", "1"}
    assert {k: v for k, v in out["0"].items() if k != "index"} == {
        k: v for k, v in out["1"].items() if k != "index"
    }


# -------------------------------------------------------------------------- item 14
def test_14_register_rejects_bools_and_bad_seeds(retina):
    with pytest.raises(TypeError, match="threshold"):
        register(retina, retina, threshold=True)
    with pytest.raises(TypeError, match="seed"):
        register(retina, retina, seed="1")
    with pytest.raises(ValueError, match="seed"):
        register(retina, retina, seed=-1)


# ---------------------------------------------------------------- issue 18 columns
def test_columns_index_counts_h_layout_and_one_number_format(tmp_path, cohort, det, clean):
    for pair in read_pairs(cohort):
        row = clean[str(pair.index)]
        result = register(cv2.imread(str(pair.path1)), cv2.imread(str(pair.path2)), detector=det)
        assert (row["image1"], row["image2"]) == pair.key
        assert int(row["num_keypoints1"]) == len(result.keypoints1)
        assert int(row["num_keypoints2"]) == len(result.keypoints2)
        assert int(row["num_matches"]) == len(result.matches)
        H = np.array([float(v) for v in row["H"].split()]).reshape(3, 3)  # row-major
        np.testing.assert_array_equal(H, result.H)
        for text in [row["confidence"], *row["H"].split()]:
            assert repr(float(text)) == text  # one format: shortest round-trip
