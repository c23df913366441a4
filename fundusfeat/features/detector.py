"""The detector core: a network, its backend and the settings, from prepared images to
keypoints and descriptors as arrays in the caller's pixels.

:class:`fundusfeat.R2D2Fundus` is the cv2.Feature2D adapter over this class; the batch
registration (:mod:`fundusfeat.pipeline.batch`) and ``register()`` use the arrays directly.

Pipeline for one image (coordinates ``(x, y)``, pixel-centre convention):

1. :func:`~fundusfeat.features.prepare.prepare`: validation, FOV, working scale.
2. :func:`~fundusfeat.features.keypoints.extract_multiscale` at the working scale.
3. Keypoints are mapped back to the caller's pixels, ``x = (x_w + 0.5) / s_x - 0.5``,
   and those outside the caller's region (FOV and mask) are dropped.

``size = keypoint_size / (pyramid scale * working scale)``; ``response`` = repeatability
x reliability; ``octave`` = pyramid level index (0 = full working scale).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from fundusfeat.features import keypoints as kp
from fundusfeat.features import models
from fundusfeat.features.checkpoint import network_from_state_dict
from fundusfeat.features.network import fold_for_inference
from fundusfeat.features.openvino_net import resolve_backend
from fundusfeat.features.prepare import Prepared, prepare
from fundusfeat.features.scale import from_working, to_working
from fundusfeat.features.settings import DetectorConfig
from fundusfeat.features.threads import run_shared

BACKENDS = ("auto", "torch", "onnx", "openvino")


class Features(NamedTuple):
    """Keypoints and descriptors of one image, in the caller's pixels.

    Attributes:
        xy: ``(N, 2)`` float64 ``(x, y)`` (``cv2.KeyPoint.pt``).
        size: ``(N,)`` float32 ``cv2.KeyPoint.size``.
        response: ``(N,)`` float32 score, sorted descending.
        octave: ``(N,)`` int64 pyramid level index.
        desc: ``(N, D)`` float32 unit rows.
    """

    xy: np.ndarray
    size: np.ndarray
    response: np.ndarray
    octave: np.ndarray
    desc: np.ndarray

    @classmethod
    def empty(cls, dim: int) -> Features:
        """No keypoints: every array with 0 rows (descriptors ``(0, dim)``)."""
        return cls(
            np.zeros((0, 2), np.float64),
            np.zeros(0, np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, np.int64),
            np.empty((0, dim), np.float32),
        )

    def __len__(self) -> int:  # type: ignore[override]
        return len(self.xy)


class Detector:
    """A network with its weights, backend, device and settings.

    Args:
        model: a registry name (:mod:`fundusfeat.features.models`).
        state_dict: the network's weights (CPU tensors).
        config: the settings.
        device: the torch device (already resolved).
        backend: ``"auto"`` (torch; the environment variable ``FUNDUSFEAT_BACKEND``
            overrides it, see :func:`fundusfeat.features.openvino_net.resolve_backend`),
            ``"torch"``, ``"openvino"`` (CPU; converted once per machine, compiled once per
            weights, thread count and process) or
            ``"onnx"`` (OpenCV DNN on the CPU; the model is exported once per weights and
            process, see :func:`fundusfeat.features.onnx.onnx_network`). The resolved name
            is :attr:`backend`.

    Attributes:
        share_threads: on the CPU with the torch backend, :meth:`extract` of several
            images runs them side by side, torch's threads divided among them
            (:func:`fundusfeat.features.threads.run_shared`; the same results); False
            runs them one after the other.
    """

    def __init__(
        self,
        model: str,
        state_dict: Mapping[str, torch.Tensor],
        config: DetectorConfig,
        device: torch.device,
        backend: str = "auto",
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        backend = resolve_backend(backend, device, BACKENDS)
        if backend in ("onnx", "openvino") and device.type != "cpu":
            raise ValueError(f"backend={backend!r} runs on the CPU: use device='cpu'")
        self.spec = models.get(model)
        self.state_dict = dict(state_dict)
        self.config = config
        self.device = device
        self.backend = backend
        self.share_threads = True
        self.network = self._build()

    @property
    def shares_threads(self) -> bool:
        """Whether several images are detected side by side (:attr:`share_threads` on
        the CPU with the torch backend)."""
        return self.share_threads and self.device.type == "cpu" and self.backend == "torch"

    @property
    def dim(self) -> int:
        """Descriptor length."""
        return int(getattr(self.network, "dim", 128))

    def _build(self) -> nn.Module:
        net = fold_for_inference(
            network_from_state_dict(self.spec.name, self.state_dict, self.device)
        )
        if self.backend == "onnx":
            from fundusfeat.features.onnx import onnx_network

            return onnx_network(self.spec.name, self.state_dict, net)
        if self.backend == "openvino":
            from fundusfeat.features.openvino_net import openvino_network

            return openvino_network(self.spec.name, self.state_dict, net)
        return net

    # ------------------------------------------------------------------ preparation
    def prepare(
        self, image: Any, mask: Any, image_name: str = "image", mask_name: str = "mask"
    ) -> Prepared:
        """Validate and prepare one image (see :func:`fundusfeat.features.prepare.prepare`)."""
        return prepare(
            image, mask, self.config, self.device, self.spec.normalisation, image_name, mask_name
        )

    # ------------------------------------------------------------------- extraction
    def extract(self, prepared: Sequence[Prepared]) -> list[Features]:
        """Keypoints and descriptors of prepared images (batched by working size on CUDA)."""
        results = [Features.empty(self.dim) for _ in prepared]
        groups = self._batches(prepared)

        def work(group: list[int]) -> list[Features]:
            feats = kp.extract_multiscale(
                self.network,
                _stacked([prepared[i].tensor for i in group]),
                _stacked([prepared[i].valid for i in group]),
                **self._extract_kwargs(),
            )
            return [self._to_input(f, prepared[i]) for i, f in zip(group, feats, strict=True)]

        calls = [functools.partial(work, group) for group in groups]
        done = run_shared(calls) if self.shares_threads else [call() for call in calls]
        for group, feats in zip(groups, done, strict=True):
            for i, f in zip(group, feats, strict=True):
                results[i] = f
        return results

    def detect_and_describe(self, image: Any, mask: Any = None) -> Features:
        """:meth:`prepare` then :meth:`extract` of one image."""
        return self.extract([self.prepare(image, mask)])[0]

    def _batches(self, prepared: Sequence[Prepared]) -> list[list[int]]:
        """Indices of non-blank images grouped for one forward pass each.

        Images of equal working size share a batch on CUDA; on CPU each image is its
        own batch (no speed gain there, and results stay bitwise equal to single calls).
        """
        todo = [i for i, p in enumerate(prepared) if not p.blank]
        if self.device.type != "cuda":
            return [[i] for i in todo]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i in todo:
            groups.setdefault(tuple(prepared[i].tensor.shape), []).append(i)
        return list(groups.values())

    def _extract_kwargs(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "scale_f": cfg.scale_f,
            "min_scale": cfg.min_scale,
            "max_scale": cfg.max_scale,
            "rep_thr": cfg.rep_thr,
            "rel_thr": cfg.rel_thr,
            "max_keypoints": cfg.max_keypoints,
            "border": cfg.border,
            "nms_size": cfg.nms_size,
            "rep_blur": cfg.rep_blur,
        }

    def _to_input(self, feats: kp.MultiScaleFeatures, prep: Prepared) -> Features:
        """Map working-scale features to the caller's pixels, inside the caller's region."""
        xy = from_working(feats.xy.cpu().numpy(), prep.factors)
        h, w = prep.region.shape
        col = np.clip(np.rint(xy[:, 0]).astype(np.int64), 0, w - 1)
        row = np.clip(np.rint(xy[:, 1]).astype(np.int64), 0, h - 1)
        keep = prep.region[row, col]
        if not keep.any():
            return Features.empty(self.dim)
        scale = feats.scale.cpu().numpy()[keep]
        working = math.sqrt(prep.factors[0] * prep.factors[1])
        octave = kp.octave_of(feats.scale, self.config.scale_f).cpu().numpy()[keep]
        return Features(
            xy=xy[keep],
            size=self.config.keypoint_size / (scale * working),
            response=feats.score.cpu().numpy()[keep],
            octave=octave.astype(np.int64),
            desc=np.ascontiguousarray(feats.desc.cpu().numpy()[keep], dtype=np.float32),
        )

    # ------------------------------------------------------------------ description
    def describe(self, prep: Prepared, xy: np.ndarray, size: np.ndarray) -> np.ndarray:
        """Descriptors at given points (caller's pixels), each at the pyramid level whose
        scale is nearest (in log) to the one its ``size`` implies.

        Args:
            prep: the prepared image.
            xy: ``(N, 2)`` points inside the image.
            size: ``(N,)`` ``cv2.KeyPoint.size`` of each point.

        Returns:
            ``(N, D)`` float32 unit rows.
        """
        if len(xy) == 0:
            return np.empty((0, self.dim), np.float32)
        scale = self._nearest_levels(np.asarray(size, np.float64), prep)
        work = torch.from_numpy(to_working(xy, prep.factors)).float()
        desc = kp.describe_at(self.network, prep.tensor, work, scale.to(prep.tensor.device))
        return np.ascontiguousarray(desc.cpu().numpy(), dtype=np.float32)

    def _nearest_levels(self, sizes: np.ndarray, prep: Prepared) -> torch.Tensor:
        """Pyramid scale nearest (in log) to the one implied by each keypoint size."""
        cfg = self.config
        h, w = prep.tensor.shape[-2:]
        levels = np.array(kp.pyramid_scales(h, w, cfg.scale_f, cfg.min_scale, cfg.max_scale))
        implied = cfg.keypoint_size / (np.maximum(sizes, 1e-6) * math.sqrt(np.prod(prep.factors)))
        idx = np.abs(np.log(implied)[:, None] - np.log(levels)[None, :]).argmin(axis=1)
        return torch.from_numpy(levels[idx]).float()


def _stacked(tensors: list[torch.Tensor]) -> torch.Tensor:
    """``torch.cat`` along the batch, without the copy ``torch.cat`` makes of one tensor
    (a 10 MB image at the working scale: ~3 ms on the CPU)."""
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)
