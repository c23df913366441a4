"""Detection and registration give bitwise the same output at any thread count (torch's
and OpenCV's).

Each run is a fresh interpreter (torch's thread count is per process); the embedded demo
pair is detected at its own size (768 px) and enlarged to 1536 px (working-scale resize
and pyramid levels), and registered; keypoints, descriptors and the result's rows must be
equal, not merely close.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import sys
import cv2
import numpy as np
import torch

threads, backend, out, model = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
torch.set_num_threads(threads)
cv2.setNumThreads(threads)  # the cv2 paths (blur, NMS, smoothing) too
from fundusfeat import R2D2Fundus, register
from fundusfeat.io.demo import load_demo_pair

a, b, _ = load_demo_pair()
det = R2D2Fundus.create(backend=backend, model=None if model == "default" else model)
arrays = {}
for name, img in (("a", a), ("big", cv2.resize(a, (1536, 1536)))):
    kps, desc = det.detectAndCompute(img, None)
    arrays[name + "_kp"] = np.array(
        [(k.pt[0], k.pt[1], k.size, k.response, k.octave) for k in kps], np.float64
    )
    arrays[name + "_desc"] = desc
res = register(a, b, det)
arrays["H"] = res.H
arrays["rows"] = np.array(
    [(m.queryIdx, m.trainIdx) for m in res.matches], np.int64).reshape(-1, 2)
arrays["inliers"] = res.inliers
arrays["confidence"] = np.array([res.confidence])
np.savez(out, **arrays)
"""


def _run(
    tmp_path: Path, threads: int, backend: str, model: str = "default"
) -> dict[str, np.ndarray]:
    out = tmp_path / f"{backend}{model}{threads}.npz"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    subprocess.run(
        [sys.executable, "-c", SCRIPT, str(threads), backend, str(out), model],
        check=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    with np.load(out) as data:
        return dict(data)


def _assert_same(one: dict[str, np.ndarray], two: dict[str, np.ndarray]) -> None:
    assert one.keys() == two.keys()
    assert len(one["a_kp"]) > 100 and len(one["big_kp"]) > 100
    for key in one:
        np.testing.assert_array_equal(one[key], two[key], err_msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["default", "lean-s1", "lean-dw", "lean-dw-s1"])
def test_torch_output_is_independent_of_thread_count(tmp_path: Path, model: str) -> None:
    _assert_same(_run(tmp_path, 1, "torch", model), _run(tmp_path, 2, "torch", model))


@pytest.mark.slow
def test_openvino_output_is_independent_of_thread_count(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    _assert_same(_run(tmp_path, 1, "openvino"), _run(tmp_path, 2, "openvino"))
