"""An OpenVINO inference backend for the networks (CPU), the default where OpenVINO is
installed (``pip install fundusfeat[openvino]``).

:func:`openvino_network` converts a folded torch network with ``openvino.convert_model``
(dynamic batch, height and width; no ONNX file), compiles it for the CPU in float32 with
an explicit thread count, and caches the compiled model per (model, weights, threads) in
the process. :class:`OpenVinoNetwork` is called like the torch network and returns the
same ``(descriptors, reliability, repeatability)`` tensors (within 1e-4), so the keypoint
code is unchanged.

Backend choice (:func:`resolve_backend`): ``"auto"`` is ``"openvino"`` on the CPU when the
``openvino`` package imports, else ``"torch"``; the environment variable
``FUNDUSFEAT_BACKEND`` (``torch``, ``openvino``, ``onnx``) overrides ``"auto"``.

Threads: OpenVINO's own pool is sized by :func:`inference_threads`, which is
``torch.get_num_threads()`` (so ``OMP_NUM_THREADS``, ``torch.set_num_threads`` and the
batch workers' one-thread setting apply to both backends), overridable with
``FUNDUSFEAT_OV_THREADS``. CPU pinning is off, so a second busy process on the same cores
shares them rather than stalling pinned threads.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

ENV_BACKEND = "FUNDUSFEAT_BACKEND"
ENV_THREADS = "FUNDUSFEAT_OV_THREADS"
_CACHE_SIZE = 4
_compiled: OrderedDict[tuple[str, str, int], Any] = OrderedDict()
_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def openvino_available() -> bool:
    """True when the ``openvino`` package can be imported."""
    return importlib.util.find_spec("openvino") is not None


def resolve_backend(backend: str, device: torch.device, choices: tuple[str, ...]) -> str:
    """The backend to run: ``backend`` itself, or for ``"auto"`` the environment's
    ``FUNDUSFEAT_BACKEND`` when set, else ``"openvino"`` on a CPU with OpenVINO installed,
    else ``"torch"``.

    Raises:
        ValueError: ``FUNDUSFEAT_BACKEND`` names no backend of ``choices``.
    """
    if backend != "auto":
        return backend
    forced = os.environ.get(ENV_BACKEND, "").strip().lower()
    if forced:
        if forced not in choices or forced == "auto":
            raise ValueError(f"{ENV_BACKEND} must be one of {choices[1:]}, got {forced!r}")
        return forced
    return "openvino" if device.type == "cpu" and openvino_available() else "torch"


def inference_threads() -> int:
    """OpenVINO's thread count: ``FUNDUSFEAT_OV_THREADS`` if set, else torch's."""
    value = os.environ.get(ENV_THREADS, "").strip()
    if value:
        try:
            n = int(value)
        except ValueError as err:
            raise ValueError(f"{ENV_THREADS} must be a positive integer, got {value!r}") from err
        if n < 1:
            raise ValueError(f"{ENV_THREADS} must be a positive integer, got {value!r}")
        return n
    return max(1, torch.get_num_threads())


def _compile(net: nn.Module, threads: int) -> Any:
    import openvino as ov

    example = torch.zeros(1, 3, 64, 64)
    with warnings.catch_warnings():  # the input checks are constant under tracing
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # convert_model traces with jit
        model = ov.convert_model(
            net.cpu().eval(), example_input=example, input=[ov.PartialShape([-1, 3, -1, -1])]
        )
    config = {
        "INFERENCE_NUM_THREADS": threads,
        "INFERENCE_PRECISION_HINT": "f32",
        "ENABLE_CPU_PINNING": False,
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
    }
    return ov.Core().compile_model(model, "CPU", config)


def openvino_network(
    model: str, state_dict: Mapping[str, torch.Tensor], net: nn.Module
) -> OpenVinoNetwork:
    """``net`` (built from ``state_dict``, folded) compiled by OpenVINO for the CPU, at
    most once per process for the same weights and thread count."""
    from fundusfeat.features.onnx import state_digest

    threads = inference_threads()
    key = (model, state_digest(state_dict), threads)
    with _lock:
        compiled = _compiled.get(key)
        if compiled is None:
            compiled = _compile(net, threads)
            _compiled[key] = compiled
            while len(_compiled) > _CACHE_SIZE:
                _compiled.popitem(last=False)
        _compiled.move_to_end(key)
    return OpenVinoNetwork(
        compiled,
        int(getattr(net, "descriptor_stride", 1)),
        int(getattr(net, "dim", 128)),
        str(getattr(net, "name", model)),
        threads,
    )


class OpenVinoNetwork(nn.Module):
    """A compiled OpenVINO model called like the torch network.

    ``(B, 3, H, W)`` float32 normalised RGB on the CPU -> ``(descriptors (B, D, H/s,
    W/s), reliability (B, 1, H, W), repeatability (B, 1, H, W))`` float32 tensors.
    ``descriptor_stride``, ``dim`` and ``name`` are the converted network's; ``threads``
    is the thread count it was compiled with. Not picklable on its own: the detector
    pickles its weights and recompiles.
    """

    def __init__(
        self, compiled: Any, descriptor_stride: int, dim: int, name: str, threads: int
    ) -> None:
        super().__init__()
        self._compiled = compiled
        self._local = threading.local()
        self.descriptor_stride = descriptor_stride
        self.dim = dim
        self.name = name
        self.threads = threads

    def _request(self) -> Any:
        request = getattr(self._local, "request", None)
        if request is None:  # one infer request per calling thread
            request = self._local.request = self._compiled.create_infer_request()
        return request

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if images.device.type != "cpu":
            raise ValueError("the OpenVINO backend runs on the CPU only")
        data = np.ascontiguousarray(images.detach().float().numpy())
        request = self._request()
        request.infer({0: data})
        outs = [request.get_output_tensor(i).data for i in range(3)]
        desc, rel, rep = (torch.from_numpy(np.array(o, np.float32, copy=True)) for o in outs)
        return desc, rel, rep
