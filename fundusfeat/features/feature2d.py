"""R2D2Fundus: the learned fundus detector/descriptor with the cv2.Feature2D interface.

A thin adapter: the settings are a :class:`~fundusfeat.features.settings.DetectorConfig`, the
work is done by :class:`~fundusfeat.features.detector.Detector` (preparation, network, keypoint
selection), and this class converts its arrays to ``cv2.KeyPoint`` and back and
persists the settings, as ``cv2.Feature2D`` does.

KeyPoint fields: ``pt`` input pixels (origin at the centre of the top-left pixel);
``size = keypoint_size / (pyramid scale * working scale)``; ``response`` = repeatability x
reliability; ``octave`` = pyramid level index (0 = full working scale); ``angle = -1``
(the descriptor is not rotation-normalised). A blank image (no intensity variation)
gives no keypoints: ``((), empty (0, 128))``.

This class deliberately does not subclass ``cv2.Feature2D`` (inherited, non-overridden
methods of such subclasses crash the interpreter); it implements the same methods.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from fundusfeat.features import checkpoint, models
from fundusfeat.features.detector import BACKENDS, Detector, Features
from fundusfeat.features.hardware import resolve_device
from fundusfeat.features.settings import DetectorConfig

logger = logging.getLogger(__name__)

DESCRIPTOR_SIZE = 128

_AUTO = "auto"


class R2D2Fundus:
    """Learned keypoints + 128-D descriptors for fundus photographs, cv2.Feature2D-like.

    Create with :meth:`create`. Methods mirror ``cv2.Feature2D``: ``detect``,
    ``compute``, ``detectAndCompute``, ``descriptorSize``, ``descriptorType``,
    ``defaultNorm``, ``getDefaultName``, ``empty``, ``read``, ``write``, ``save``,
    ``clear``. Instances pickle (the network is rebuilt from the stored state dict).
    """

    def __init__(
        self,
        config: DetectorConfig | dict[str, Any],
        model: str | None = None,
        weights: str | Path = "default",
        device: torch.device | str | None = None,
        backend: str = "auto",
        allow_untrained: bool = False,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        cpu_only = backend in ("onnx", "openvino")
        dev = resolve_device("cpu" if cpu_only and device is None else device)
        if not isinstance(weights, (str, Path)):
            raise TypeError(f"weights must be 'default' or a path, got {type(weights).__name__}")
        shipped = isinstance(weights, str) and weights == "default"
        if model is None and shipped:
            model = models.default_model(dev)
        spec = models.get(model) if shipped else None
        if spec is not None and spec.weights is None:
            raise ValueError(
                f"model {model!r} ships no weights: pass weights=<checkpoint> (e.g. a "
                "training run's last.pt)"
            )
        if spec is not None and not spec.trained and not allow_untrained:
            raise ValueError(
                f"model {model!r}: its shipped weights are untrained (a seeded "
                "initialisation: few keypoints, registrations fail). Train it "
                "(fundusfeat train) and pass weights=<checkpoint>, or pass "
                "allow_untrained=True to run the placeholder (training, tests)"
            )
        found, state = checkpoint.load_state_dict(weights, model)
        if not isinstance(config, DetectorConfig):  # settings given: fill the model's defaults
            config = models.get(found).defaults.replace(**config)
        self._weights = str(weights)
        self._core = Detector(found, state, config, dev, backend)

    @classmethod
    def create(
        cls,
        max_keypoints: int | None = None,
        device: torch.device | str | None = None,
        weights: str | Path = "default",
        model: str | None = None,
        rep_thr: float | None = None,
        rel_thr: float | None = None,
        scale_f: float | None = None,
        min_scale: float | None = None,
        max_scale: float | None = None,
        fov: bool | None = None,
        target_diameter: float | None | str = _AUTO,
        border: int | None = None,
        keypoint_size: float | None = None,
        backend: str = "auto",
        nms_size: int | None = None,
        scale_tolerance: float | None = None,
        max_upscale: float | None = None,
        rep_blur: float | None = None,
        allow_untrained: bool = False,
    ) -> R2D2Fundus:
        """Create a detector; every setting left as None is the model's default.

        Args:
            max_keypoints: most keypoints returned per image (over all scales).
            device: torch device; None = CUDA if available, else CPU.
            weights: ``"default"`` (shipped, sha256-verified) or a checkpoint path.
            model: a registry name (:func:`fundusfeat.features.models.names`: ``"fast"``,
                ``"r2d2"``); None = :func:`fundusfeat.features.models.default_model` for default
                weights, or inferred from a checkpoint's keys.
            rep_thr: minimum repeatability of a keypoint, in [0, 1].
            rel_thr: minimum reliability of a keypoint, in [0, 1].
            scale_f: ratio between pyramid scales (> 1; the paper uses 2**0.25).
            min_scale: smallest pyramid scale (the paper stops below 1/3).
            max_scale: largest pyramid scale.
            fov: restrict keypoints to the estimated field of view and normalise the
                scale by its diameter (else by ``max(H, W)``).
            target_diameter: FOV diameter in px at the working scale; None = no resize;
                ``"auto"`` = the model's default.
            border: keypoints within this many level pixels of the FOV rim, mask edge or
                image border are dropped.
            keypoint_size: ``KeyPoint.size`` in working-scale pixels at pyramid scale 1.
            backend: ``"auto"`` (torch, unless ``FUNDUSFEAT_BACKEND`` names another),
                ``"torch"``, ``"openvino"`` (CPU; the ``openvino`` extra, converted once
                per machine into the user's cache dir) or ``"onnx"`` (the network exported to
                ONNX and run by OpenCV's DNN module on the CPU; needs the ``onnx`` package).
            nms_size: side of the non-maximum suppression window in level pixels (odd).
            scale_tolerance: working scales within this fraction of 1 are taken as 1.
            max_upscale: the largest enlargement to the working scale (>= 1).
            rep_blur: Gaussian sigma (level pixels) of the repeatability's smoothing
                before its maxima are taken (0 = none).
            allow_untrained: run a model whose shipped weights are untrained (its seeded
                placeholder; for training and tests). Without it such a model is
                refused with a ValueError that says so.

        Raises:
            TypeError, ValueError: an invalid argument (the message names it).
        """
        given = {
            "max_keypoints": max_keypoints,
            "rep_thr": rep_thr,
            "rel_thr": rel_thr,
            "scale_f": scale_f,
            "min_scale": min_scale,
            "max_scale": max_scale,
            "fov": fov,
            "border": border,
            "keypoint_size": keypoint_size,
            "nms_size": nms_size,
            "scale_tolerance": scale_tolerance,
            "max_upscale": max_upscale,
            "rep_blur": rep_blur,
        }
        settings = {k: v for k, v in given.items() if v is not None}
        if isinstance(target_diameter, str):
            if target_diameter != _AUTO:
                raise ValueError(
                    f"target_diameter must be a number, None or 'auto', got {target_diameter!r}"
                )
        else:
            settings["target_diameter"] = target_diameter
        return cls(
            settings,
            model=model,
            weights=weights,
            device=device,
            backend=backend,
            allow_untrained=allow_untrained,
        )

    # ------------------------------------------------------------------ properties
    @property
    def config(self) -> DetectorConfig:
        """The current settings (immutable; use the setters or ``create``)."""
        return self._core.config

    @property
    def device(self) -> torch.device:
        """Device the network runs on."""
        return self._core.device

    @property
    def model(self) -> str:
        """Model name (see :mod:`fundusfeat.features.models`)."""
        return self._core.spec.name

    @property
    def core(self) -> Detector:
        """The detector core (arrays instead of ``cv2.KeyPoint``)."""
        return self._core

    def _set(self, **changes: Any) -> None:
        self._core.config = self._core.config.replace(**changes)

    def getMaxKeypoints(self) -> int:
        return self.config.max_keypoints

    def setMaxKeypoints(self, max_keypoints: int) -> None:
        self._set(max_keypoints=int(max_keypoints))

    def getRepThreshold(self) -> float:
        return self.config.rep_thr

    def setRepThreshold(self, rep_thr: float) -> None:
        self._set(rep_thr=float(rep_thr))

    def getRelThreshold(self) -> float:
        return self.config.rel_thr

    def setRelThreshold(self, rel_thr: float) -> None:
        self._set(rel_thr=float(rel_thr))

    # ---------------------------------------------------------- cv2.Feature2D API
    def descriptorSize(self) -> int:
        """Descriptor length: 128."""
        return DESCRIPTOR_SIZE

    def descriptorType(self) -> int:
        """``cv2.CV_32F``."""
        return cv2.CV_32F

    def defaultNorm(self) -> int:
        """``cv2.NORM_L2``."""
        return cv2.NORM_L2

    def getDefaultName(self) -> str:
        return "Feature2D.R2D2Fundus"

    def empty(self) -> bool:
        """True when no network is loaded."""
        return self._core.network is None

    def clear(self) -> None:
        """No cached state to clear (kept for cv2.Algorithm compatibility)."""

    def detect(
        self, image: np.ndarray | Sequence[np.ndarray], mask: Any = None
    ) -> tuple[cv2.KeyPoint, ...] | list[tuple[cv2.KeyPoint, ...]]:
        """Detect keypoints.

        Args:
            image: ``(H, W[, 3])`` image (see module docstring) or a list of them.
            mask: None or ``(H, W)`` uint8/bool (non-zero = allowed); a list for a list.

        Returns:
            Tuple of ``cv2.KeyPoint`` in input pixels (a list of tuples for a list).
        """
        if _is_image_list(image):
            return [kps for kps, _ in self._run_many(image, mask)]
        return self._run_many([image], [mask], names=("image", "mask"))[0][0]

    def detectAndCompute(
        self,
        image: np.ndarray | Sequence[np.ndarray],
        mask: Any = None,
        descriptors: Any = None,
        useProvidedKeypoints: bool = False,
        keypoints: Sequence[cv2.KeyPoint] | None = None,
    ) -> Any:
        """Detect and describe keypoints.

        Args:
            image: image or list of images.
            mask: None or ``(H, W)`` uint8/bool mask (a list for a list of images).
            descriptors: ignored (OpenCV's output argument).
            useProvidedKeypoints: describe ``keypoints`` instead of detecting (same as
                :meth:`compute`).
            keypoints: keypoints for ``useProvidedKeypoints=True``.

        Returns:
            ``(keypoints tuple, (N, 128) float32 unit rows)``; for a list of images a list
            of such pairs. No keypoints: ``((), np.empty((0, 128), np.float32))``.
        """
        del descriptors
        if useProvidedKeypoints:
            if keypoints is None:
                raise ValueError("keypoints must be given when useProvidedKeypoints=True")
            return self.compute(image, keypoints)
        if _is_image_list(image):
            return self._run_many(image, mask)
        return self._run_many([image], [mask], names=("image", "mask"))[0]

    def compute(
        self, image: np.ndarray, keypoints: Sequence[cv2.KeyPoint], descriptors: Any = None
    ) -> tuple[tuple[cv2.KeyPoint, ...], np.ndarray]:
        """Descriptors at given keypoints.

        Each keypoint is described at the pyramid level whose scale is nearest (in log)
        to the one implied by its ``size`` (``size = keypoint_size / (scale * working
        scale)``; so keypoints from :meth:`detect` get their own level back). Keypoints
        whose ``pt`` is outside the image are removed, as OpenCV does.

        Returns:
            ``(kept keypoints tuple, (N, 128) float32 unit rows)``.
        """
        del descriptors
        kps = _check_keypoints(keypoints)
        prep = self._core.prepare(image, None)
        pts = cv2.KeyPoint_convert(kps).reshape(-1, 2) if kps else np.zeros((0, 2), np.float32)
        w, h = prep.input_size
        inside = (pts[:, 0] >= -0.5) & (pts[:, 0] < w - 0.5)
        inside &= (pts[:, 1] >= -0.5) & (pts[:, 1] < h - 0.5)
        kps = tuple(k for k, ok in zip(kps, inside, strict=True) if ok)
        if not kps:
            return _empty()
        sizes = np.array([k.size for k in kps], np.float64)
        return kps, self._core.describe(prep, pts[inside], sizes)

    # ----------------------------------------------------------------- persistence
    def write(self, fs: str | cv2.FileStorage, name: str | None = None) -> None:
        """Write the settings to a file name or an open ``cv2.FileStorage``."""
        if isinstance(fs, (str, Path)):
            storage = cv2.FileStorage(str(fs), cv2.FILE_STORAGE_WRITE)
            try:
                self._write_fields(storage)
            finally:
                storage.release()
            return
        if not isinstance(fs, cv2.FileStorage):
            raise TypeError(f"fs must be a file name or cv2.FileStorage, got {type(fs).__name__}")
        if name:
            fs.startWriteStruct(name, cv2.FileNode_MAP)
            self._write_fields(fs)
            fs.endWriteStruct()
        else:
            self._write_fields(fs)

    def save(self, fileName: str) -> None:
        """Write the settings to ``fileName`` (YAML/XML/JSON by extension)."""
        self.write(fileName)

    def read(self, fn: str | cv2.FileNode) -> None:
        """Read settings written by :meth:`write` (file name or ``cv2.FileNode``).

        The network is reloaded when the model or weights change.
        """
        if isinstance(fn, (str, Path)):
            storage = cv2.FileStorage(str(fn), cv2.FILE_STORAGE_READ)
            try:
                self._read_fields(storage.root())
            finally:
                storage.release()
            return
        if not isinstance(fn, cv2.FileNode):
            raise TypeError(f"fn must be a file name or cv2.FileNode, got {type(fn).__name__}")
        self._read_fields(fn)

    def _write_fields(self, fs: cv2.FileStorage) -> None:
        fs.write("name", self.getDefaultName())
        fs.write("model", self.model)
        fs.write("weights", self._weights)
        for name in DetectorConfig.field_names():
            value = getattr(self.config, name)
            if value is None:
                value = -1.0
            fs.write(name, int(value) if isinstance(value, bool) else value)

    def _read_fields(self, node: cv2.FileNode) -> None:
        values: dict[str, Any] = {}
        for name in DetectorConfig.field_names():
            item = node.getNode(name)
            if item.empty():
                continue
            values[name] = _cast_like(item.real(), getattr(self.config, name), name)
        config = self.config.replace(**values)
        model, weights = node.getNode("model").string(), node.getNode("weights").string()
        if (model and model != self.model) or (weights and weights != self._weights):
            found, state = checkpoint.load_state_dict(weights or self._weights, model or self.model)
            self._core = Detector(found, state, config, self.device, self._core.backend)
            self._weights = weights or self._weights
        else:
            self._core.config = config

    def __getstate__(self) -> dict[str, Any]:
        core = self._core
        return {
            "config": dataclasses.asdict(core.config),
            "model": self.model,
            "weights": self._weights,
            "state_dict": {k: v.detach().cpu() for k, v in core.state_dict.items()},
            "device": str(core.device),
            "backend": core.backend,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        device = state["device"]
        if torch.device(device).type == "cuda" and not torch.cuda.is_available():
            logger.warning("CUDA unavailable; R2D2Fundus falls back to the CPU")
            device = "cpu"
        self._weights = state["weights"]
        self._core = Detector(
            state["model"],
            state["state_dict"],
            DetectorConfig(**state["config"]),
            torch.device(device),
            state.get("backend", "torch"),
        )

    def __repr__(self) -> str:
        return (
            f"R2D2Fundus(model={self.model!r}, device='{self.device}', "
            f"backend={self._core.backend!r}, config={self.config})"
        )

    # -------------------------------------------------------------------- pipeline
    def _run_many(
        self,
        images: Sequence[Any],
        masks: Any,
        names: tuple[str, str] = ("images[{i}]", "masks[{i}]"),
    ) -> list[tuple[tuple[cv2.KeyPoint, ...], np.ndarray]]:
        """Detect and describe a list of images (batched by working size on CUDA)."""
        masks = _broadcast_masks(masks, len(images))
        prepared = [
            self._core.prepare(img, m, names[0].format(i=i), names[1].format(i=i))
            for i, (img, m) in enumerate(zip(images, masks, strict=True))
        ]
        return [to_keypoints(f) for f in self._core.extract(prepared)]


def keypoint_tuple(features: Features) -> tuple[cv2.KeyPoint, ...]:
    """The ``cv2.KeyPoint`` of :class:`~fundusfeat.features.detector.Features` (``angle = -1``)."""
    return tuple(
        cv2.KeyPoint(x, y, s, -1.0, r, o)
        for (x, y), s, r, o in zip(
            features.xy.tolist(),
            features.size.tolist(),
            features.response.tolist(),
            features.octave.tolist(),
            strict=True,
        )
    )


def to_keypoints(features: Features) -> tuple[tuple[cv2.KeyPoint, ...], np.ndarray]:
    """``(tuple of cv2.KeyPoint, descriptors)`` of
    :class:`~fundusfeat.features.detector.Features`."""
    if len(features) == 0:
        return (), np.empty((0, features.desc.shape[1]), np.float32)
    return keypoint_tuple(features), features.desc


class KeypointSequence(Sequence[cv2.KeyPoint]):
    """The keypoints of :class:`~fundusfeat.features.detector.Features` as a read-only sequence of
    ``cv2.KeyPoint``, built on first access (a registration that nobody draws never pays
    for thousands of Python objects). Compares equal to the tuple it holds."""

    def __init__(self, features: Features) -> None:
        self._features = features
        self._keypoints: tuple[cv2.KeyPoint, ...] | None = None

    @property
    def features(self) -> Features:
        """The arrays the keypoints are made of."""
        return self._features

    def _tuple(self) -> tuple[cv2.KeyPoint, ...]:
        if self._keypoints is None:
            self._keypoints = keypoint_tuple(self._features)
        return self._keypoints

    def __len__(self) -> int:
        return len(self._features)

    def __getitem__(self, index: Any) -> Any:
        return self._tuple()[index]

    def __iter__(self) -> Any:
        return iter(self._tuple())

    def __eq__(self, other: object) -> bool:
        return tuple(self) == (tuple(other) if isinstance(other, Sequence) else other)

    def __hash__(self) -> int:
        return hash(self._tuple())

    def __repr__(self) -> str:
        return f"KeypointSequence({len(self)} keypoints)"

    def __getstate__(self) -> dict[str, Any]:
        return {"features": self._features}  # the cv2 objects are rebuilt on demand

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["features"])


def _empty() -> tuple[tuple[cv2.KeyPoint, ...], np.ndarray]:
    return (), np.empty((0, DESCRIPTOR_SIZE), np.float32)


def _is_image_list(image: Any) -> bool:
    return isinstance(image, (list, tuple))


def _broadcast_masks(masks: Any, n: int) -> list[Any]:
    if masks is None:
        return [None] * n
    if isinstance(masks, (list, tuple)) and len(masks) == n:
        return list(masks)
    raise ValueError(f"masks must be None or a list of {n} masks (one per image)")


def _check_keypoints(kps: Any) -> tuple[cv2.KeyPoint, ...]:
    if kps is None or isinstance(kps, np.ndarray):
        raise TypeError("keypoints must be a sequence of cv2.KeyPoint")
    kps = tuple(kps)
    if not all(isinstance(k, cv2.KeyPoint) for k in kps):
        raise TypeError("keypoints must be a sequence of cv2.KeyPoint")
    return kps


def _cast_like(value: float, current: Any, name: str) -> Any:
    if name == "target_diameter":
        return None if value < 0 else float(value)
    if isinstance(current, bool):
        return bool(value)
    if isinstance(current, int):
        return int(value)
    return float(value)
