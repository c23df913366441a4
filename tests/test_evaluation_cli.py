"""Peers by name, the bench, and the evaluate/bench commands end to end."""

from __future__ import annotations

import argparse
import json
import pickle

import cv2
import numpy as np
import pytest
import torch

from fundusfeat.cli import evaluate as commands
from fundusfeat.evaluation import ClaheSift, make_detector
from fundusfeat.evaluation.bench import BenchConfig, measure, resize_to_fov, run_bench
from fundusfeat.evaluation.peers import parse_methods
from fundusfeat.features.fov import estimate_fov


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fundusfeat")
    sub = parser.add_subparsers()
    commands.add_evaluate_parser(sub)
    commands.add_bench_parser(sub)
    return parser.parse_args(argv)


# ------------------------------------------------------------------------- peers
def test_clahe_sift_is_feature2d_like(retina):
    det = ClaheSift.create()
    kps, desc = det.detectAndCompute(retina, None)
    assert len(kps) > 10 and desc.shape == (len(kps), det.descriptorSize())
    assert desc.dtype == np.float32 and det.descriptorType() == cv2.CV_32F
    assert det.defaultNorm() == cv2.NORM_L2 and not det.empty()
    assert len(det.detect(retina)) == len(kps)
    assert det.compute(retina, kps)[1].shape == desc.shape
    assert det.enhance(retina.astype(np.float32) / 255).dtype == np.uint8
    clone = pickle.loads(pickle.dumps(det))
    assert len(clone.detect(retina[..., 1])) == len(kps)  # gray input: used as is


@pytest.mark.parametrize("name", ["sift", "orb", "akaze", "cv2:xfeatures2d.BRISK_create"])
def test_make_detector_opencv(name, retina):
    kps, _ = make_detector(name).detectAndCompute(retina, None)
    assert len(kps) > 0


@pytest.mark.parametrize("name", ["surf", "nomodule_xyz:f", "cv2:nothing_here", "cv2:"])
def test_make_detector_unknown(name):
    with pytest.raises(ValueError, match="method"):
        make_detector(name)


def test_learned_methods_name_their_backend(retina):
    from fundusfeat.evaluation.peers import is_learned

    assert is_learned("r2d2fundus") and is_learned("r2d2fundus@torch")
    assert is_learned("r2d2fundus-fast@openvino") and not is_learned("sift@torch")
    assert not is_learned("r2d2fundus@") and not is_learned("r2d2fundus@auto")
    det = make_detector("r2d2fundus@torch", device="cpu")
    assert det.core.backend == "torch"
    small = resize_to_fov(retina, 200)
    config = BenchConfig(methods=("r2d2fundus@torch",), sizes=(200,), repeat=1, isolate=False)
    result = measure("r2d2fundus@torch", "cpu", 200, [small], config)
    assert result.create_seconds > 0 and result.first_seconds > 0 and result.keypoints > 0
    with pytest.raises(ValueError, match="backend"):
        make_detector("r2d2fundus@tensorrt", device="cpu")
    assert not is_learned("r2d2fundus=") and not is_learned("sift=x.pt")


def test_a_learned_method_names_a_checkpoint(tmp_path):
    """``r2d2fundus=CHECKPOINT[@backend]``: a training run's network, model from the file."""
    from fundusfeat.evaluation.peers import is_learned
    from fundusfeat.features import models

    path = tmp_path / "lean.pt"
    torch.save({"model": "lean", "state_dict": models.get("lean").build().state_dict()}, path)
    assert is_learned(f"r2d2fundus={path}@torch")
    det = make_detector(f"r2d2fundus={path}@torch", device="cpu")
    assert det.model == "lean" and det.core.backend == "torch"
    with pytest.raises(FileNotFoundError):
        make_detector(f"r2d2fundus={tmp_path / 'missing.pt'}", device="cpu")


def test_parse_methods():
    assert parse_methods(" sift, orb,sift ") == ["sift", "orb"]
    with pytest.raises(ValueError):
        parse_methods(" , ")


# ------------------------------------------------------------------------- bench
def test_bench_measure_in_process(retina):
    small = resize_to_fov(retina, 200)
    assert abs(estimate_fov(small).diameter - 200) < 8
    config = BenchConfig(methods=("sift",), sizes=(200,), repeat=2, warmup=0, isolate=False)
    result = measure("sift", "cpu", 200, [small], config)
    assert result.seconds > 0 and result.keypoints > 0
    assert result.peak_rss_mib >= result.base_rss_mib > 0 and result.peak_gpu_mib is None
    with pytest.raises(ValueError):
        BenchConfig(devices=("tpu",))


@pytest.mark.slow
def test_bench_isolated_subprocess(retina):
    config = BenchConfig(methods=("sift-clahe",), sizes=(160,), repeat=1, isolate=True)
    (result,) = run_bench([retina], config)
    assert result.method == "sift-clahe" and result.keypoints > 0


# ---------------------------------------------------------------------- commands
def test_evaluate_command_smoke(tmp_path, image_path, capsys):
    out = tmp_path / "out"
    args = _parse(
        "evaluate", "--synthetic", str(image_path), "--preset", "easy", "--pairs", "2",
        "--methods", "sift-clahe,orb", "--out", str(out), "--quiet",
    )  # fmt: skip
    assert args.func(args) == 0
    table = capsys.readouterr().out
    assert "| sift-clahe |" in table and "| orb |" in table
    data = json.loads((out / "results.json").read_text())
    assert data["meta"]["preset"] == "easy" and data["meta"]["cpu"]
    assert [m["method"] for m in data["methods"]] == ["sift-clahe", "orb"]
    assert len(data["methods"][0]["pairs"]) == 2
    assert (out / "results.md").read_text().startswith("| method |")
    try:  # the figure needs the optional plot extra; without it the run still succeeds
        import matplotlib  # noqa: F401
    except ImportError:
        assert not (out / "success.png").exists()
    else:
        assert (out / "success.png").stat().st_size > 0


