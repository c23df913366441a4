"""Tests for fundusfeat.features.models (the registry) and fundusfeat.features.checkpoint
(loading weights)."""

from __future__ import annotations

import argparse
import dataclasses
import shutil

import pytest
import torch

from fundusfeat import R2D2Fundus
from fundusfeat.features import models
from fundusfeat.features.checkpoint import (
    default_weights_path,
    file_sha256,
    infer_model,
    load_network,
    read_weights_file,
)
from fundusfeat.features.settings import DetectorConfig

SHIPPED = [name for name, spec in models.MODELS.items() if spec.weights is not None]


@pytest.mark.parametrize("model", SHIPPED)
def test_shipped_weights_verified(model):
    path = default_weights_path(model)
    assert path.is_file() and file_sha256(path) == models.get(model).sha256
    net = load_network(model, device="cpu")
    assert not net.training and net.name == model


def test_registry_is_consistent():
    for name, spec in models.MODELS.items():
        assert spec.name == name and isinstance(spec.defaults, DetectorConfig)
        net = spec.build()
        assert net.name == name and net.dim == 128
        assert spec.trained <= (spec.weights is not None)  # trained implies shipped
    assert models.get(models.default_model()).trained
    with pytest.raises(ValueError, match="model"):
        models.get("vgg")


def test_default_model_never_untrained(monkeypatch):
    assert models.default_model("cpu") == models.default_model()
    expected = "r2d2" if models.MODELS["r2d2"].trained else models.default_model("cpu")
    assert models.default_model(torch.device("cuda")) == expected
    trained_r2d2 = dataclasses.replace(models.MODELS["r2d2"], trained=True)
    monkeypatch.setitem(models.MODELS, "r2d2", trained_r2d2)
    assert models.default_model("cuda") == "r2d2" and models.default_model("cpu") != "r2d2"


def test_detector_config_defaults_are_the_default_models():
    assert DetectorConfig() == models.get(models.default_model("cpu")).defaults
    fast = models.get("fast").defaults
    assert fast == DetectorConfig(rel_thr=0.5, rep_blur=0.0)
    assert models.get("r2d2").defaults.target_diameter == 750.0


def _user_ckpt(tmp_path, model, wrap):
    torch.manual_seed(1)
    state = models.get(model).build().state_dict()
    obj = {"model": model, "state_dict": state, "epoch": 3} if wrap else state
    path = tmp_path / f"{model}_{wrap}.pt"
    torch.save(obj, path)
    return path, state


@pytest.mark.parametrize("wrap", [False, True])
@pytest.mark.parametrize("model", models.names())
def test_user_checkpoint(tmp_path, model, wrap):
    path, state = _user_ckpt(tmp_path, model, wrap)
    assert infer_model(state) == model
    net = load_network(None, path, device="cpu")
    assert net.name == model
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, state[k])
    det = R2D2Fundus.create(weights=path, device="cpu")
    assert det.model == model
    assert det.config == models.get(model).defaults


def test_a_network_of_another_width_is_not_taken_for_a_model():
    """Parameter names alone would take a 2-channel keypoint branch for lean-dw-s1's
    4-channel one: the shapes tell them apart."""
    from fundusfeat.features.network import LeanNetDWS1

    assert infer_model(LeanNetDWS1().state_dict()) == "lean-dw-s1"
    with pytest.raises(ValueError, match="shapes"):
        infer_model(LeanNetDWS1(key_channels=2).state_dict())


def test_model_weights_disagree(tmp_path):
    path, _ = _user_ckpt(tmp_path, "fast", False)
    with pytest.raises(ValueError, match="r2d2"):
        load_network("r2d2", path)
    torch.save({"model": "r2d2", "state_dict": models.get("fast").build().state_dict()}, path)
    with pytest.raises(ValueError, match="model"):
        load_network(None, path)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_network("fast", tmp_path / "missing.pt")
    path = tmp_path / "odd.pt"
    torch.save({"foo.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="architecture"):
        load_network(None, path)
    with pytest.raises(ValueError, match="model"):
        load_network("vgg")
    with pytest.raises(ValueError, match="architecture"):
        infer_model({})


@pytest.mark.parametrize(
    ("content", "cause"),
    [
        (b"", "empty or truncated"),
        (b"not a zip or pickle at all", "cannot read weights"),
        (None, "objects other than tensors"),
        ("truncate", "cannot read weights"),
    ],
)
def test_unreadable_weights_are_value_errors(tmp_path, content, cause):
    """Empty, corrupt, truncated or unsafe files: a ValueError naming the path and the
    cause, never torch's advice to turn ``weights_only`` off."""
    path = tmp_path / "broken.pt"
    if content is None:
        torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": argparse.Namespace(a=1)}, path)
    elif content == "truncate":
        torch.save(models.get("fast").build().state_dict(), path)
        path.write_bytes(path.read_bytes()[:2000])
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=cause) as info:
        read_weights_file(path)
    assert str(path) in str(info.value) and "weights_only" not in str(info.value)
    with pytest.raises(ValueError, match="broken.pt"):
        R2D2Fundus.create(weights=path, device="cpu")


def test_sha_mismatch(tmp_path, monkeypatch):
    model = models.default_model()
    name = models.get(model).weights
    fake = tmp_path / "fundusfeat" / "weights"
    fake.mkdir(parents=True)
    shutil.copy(default_weights_path(model), fake / name)
    with open(fake / name, "ab") as fh:
        fh.write(b"tampered")
    monkeypatch.setattr(
        "fundusfeat.features.checkpoint.default_weights_path",
        lambda m: fake / models.get(m).weights,
    )
    with pytest.raises(ValueError, match="sha256"):
        load_network(model)


def test_models_without_shipped_weights_say_so():
    for name, spec in models.MODELS.items():
        if spec.weights is None:
            with pytest.raises(ValueError, match="ships no weights"):
                default_weights_path(name)
