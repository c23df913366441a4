"""Tests for fundusfeat.checkpoint: registry, sha256, loading and architecture checks."""

from __future__ import annotations

import shutil

import pytest
import torch

from fundusfeat import R2D2Fundus
from fundusfeat.checkpoint import (
    TRAINED,
    WEIGHTS,
    default_model,
    default_weights_path,
    file_sha256,
    infer_model,
    load_network,
)
from fundusfeat.network import build_network


@pytest.mark.parametrize("model", ["fast", "r2d2"])
def test_shipped_weights_verified(model):
    path = default_weights_path(model)
    assert path.is_file() and file_sha256(path) == WEIGHTS[model][1]
    net = load_network(model, device="cpu")
    assert not net.training and net.name == model


def test_default_model():
    assert default_model("cpu") == "fast"
    expected = "r2d2" if "r2d2" in TRAINED else "fast"  # untrained paper weights never default
    assert default_model(torch.device("cuda")) == expected


def _user_ckpt(tmp_path, model, wrap):
    torch.manual_seed(1)
    state = build_network(model).state_dict()
    obj = {"model": model, "state_dict": state, "epoch": 3} if wrap else state
    path = tmp_path / f"{model}_{wrap}.pt"
    torch.save(obj, path)
    return path, state


@pytest.mark.parametrize("wrap", [False, True])
@pytest.mark.parametrize("model", ["fast", "r2d2"])
def test_user_checkpoint(tmp_path, model, wrap):
    path, state = _user_ckpt(tmp_path, model, wrap)
    net = load_network(None, path, device="cpu")
    assert net.name == model
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, state[k])
    det = R2D2Fundus.create(weights=path, device="cpu")
    assert det.model == model


def test_model_weights_disagree(tmp_path):
    path, _ = _user_ckpt(tmp_path, "fast", False)
    with pytest.raises(ValueError, match="r2d2"):
        load_network("r2d2", path)
    torch.save({"model": "r2d2", "state_dict": build_network("fast").state_dict()}, path)
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


def test_sha_mismatch(tmp_path, monkeypatch):
    fake = tmp_path / "fundusfeat" / "weights"
    fake.mkdir(parents=True)
    shutil.copy(default_weights_path("fast"), fake / WEIGHTS["fast"][0])
    with open(fake / WEIGHTS["fast"][0], "ab") as fh:
        fh.write(b"tampered")
    monkeypatch.setattr(
        "fundusfeat.checkpoint.default_weights_path", lambda model: fake / WEIGHTS[model][0]
    )
    with pytest.raises(ValueError, match="sha256"):
        load_network("fast")
