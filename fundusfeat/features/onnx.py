"""ONNX export of the networks and an OpenCV-DNN inference backend.

``export_onnx`` writes a network with dynamic batch, height and width (opset 17;
needs the ``onnx`` package: ``pip install fundusfeat[onnx]``). ``OnnxNetwork`` runs
such a file with ``cv2.dnn`` (OpenCV ships it: no extra runtime) and returns the same
``(descriptors, reliability, repeatability)`` tensors as the torch network, so the
keypoint code is unchanged: ``R2D2Fundus.create(backend="onnx")``.
"""

from __future__ import annotations

import copy
import hashlib
import io
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

OPSET = 17
OUTPUT_NAMES = ("descriptors", "reliability", "repeatability")
_CACHE_SIZE = 4
_exported: OrderedDict[tuple[str, str, int], bytes] = OrderedDict()
"""ONNX bytes already exported in this process, by (model, weights digest, opset)."""


def onnx_bytes(net: nn.Module, opset: int = OPSET) -> bytes:
    """Serialise ``net`` (on the CPU, eval mode) to ONNX with dynamic B, H, W.

    Raises:
        ImportError: the ``onnx`` package (needed by the exporter) is missing.
    """
    try:
        import onnx  # noqa: F401
    except ImportError as err:
        raise ImportError("ONNX export needs the onnx package: pip install onnx") from err
    net = copy.deepcopy(net).cpu().eval()
    example = torch.zeros(1, 3, 64, 64)
    buffer = io.BytesIO()
    axes = {"image": {0: "batch", 2: "height", 3: "width"}}
    axes.update({name: {0: "batch", 2: f"{name}_h", 3: f"{name}_w"} for name in OUTPUT_NAMES})
    with warnings.catch_warnings():  # the input checks are constant under tracing
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter, on purpose
        warnings.filterwarnings("ignore", message="Constant folding")  # replicate padding
        torch.onnx.export(
            net,
            (example,),
            buffer,
            dynamo=False,
            input_names=["image"],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=axes,
            opset_version=opset,
        )
    return buffer.getvalue()


def state_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Hex sha256 of a state dict's names, shapes, dtypes and values."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def onnx_network(
    model: str, state_dict: Mapping[str, torch.Tensor], net: nn.Module, opset: int = OPSET
) -> OnnxNetwork:
    """``net`` (built from ``state_dict``) as an :class:`OnnxNetwork`, exported at most once
    per process for the same weights (a small in-memory cache)."""
    key = (model, state_digest(state_dict), opset)
    data = _exported.get(key)
    if data is None:
        data = onnx_bytes(net, opset)
        _exported[key] = data
        while len(_exported) > _CACHE_SIZE:
            _exported.popitem(last=False)
    _exported.move_to_end(key)
    return OnnxNetwork(
        data,
        int(getattr(net, "descriptor_stride", 1)),
        int(getattr(net, "dim", 128)),
        str(getattr(net, "name", model)),
    )


def export_onnx(net: nn.Module, path: str | Path, opset: int = OPSET) -> Path:
    """Write ``net`` as an ONNX file; returns the path."""
    path = Path(path)
    path.write_bytes(onnx_bytes(net, opset))
    return path


class OnnxNetwork(nn.Module):
    """A fundusfeat network run by OpenCV's DNN module from ONNX bytes.

    Call it like the torch network: ``(B, 3, H, W)`` float32 normalised RGB on the CPU
    -> ``(descriptors (B, D, H/s, W/s), reliability (B, 1, H, W), repeatability
    (B, 1, H, W))`` float32 tensors. ``descriptor_stride``, ``dim`` and ``name`` are
    copied from the exported network.
    """

    def __init__(self, model: bytes, descriptor_stride: int, dim: int, name: str) -> None:
        super().__init__()
        self._bytes = model
        self._net = cv2.dnn.readNetFromONNX(np.frombuffer(model, np.uint8))
        self._outputs = list(OUTPUT_NAMES)
        self.descriptor_stride = descriptor_stride
        self.dim = dim
        self.name = name

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if images.device.type != "cpu":
            raise ValueError("the ONNX (OpenCV DNN) backend runs on the CPU only")
        self._net.setInput(np.ascontiguousarray(images.detach().float().numpy()))
        outs = self._net.forward(self._outputs)
        desc, rel, rep = (torch.from_numpy(np.ascontiguousarray(o)) for o in outs)
        return desc, rel, rep

    def __getstate__(self) -> dict[str, Any]:
        return {
            "model": self._bytes,
            "descriptor_stride": self.descriptor_stride,
            "dim": self.dim,
            "name": self.name,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["model"], state["descriptor_stride"], state["dim"], state["name"])
