"""An OpenVINO inference backend for the networks (CPU), opt-in
(``pip install fundusfeat[openvino]``, then ``backend="openvino"`` or
``FUNDUSFEAT_BACKEND=openvino``).

:func:`openvino_network` converts a folded torch network with ``openvino.convert_model``
(dynamic batch, height and width; no ONNX file), compiles it for the CPU in float32 with
an explicit thread count, and caches the compiled model per (model, weights, threads) in
the process. The conversion is done once per machine: the converted network is saved
(float32 IR) under the user's cache dir (:func:`fundusfeat.io.user_cache.user_cache_dir`,
``openvino/<model>-<weights sha256>``) and compiled from there with OpenVINO's own model
cache beside it (one per thread count), so a new process loads instead of converting and
compiling. :class:`OpenVinoNetwork` is called like the torch network and returns the
same ``(descriptors, reliability, repeatability)`` tensors (within 1e-4), so the keypoint
code is unchanged.

Backend choice (:func:`resolve_backend`): ``"auto"`` is ``"torch"``, the environment
variable ``FUNDUSFEAT_BACKEND`` (``torch``, ``openvino``, ``onnx``) overrides it. OpenVINO
is not the default because it was not faster where it was measured (``fundusfeat bench
--methods r2d2fundus@torch,r2d2fundus@openvino``, docs/benchmarks.md): the same warm
detection time at 768 px, slower at 1536 px, and a new process paid its compilation.

Threads: OpenVINO's own pool is sized by :func:`inference_threads`, which is
``torch.get_num_threads()`` (so ``OMP_NUM_THREADS``, ``torch.set_num_threads`` and the
batch workers' one-thread setting apply to both backends), overridable with
``FUNDUSFEAT_OV_THREADS``. CPU pinning is off, so a second busy process on the same cores
shares them rather than stalling pinned threads.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fundusfeat.features.network import INFERENCE_GRAPH
from fundusfeat.io.user_cache import user_cache_dir

logger = logging.getLogger(__name__)

NETWORK_FILE = "network.xml"
"""The converted network's IR in its cache folder (weights beside it, ``network.bin``)."""

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
    ``FUNDUSFEAT_BACKEND`` when set, else ``"torch"`` (see the module docstring).

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
    del device  # the default is the same on every device (measured, module docstring)
    return "torch"


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


def _convert(net: nn.Module) -> Any:
    import openvino as ov

    example = torch.zeros(1, 3, 64, 64)
    with warnings.catch_warnings():  # the input checks are constant under tracing
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # convert_model traces with jit
        return ov.convert_model(
            net.cpu().eval(), example_input=example, input=[ov.PartialShape([-1, 3, -1, -1])]
        )


def cache_folder(model: str, digest: str) -> Path:
    """Where the converted network of ``model`` with weights ``digest`` is kept (also
    keyed by OpenVINO's version and :data:`~fundusfeat.features.network.INFERENCE_GRAPH`,
    so a network converted by another release is not reused)."""
    import openvino as ov

    version = ov.__version__.split("-")[0]
    return user_cache_dir("openvino", f"{model}-{digest[:24]}-g{INFERENCE_GRAPH}-ov{version}")


def _saved(net: nn.Module, folder: Path) -> Path | None:
    """The network's float32 IR in ``folder`` (converted and saved the first time; a
    unique temporary folder renamed into place, so two processes never see half a file),
    or None when the cache cannot be written."""
    import openvino as ov

    xml = folder / NETWORK_FILE
    if xml.is_file() and xml.with_suffix(".bin").is_file():
        return xml
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=folder.name + ".tmp-"))
        try:
            ov.save_model(_convert(net), str(tmp / NETWORK_FILE), compress_to_fp16=False)
            if folder.is_dir() and not xml.is_file():  # a damaged entry
                shutil.rmtree(folder, ignore_errors=True)
            try:
                os.replace(tmp, folder)
            except OSError:  # another process saved it first
                if not xml.is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as err:
        logger.warning("OpenVINO: cannot keep the converted network in %s (%s)", folder, err)
        return None
    return xml


def _compile(net: nn.Module, threads: int, folder: Path | None = None) -> Any:
    """The network compiled for the CPU; from (and into) ``folder`` when given."""
    import openvino as ov

    core = ov.Core()
    source: Any = None
    if folder is not None:
        xml = _saved(net, folder)
        if xml is not None:
            core.set_property({"CACHE_DIR": str(folder / f"compiled-{threads}-threads")})
            source = str(xml)
    if source is None:
        source = _convert(net)
    config = {
        "INFERENCE_NUM_THREADS": threads,
        "INFERENCE_PRECISION_HINT": "f32",
        "ENABLE_CPU_PINNING": False,
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
    }
    return core.compile_model(source, "CPU", config)


def openvino_network(
    model: str, state_dict: Mapping[str, torch.Tensor], net: nn.Module
) -> OpenVinoNetwork:
    """``net`` (built from ``state_dict``, folded) compiled by OpenVINO for the CPU, at
    most once per process for the same weights and thread count."""
    from fundusfeat.features.onnx import state_digest

    threads = inference_threads()
    digest = state_digest(state_dict)
    key = (model, digest, threads)
    with _lock:
        compiled = _compiled.get(key)
        if compiled is None:
            compiled = _compile(net, threads, cache_folder(model, digest))
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
