"""ONNX export and the OpenCV-DNN backend reproduce the torch network."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fundusfeat import R2D2Fundus
from fundusfeat.cli import main
from fundusfeat.features import models
from fundusfeat.features import onnx as export
from fundusfeat.features.onnx import OnnxNetwork, export_onnx

from .conftest import DEFAULT_MODEL

pytest.importorskip("onnx")


@pytest.mark.parametrize(
    ("model", "size"),
    [("fast", (1, 3, 120, 97)), ("fast-v1", (1, 3, 64, 70)), ("r2d2", (2, 3, 48, 40))],
)
def test_onnx_roundtrip_matches_torch(model: str, size: tuple[int, ...], tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = models.get(model).build().eval()
    path = export_onnx(net, tmp_path / "net.onnx")
    onnx_net = OnnxNetwork(path.read_bytes(), net.descriptor_stride, net.dim, net.name)
    x = torch.randn(*size)
    with torch.inference_mode():
        ref = net(x)
    got = onnx_net(x)
    for a, b in zip(ref, got, strict=True):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-4)


def test_detector_onnx_backend_equals_torch(retina: np.ndarray) -> None:
    kw = {
        "model": DEFAULT_MODEL,
        "target_diameter": 256,
        "rep_thr": 0.0,
        "rel_thr": 0.0,
        "max_keypoints": 200,
    }
    ref = R2D2Fundus.create(device="cpu", **kw)
    det = R2D2Fundus.create(backend="onnx", **kw)
    k1, d1 = ref.detectAndCompute(retina, None)
    k2, d2 = det.detectAndCompute(retina, None)
    assert len(k1) == len(k2) > 0
    p1, p2 = cv2.KeyPoint_convert(k1), cv2.KeyPoint_convert(k2)
    # pair each torch keypoint with the ONNX keypoint at its place: near-ties of the
    # ~1e-7 differences may swap a keypoint or two (and shift the order after them)
    gap = np.linalg.norm(p1[:, None] - p2[None], axis=2)
    nearest = gap.argmin(axis=1)
    close = gap[np.arange(len(p1)), nearest] < 0.01
    assert close.mean() > 0.95
    assert np.abs(d1[close] - d2[nearest[close]]).max() < 1e-3
    again = pickle.loads(pickle.dumps(det))
    k3, d3 = again.detectAndCompute(retina, None)
    assert len(k3) == len(k2) and np.array_equal(d3, d2)


def test_onnx_exported_once_per_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """Construction and unpickling reuse the exported model instead of exporting again."""
    R2D2Fundus.create(backend="onnx", model=DEFAULT_MODEL)
    calls = []
    real = export.onnx_bytes
    monkeypatch.setattr(export, "onnx_bytes", lambda *a, **k: calls.append(1) or real(*a, **k))
    det = R2D2Fundus.create(backend="onnx", model=DEFAULT_MODEL, max_keypoints=10)
    pickle.loads(pickle.dumps(det))
    assert calls == []


def test_onnx_backend_rejects_cuda() -> None:
    with pytest.raises(ValueError, match="backend|CUDA"):
        R2D2Fundus.create(backend="onnx", device="cuda")
    with pytest.raises(ValueError, match="backend"):
        R2D2Fundus.create(backend="tensorrt")


def test_cli_export(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "fast.onnx"
    assert main(["export-onnx", "--model", DEFAULT_MODEL, "--out", str(out)]) == 0
    assert out.is_file() and out.stat().st_size > 100_000
    assert "max |torch - opencv-dnn|" in capsys.readouterr().out
