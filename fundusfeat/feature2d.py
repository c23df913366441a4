"""R2D2Fundus: the learned fundus detector/descriptor with the cv2.Feature2D interface.

Pipeline for one image (all coordinates ``(x, y)``, pixel-centre convention):

1. :func:`~fundusfeat.preprocess.validate_image` (BGR uint8 / gray / float in [0, 1]).
2. Field of view: :func:`~fundusfeat.preprocess.estimate_fov` (``fov=True``); the
   keypoint region is the FOV AND the user's mask.
3. Scale normalisation: the image is resized (INTER_AREA) so that the FOV diameter is
   ``target_diameter`` px (at most 2x enlargement); ``target_diameter=None`` keeps the
   input size.
4. :func:`~fundusfeat.kp.extract_multiscale` at the working scale.
5. Keypoints are mapped back to the caller's pixels: ``x = (x_w + 0.5) / s_x - 0.5``.

KeyPoint fields: ``pt`` input pixels; ``size = keypoint_size / (pyramid scale * working
scale)`` (``keypoint_size`` = 8 px at the working scale); ``response`` = repeatability x
reliability; ``octave`` = pyramid level index (0 = full working scale); ``angle = -1``
(the descriptor is not rotation-normalised).

A blank image (no intensity variation) gives no keypoints: ``((), empty (0, 128))``.

This class deliberately does not subclass ``cv2.Feature2D`` (inherited, non-overridden
methods of such subclasses crash the interpreter); it implements the same methods.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import torch

from fundusfeat import checkpoint, preprocess
from fundusfeat import keypoints as kp

logger = logging.getLogger(__name__)

DESCRIPTOR_SIZE = 128
BACKENDS = ("torch", "onnx")
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    # the paper's inference: FOV 750 px, pyramid 1 .. 1/3, thresholds 0.7
    "r2d2": {
        "target_diameter": preprocess.TARGET_FOV_DIAMETER,
        "rep_thr": kp.DEFAULT_REP_THR,
        "rel_thr": kp.DEFAULT_REL_THR,
        "min_scale": kp.DEFAULT_MIN_SCALE,
        "nms_size": 3,
    },
    # the fast network at one scale: FOV 880 px, no pyramid. On held-out synthetic pairs
    # (seed 1, easy and hard) this registered better than the 5-level pyramid at FOV
    # 1000 px in under half the time (docs/benchmarks.md, "Choosing the defaults")
    "fast": {
        "target_diameter": 880.0,
        "rep_thr": 0.5,
        "rel_thr": 0.5,
        "min_scale": 1.0,
        "nms_size": 3,
    },
}
"""Settings that depend on the model, used where ``create`` leaves them unset."""


@dataclass(frozen=True)
class DetectorConfig:
    """Validated, immutable settings of :class:`R2D2Fundus` (see ``create`` for meanings)."""

    max_keypoints: int = kp.DEFAULT_MAX_KEYPOINTS
    rep_thr: float = kp.DEFAULT_REP_THR
    rel_thr: float = kp.DEFAULT_REL_THR
    scale_f: float = kp.DEFAULT_SCALE_F
    min_scale: float = kp.DEFAULT_MIN_SCALE
    max_scale: float = 1.0
    fov: bool = True
    target_diameter: float | None = preprocess.TARGET_FOV_DIAMETER
    border: int = kp.DEFAULT_BORDER
    keypoint_size: float = 8.0
    nms_size: int = 3

    def __post_init__(self) -> None:
        if not isinstance(self.max_keypoints, (int, np.integer)) or self.max_keypoints < 0:
            raise ValueError(f"max_keypoints must be an int >= 0, got {self.max_keypoints!r}")
        for name in ("rep_thr", "rel_thr"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if not self.scale_f > 1.0:
            raise ValueError(f"scale_f must be > 1, got {self.scale_f!r}")
        if not 0.0 < self.min_scale <= self.max_scale:
            raise ValueError(
                f"min_scale and max_scale must satisfy 0 < min_scale <= max_scale, "
                f"got {self.min_scale!r}, {self.max_scale!r}"
            )
        if self.target_diameter is not None and not self.target_diameter > 0:
            raise ValueError(f"target_diameter must be > 0 or None, got {self.target_diameter!r}")
        if self.nms_size < 1 or self.nms_size % 2 == 0:
            raise ValueError(f"nms_size must be a positive odd integer, got {self.nms_size!r}")
        if self.border < 0 or self.keypoint_size <= 0:
            raise ValueError("border must be >= 0 and keypoint_size > 0")


class _Prepared(NamedTuple):
    """One image ready for the network."""

    tensor: torch.Tensor  # (1, 3, h, w) normalised RGB at the working scale
    valid: torch.Tensor  # (1, 1, h, w) bool keypoint region at the working scale
    factors: tuple[float, float]  # working scale (sx, sy)
    region: np.ndarray  # (H, W) bool keypoint region at the input scale
    blank: bool  # no intensity variation


def _empty() -> tuple[tuple[cv2.KeyPoint, ...], np.ndarray]:
    return (), np.empty((0, DESCRIPTOR_SIZE), np.float32)


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
        backend: str = "torch",
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self._backend = backend
        self._device = _resolve_device("cpu" if backend == "onnx" and device is None else device)
        if backend == "onnx" and self._device.type != "cpu":
            raise ValueError("backend='onnx' (OpenCV DNN) runs on the CPU: use device='cpu'")
        self._weights = str(weights)
        default = isinstance(weights, str) and weights == "default"
        if model is None and default:
            model = checkpoint.default_model(self._device)
        self._model, self._state = checkpoint.load_state_dict(weights, model)
        if not isinstance(config, DetectorConfig):  # settings given: fill the model's defaults
            config = DetectorConfig(**{**MODEL_DEFAULTS[self._model], **config})
        self._config = config
        self._net: torch.nn.Module | None = self._build_network()

    @classmethod
    def create(
        cls,
        max_keypoints: int = kp.DEFAULT_MAX_KEYPOINTS,
        device: torch.device | str | None = None,
        weights: str | Path = "default",
        model: str | None = None,
        rep_thr: float | None = None,
        rel_thr: float | None = None,
        scale_f: float = kp.DEFAULT_SCALE_F,
        min_scale: float | None = None,
        max_scale: float = 1.0,
        fov: bool = True,
        target_diameter: float | None | str = "auto",
        border: int = kp.DEFAULT_BORDER,
        keypoint_size: float = 8.0,
        backend: str = "torch",
        nms_size: int | None = None,
    ) -> R2D2Fundus:
        """Create a detector.

        Args:
            max_keypoints: most keypoints returned per image (over all scales).
            device: torch device; None = CUDA if available, else CPU.
            weights: ``"default"`` (shipped, sha256-verified) or a checkpoint path.
            model: ``"r2d2"`` or ``"fast"``; None = ``checkpoint.default_model(device)``
                for default weights, or inferred from a checkpoint's keys.
            rep_thr: minimum repeatability of a keypoint, in [0, 1]; None = the
                model's default (:data:`MODEL_DEFAULTS`).
            rel_thr: minimum reliability of a keypoint, in [0, 1]; None = model default.
            scale_f: ratio between pyramid scales (> 1; the paper uses 2**0.25).
            min_scale: smallest pyramid scale (the paper stops below 1/3); None = model
                default.
            max_scale: largest pyramid scale.
            fov: restrict keypoints to the estimated field of view and normalise the
                scale by its diameter (else by ``max(H, W)``).
            target_diameter: FOV diameter in px at the working scale; None = no resize;
                ``"auto"`` = the model's default.
            border: keypoints within this many level pixels of the FOV rim, mask edge or
                image border are dropped.
            keypoint_size: ``KeyPoint.size`` in working-scale pixels at pyramid scale 1.
            nms_size: side of the non-maximum suppression window in level pixels (odd);
                None = model default.
            backend: ``"torch"`` or ``"onnx"`` (the network exported to ONNX and run by
                OpenCV's DNN module on the CPU; needs the ``onnx`` package to export).
        """
        overrides = {
            "max_keypoints": max_keypoints,
            "rep_thr": rep_thr,
            "rel_thr": rel_thr,
            "scale_f": scale_f,
            "min_scale": min_scale,
            "max_scale": max_scale,
            "fov": fov,
            "target_diameter": target_diameter,
            "border": border,
            "keypoint_size": keypoint_size,
            "nms_size": nms_size,
        }
        given = {k: v for k, v in overrides.items() if not _is_unset(k, v)}
        return cls(given, model=model, weights=weights, device=device, backend=backend)

    # ------------------------------------------------------------------ properties
    @property
    def config(self) -> DetectorConfig:
        """The current settings (immutable; use the setters or ``create``)."""
        return self._config

    @property
    def device(self) -> torch.device:
        """Device the network runs on."""
        return self._device

    @property
    def model(self) -> str:
        """Architecture name (``"r2d2"`` or ``"fast"``)."""
        return self._model

    def getMaxKeypoints(self) -> int:
        return self._config.max_keypoints

    def setMaxKeypoints(self, max_keypoints: int) -> None:
        self._config = dataclasses.replace(self._config, max_keypoints=int(max_keypoints))

    def getRepThreshold(self) -> float:
        return self._config.rep_thr

    def setRepThreshold(self, rep_thr: float) -> None:
        self._config = dataclasses.replace(self._config, rep_thr=float(rep_thr))

    def getRelThreshold(self) -> float:
        return self._config.rel_thr

    def setRelThreshold(self, rel_thr: float) -> None:
        self._config = dataclasses.replace(self._config, rel_thr=float(rel_thr))

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
        return self._net is None

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
        prep = self._prepare(image, None, "image", "mask")
        pts = cv2.KeyPoint_convert(kps).reshape(-1, 2) if kps else np.zeros((0, 2), np.float32)
        h, w = prep.region.shape
        inside = (pts[:, 0] >= -0.5) & (pts[:, 0] < w - 0.5)
        inside &= (pts[:, 1] >= -0.5) & (pts[:, 1] < h - 0.5)
        kps = tuple(k for k, ok in zip(kps, inside, strict=True) if ok)
        if not kps:
            return _empty()
        sizes = np.array([k.size for k in kps], np.float64)
        xy = preprocess.to_working(pts[inside], prep.factors)
        scale = self._nearest_levels(sizes, prep)
        desc = _describe(self._network(), prep.tensor, xy, scale)
        return kps, desc

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
        fs.write("model", self._model)
        fs.write("weights", self._weights)
        for field in dataclasses.fields(DetectorConfig):
            value = getattr(self._config, field.name)
            if value is None:
                value = -1.0
            fs.write(field.name, int(value) if isinstance(value, bool) else value)

    def _read_fields(self, node: cv2.FileNode) -> None:
        values: dict[str, Any] = {}
        for field in dataclasses.fields(DetectorConfig):
            item = node.getNode(field.name)
            if item.empty():
                continue
            current = getattr(self._config, field.name)
            values[field.name] = _cast_like(item.real(), current, field.name)
        self._config = dataclasses.replace(self._config, **values)
        model, weights = node.getNode("model").string(), node.getNode("weights").string()
        if (model and model != self._model) or (weights and weights != self._weights):
            self._reload(model or self._model, weights or self._weights)

    def _reload(self, model: str, weights: str) -> None:
        self._model, self._state = checkpoint.load_state_dict(weights, model)
        self._weights = weights
        self._net = self._build_network()

    def __getstate__(self) -> dict[str, Any]:
        return {
            "config": dataclasses.asdict(self._config),
            "model": self._model,
            "weights": self._weights,
            "state_dict": {k: v.detach().cpu() for k, v in self._state.items()},
            "device": str(self._device),
            "backend": self._backend,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._config = DetectorConfig(**state["config"])
        self._device = _resolve_device(state["device"], fallback=True)
        self._model, self._weights = state["model"], state["weights"]
        self._state = state["state_dict"]
        self._backend = state.get("backend", "torch")
        self._net = self._build_network()

    def __repr__(self) -> str:
        return (
            f"R2D2Fundus(model={self._model!r}, device='{self._device}', "
            f"backend={self._backend!r}, config={self._config})"
        )

    # -------------------------------------------------------------------- pipeline
    def _build_network(self) -> torch.nn.Module:
        net = checkpoint.network_from_state_dict(self._model, self._state, self._device)
        if self._backend == "onnx":
            from fundusfeat.export import OnnxNetwork

            return OnnxNetwork.from_torch(net)
        return net

    def _network(self) -> torch.nn.Module:
        if self._net is None:
            raise RuntimeError("R2D2Fundus has no network loaded")
        return self._net

    def _prepare(self, image: Any, mask: Any, image_name: str, mask_name: str) -> _Prepared:
        """Validate, estimate the FOV and resize one image to the working scale."""
        img = preprocess.validate_image(image, image_name)
        user = preprocess.validate_mask(mask, img.shape, mask_name)
        cfg = self._config
        h, w = img.shape[:2]
        fov = preprocess.estimate_fov(img) if cfg.fov else None
        region = fov.mask.copy() if fov is not None else np.ones((h, w), bool)
        if user is not None:
            region &= user
        scale = 1.0
        if cfg.target_diameter is not None:
            diameter = fov.diameter if fov is not None else float(max(h, w))
            scale = preprocess.working_scale(diameter, cfg.target_diameter)
        work, factors = preprocess.resize_image(img, scale)
        valid = cv2.resize(
            region.astype(np.uint8), work.shape[1::-1], interpolation=cv2.INTER_NEAREST
        )
        return _Prepared(
            tensor=preprocess.to_tensor(work, self._device),
            valid=torch.from_numpy(valid.astype(bool))[None, None].to(self._device),
            factors=factors,
            region=region,
            blank=bool(img.min() == img.max()),
        )

    def _run_many(
        self,
        images: Sequence[Any],
        masks: Any,
        names: tuple[str, str] = ("images[{i}]", "masks[{i}]"),
    ) -> list[tuple[tuple[cv2.KeyPoint, ...], np.ndarray]]:
        """Detect and describe a list of images (batched by working size on CUDA)."""
        masks = _broadcast_masks(masks, len(images))
        prepared = [
            self._prepare(img, m, names[0].format(i=i), names[1].format(i=i))
            for i, (img, m) in enumerate(zip(images, masks, strict=True))
        ]
        results: list[Any] = [_empty() for _ in prepared]
        for group in self._batches(prepared):
            feats = kp.extract_multiscale(
                self._network(),
                torch.cat([prepared[i].tensor for i in group]),
                torch.cat([prepared[i].valid for i in group]),
                **self._extract_kwargs(),
            )
            for i, f in zip(group, feats, strict=True):
                results[i] = self._to_cv(f, prepared[i])
        return results

    def _batches(self, prepared: list[_Prepared]) -> list[list[int]]:
        """Indices of non-blank images grouped for one forward pass each.

        Images of equal working size share a batch on CUDA; on CPU each image is its
        own batch (no speed gain there, and results stay bitwise equal to single calls).
        """
        todo = [i for i, p in enumerate(prepared) if not p.blank]
        if self._device.type != "cuda":
            return [[i] for i in todo]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i in todo:
            groups.setdefault(tuple(prepared[i].tensor.shape), []).append(i)
        return list(groups.values())

    def _extract_kwargs(self) -> dict[str, Any]:
        cfg = self._config
        return {
            "scale_f": cfg.scale_f,
            "min_scale": cfg.min_scale,
            "max_scale": cfg.max_scale,
            "rep_thr": cfg.rep_thr,
            "rel_thr": cfg.rel_thr,
            "max_keypoints": cfg.max_keypoints,
            "border": cfg.border,
            "nms_size": cfg.nms_size,
        }

    def _to_cv(
        self, feats: kp.MultiScaleFeatures, prep: _Prepared
    ) -> tuple[tuple[cv2.KeyPoint, ...], np.ndarray]:
        """Map working-scale features to input pixels and build ``cv2.KeyPoint``s."""
        xy = preprocess.from_working(feats.xy.cpu().numpy(), prep.factors)
        h, w = prep.region.shape
        col = np.clip(np.rint(xy[:, 0]).astype(np.int64), 0, w - 1)
        row = np.clip(np.rint(xy[:, 1]).astype(np.int64), 0, h - 1)
        keep = prep.region[row, col]
        if not keep.any():
            return _empty()
        scale = feats.scale.cpu().numpy()[keep]
        size = self._config.keypoint_size / (scale * math.sqrt(prep.factors[0] * prep.factors[1]))
        octave = kp.octave_of(feats.scale, self._config.scale_f).cpu().numpy()[keep]
        response = feats.score.cpu().numpy()[keep]
        kps = tuple(
            cv2.KeyPoint(float(x), float(y), float(s), -1.0, float(r), int(o))
            for (x, y), s, r, o in zip(xy[keep], size, response, octave, strict=True)
        )
        desc = np.ascontiguousarray(feats.desc.cpu().numpy()[keep], dtype=np.float32)
        return kps, desc

    def _nearest_levels(self, sizes: np.ndarray, prep: _Prepared) -> torch.Tensor:
        """Pyramid scale nearest (in log) to the one implied by each keypoint size."""
        cfg = self._config
        h, w = prep.tensor.shape[-2:]
        levels = np.array(kp.pyramid_scales(h, w, cfg.scale_f, cfg.min_scale, cfg.max_scale))
        implied = cfg.keypoint_size / (np.maximum(sizes, 1e-6) * math.sqrt(np.prod(prep.factors)))
        idx = np.abs(np.log(implied)[:, None] - np.log(levels)[None, :]).argmin(axis=1)
        return torch.from_numpy(levels[idx]).float()


def _describe(
    net: torch.nn.Module, tensor: torch.Tensor, xy: np.ndarray, scale: torch.Tensor
) -> np.ndarray:
    """Descriptors at working-scale points as a float32 numpy array ``(N, 128)``."""
    desc = kp.describe_at(net, tensor, torch.from_numpy(xy).float(), scale.to(tensor.device))
    return np.ascontiguousarray(desc.cpu().numpy(), dtype=np.float32)


def _resolve_device(device: torch.device | str | None, fallback: bool = False) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        if fallback:
            logger.warning("CUDA unavailable; R2D2Fundus falls back to the CPU")
            return torch.device("cpu")
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


def _is_unset(name: str, value: Any) -> bool:
    """True for a ``create`` argument left to the model's default."""
    if name == "target_diameter":
        if isinstance(value, str):
            if value != "auto":
                raise ValueError(f"target_diameter must be a number, None or 'auto', got {value!r}")
            return True
        return False
    return name in MODEL_DEFAULTS["fast"] and value is None


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
