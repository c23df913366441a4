"""The OpenVINO backend: opt-in (torch is the default), the torch network's outputs within
1e-4, chosen by the environment, converted once per machine (the user's cache dir) and
compiled once per process."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

pytest.importorskip("openvino")

from fundusfeat import R2D2Fundus  # noqa: E402
from fundusfeat.features import openvino_net  # noqa: E402
from fundusfeat.io.demo import load_demo_pair  # noqa: E402


@pytest.fixture(scope="module")
def detectors() -> tuple[R2D2Fundus, R2D2Fundus]:
    return (
        R2D2Fundus.create(device="cpu", backend="openvino"),
        R2D2Fundus.create(device="cpu", backend="torch"),
    )


def test_auto_is_torch_and_openvino_is_asked_for(detectors, monkeypatch) -> None:
    monkeypatch.delenv(openvino_net.ENV_BACKEND, raising=False)
    auto, torch_det = detectors
    assert auto._core.backend == "openvino"
    assert torch_det._core.backend == "torch"
    assert isinstance(auto._core.network, openvino_net.OpenVinoNetwork)
    assert R2D2Fundus.create(device="cpu")._core.backend == "torch"


def test_environment_chooses_the_backend(monkeypatch) -> None:
    monkeypatch.setenv(openvino_net.ENV_BACKEND, "openvino")
    assert R2D2Fundus.create(device="cpu")._core.backend == "openvino"
    monkeypatch.setenv(openvino_net.ENV_BACKEND, "torch")
    assert R2D2Fundus.create(device="cpu")._core.backend == "torch"
    monkeypatch.setenv(openvino_net.ENV_BACKEND, "nonsense")
    with pytest.raises(ValueError, match="FUNDUSFEAT_BACKEND"):
        R2D2Fundus.create(device="cpu")


def test_threads_from_environment(monkeypatch) -> None:
    monkeypatch.setenv(openvino_net.ENV_THREADS, "3")
    assert openvino_net.inference_threads() == 3
    monkeypatch.setenv(openvino_net.ENV_THREADS, "0")
    with pytest.raises(ValueError, match="FUNDUSFEAT_OV_THREADS"):
        openvino_net.inference_threads()
    monkeypatch.delenv(openvino_net.ENV_THREADS)
    assert openvino_net.inference_threads() == torch.get_num_threads()


@pytest.mark.parametrize(
    "size",
    [(300, 260), (301, 259)],  # not multiples of the stride; odd sides (the stem pads them)
)
def test_outputs_match_torch(detectors, size) -> None:
    auto, torch_det = detectors
    img, _, _ = load_demo_pair()
    prep = torch_det._core.prepare(img, None)
    x = prep.tensor[:, :, : size[0], : size[1]]
    with torch.inference_mode():
        ref = torch_det._core.network(x)
        out = auto._core.network(x)
    for name, a, b in zip(("descriptors", "reliability", "repeatability"), ref, out, strict=True):
        assert a.shape == b.shape, name
        assert float((a - b).abs().max()) < 1e-4, name


def test_keypoints_match_torch(detectors) -> None:
    auto, torch_det = detectors
    img, _, _ = load_demo_pair()
    k1, d1 = torch_det.detectAndCompute(img, None)
    k2, d2 = auto.detectAndCompute(img, None)
    xy1, xy2 = np.array([k.pt for k in k1]), np.array([k.pt for k in k2])
    assert abs(len(k1) - len(k2)) <= 0.01 * len(k1)
    # the same points for all but the rare near-threshold ones
    dist = np.linalg.norm(xy1[:, None] - xy2[None], axis=2).min(axis=1)
    assert np.mean(dist < 1e-3) > 0.99


def test_converted_once_per_machine(detectors) -> None:
    """The converted network is kept in the user's cache dir (the suite's own folder) as
    float32 IR with OpenVINO's compiled-model cache beside it; a new compilation (as in a
    new process) loads it instead of converting again, and gives the same outputs."""
    import os

    auto, torch_det = detectors
    core = auto._core
    from fundusfeat.features.onnx import state_digest

    folder = openvino_net.cache_folder(core.spec.name, state_digest(core.state_dict))
    assert str(folder).startswith(os.environ["FUNDUSFEAT_CACHE_DIR"])
    xml = folder / openvino_net.NETWORK_FILE
    assert xml.is_file() and xml.with_suffix(".bin").stat().st_size > 0
    assert any(folder.glob("compiled-*-threads/*"))  # OpenVINO's compiled blob
    converted = []
    original = openvino_net._convert

    def counting(net):
        converted.append(net)
        return original(net)

    openvino_net._convert = counting
    try:
        compiled = openvino_net._compile(
            torch_det._core.network, openvino_net.inference_threads(), folder
        )
    finally:
        openvino_net._convert = original
    assert converted == []
    x = torch_det._core.prepare(load_demo_pair()[0], None).tensor[:, :, :128, :128]
    request = compiled.create_infer_request()
    request.infer({0: x.numpy()})
    with torch.inference_mode():
        ref = torch_det._core.network(x)
    out = torch.from_numpy(np.array(request.get_output_tensor(2).data))
    assert float((out - ref[2]).abs().max()) < 1e-4


def test_compiled_once_and_pickles(detectors) -> None:
    auto, _ = detectors
    again = R2D2Fundus.create(device="cpu", backend="openvino")
    assert again._core.network._compiled is auto._core.network._compiled
    clone = pickle.loads(pickle.dumps(auto))
    assert clone._core.backend == "openvino"
    img, _, _ = load_demo_pair()
    small = img[200:456, 200:456]
    np.testing.assert_array_equal(
        auto.detectAndCompute(small, None)[1], clone.detectAndCompute(small, None)[1]
    )