def test_evaluate_command_json_and_errors(tmp_path, image_path, capsys):
    args = _parse(
        "evaluate", "--synthetic", str(image_path), "--preset", "easy", "--pairs", "1",
        "--methods", "sift", "--json", "--size", "256",
    )  # fmt: skip
    assert args.func(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["meta"]["size"] == 256
    bad = _parse("evaluate", "--fire", str(tmp_path / "missing"), "--methods", "sift")
    assert bad.func(bad) == 2
    assert "FIRE layout" in capsys.readouterr().err
    bad = _parse("evaluate", "--synthetic", str(image_path), "--methods", "nope")
    assert bad.func(bad) == 2


def test_bench_command_smoke(image_path, capsys):
    args = _parse(
        "bench", str(image_path), "--sizes", "160", "--methods", "sift", "--device", "cpu",
        "--repeat", "1", "--threads", "1", "--no-isolate", "--json", "--quiet",
    )  # fmt: skip
    assert args.func(args) == 0
    data = json.loads(capsys.readouterr().out)
    (row,) = data["results"]
    assert row["method"] == "sift" and row["size"] == 160 and row["threads"] == 1


def test_bench_pipeline_times_each_learned_method(image_path, capsys):
    args = _parse(
        "bench", str(image_path), "--sizes", "192", "--device", "cpu", "--repeat", "1",
        "--methods", "sift,r2d2fundus-fast", "--threads", "1", "--no-isolate", "--pipeline",
        "--json", "--quiet",
    )  # fmt: skip
    assert args.func(args) == 0
    data = json.loads(capsys.readouterr().out)
    (row,) = data["pipeline"]  # sift has no pipeline row: it is the reference's detector
    assert row["method"] == "r2d2fundus-fast" and row["size"] == 192
    assert row["fundusfeat_s"] > 0 and row["classical_s"] > 0 and row["ratio"] > 0


@pytest.mark.slow
def test_evaluate_learned_method_runs(image_path, capsys):
    # the weights may be untrained: only the plumbing is checked, not the score
    args = _parse(
        "evaluate", "--synthetic", str(image_path), "--preset", "easy", "--pairs", "1",
        "--methods", "r2d2fundus", "--device", "cpu", "--json", "--quiet",
    )  # fmt: skip
    assert args.func(args) == 0
    (method,) = json.loads(capsys.readouterr().out)["methods"]
    assert method["method"] == "r2d2fundus" and len(method["pairs"]) == 1


def test_evaluate_eye_preset_reports_the_oracle(tmp_path, image_path, capsys):
    args = _parse(
        "evaluate", "--synthetic", str(image_path), "--preset", "eye", "--pairs", "1",
        "--methods", "sift-clahe", "--json", "--quiet", "--transform", "homography",
    )  # fmt: skip
    assert args.func(args) == 0
    data = json.loads(capsys.readouterr().out)
    methods = {m["method"]: m for m in data["methods"]}
    assert set(methods) == {"sift-clahe", "oracle-homography"}
    assert data["meta"]["transform"] == "homography" and data["meta"]["preset"] == "eye"
    oracle = methods["oracle-homography"]["pairs"][0]
    assert oracle["model"] == "homography" and oracle["error_px"] != "inf"


def test_evaluate_global_keypoints_reaches_register(image_path, capsys):
    from fundusfeat.evaluation import peers

    assert peers.make_registrar("sift", global_keypoints=50).keywords["global_keypoints"] == 50
    assert "global_keypoints" not in peers.make_registrar("sift").keywords
    args = _parse(
        "evaluate", "--synthetic", str(image_path), "--preset", "easy", "--pairs", "1",
        "--methods", "sift-clahe", "--json", "--quiet", "--global-keypoints", "50",
    )  # fmt: skip
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["meta"]["global_keypoints"] == 50
    with pytest.raises(SystemExit):
        _parse("evaluate", "--synthetic", str(image_path), "--global-keypoints", "0")


def test_evaluate_impostors(tmp_path, image_path, make_fundus, capsys):
    other = tmp_path / "other.png"  # another "eye": a synthetic fundus with other vessels
    cv2.imwrite(str(other), make_fundus(384, 384, 370.0, seed=3))
    args = _parse(
        "evaluate", "--impostors", str(image_path), str(other), "--methods", "sift",
        "--quiet", "--out", str(tmp_path / "imp"),
    )  # fmt: skip
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "| sift |" in text and "max confidence" in text and "[0.99, 1]" in text
    data = json.loads((tmp_path / "imp" / "impostors.json").read_text())
    kinds = {r["kind"] for r in data["results"]}
    assert kinds == {"different", "mirrored", "mirror-self", "crops", "rotations"}
    assert len(data["results"]) == 2 + 2 + 2 + 8 + 6
    assert all(not r["false_success"] for r in data["results"] if r["kind"] != "rotations")


def test_evaluate_cross_resolution_pairs(tmp_path, image_path, capsys):
    args = _parse(
        "evaluate", "--synthetic", str(image_path), "--preset", "easy", "--pairs", "1",
        "--methods", "sift-clahe", "--moving-scale", "0.6", "--json", "--quiet",
    )  # fmt: skip
    assert args.func(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["meta"]["moving_scale"] == 0.6
    (pair,) = data["methods"][0]["pairs"]
    assert pair["pair"].endswith("@0.6") and pair["error_px"] < 5.0
    with pytest.raises(SystemExit):
        _parse("evaluate", "--synthetic", str(image_path), "--moving-scale", "0")
