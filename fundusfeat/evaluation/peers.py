"""Detectors to compare, by name, all registered through the same ``fundusfeat.register``.

Names:

- ``sift``: ``cv2.SIFT_create()`` on the image (OpenCV converts BGR to gray).
- ``sift-clahe``: SIFT on the CLAHE-enhanced green channel (:class:`ClaheSift`), the
  usual classical baseline for fundus photographs.
- ``orb``: ``cv2.ORB_create(nfeatures=5000)``; ``akaze``: AKAZE with OpenCV's defaults
  (``cv2.xfeatures2d.AKAZE_create()`` in OpenCV 5); both binary, matched with Hamming
  distance by ``fundusfeat.register``.
- ``r2d2fundus``: ``fundusfeat.R2D2Fundus.create()`` (default model);
  ``r2d2fundus-<model>`` for every model of the registry (:mod:`fundusfeat.features.models`),
  e.g. ``r2d2fundus-fast`` and ``r2d2fundus-r2d2``.
- ``module:factory``: any importable callable returning a cv2.Feature2D-like object,
  called without arguments; ``factory`` may be a dotted attribute path
  (e.g. ``cv2:KAZE_create`` or ``cv2:xfeatures2d.BRISK_create``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import partial
from typing import Any

import cv2
import numpy as np

from fundusfeat.evaluation.runner import Registrar
from fundusfeat.features import models
from fundusfeat.io.arrays import to_uint8

CLASSICAL = ("sift", "sift-clahe", "orb", "akaze")
LEARNED = ("r2d2fundus", *(f"r2d2fundus-{name}" for name in models.names()))
METHODS = CLASSICAL + LEARNED
"""The built-in method names (plus any ``module:factory``). A learned method may name a
checkpoint after an ``=`` and its inference backend after an ``@``:
``r2d2fundus@openvino``, ``r2d2fundus-fast@torch``,
``r2d2fundus=runs/lean/last.pt`` (a training run's network, its model read from the
file); :data:`fundusfeat.features.detector.BACKENDS`, without one ``R2D2Fundus``'s
default."""


class ClaheSift:
    """SIFT on the CLAHE-enhanced green channel; a cv2.Feature2D-like wrapper.

    The green channel of a BGR image (a gray image as is; floats in [0, 1] are scaled
    to uint8) is equalised with ``cv2.createCLAHE(clip_limit, (tiles, tiles))``, then
    SIFT runs on it. Keypoints are in input pixel coordinates.

    Args:
        clip_limit: CLAHE clip limit.
        tiles: CLAHE tiles per side.
        nfeatures: SIFT's ``nfeatures`` (0 = all).
    """

    def __init__(self, clip_limit: float = 2.0, tiles: int = 8, nfeatures: int = 0) -> None:
        self._params = (float(clip_limit), int(tiles), int(nfeatures))
        self._sift = cv2.SIFT_create(nfeatures=nfeatures)
        self._clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles, tiles))

    @classmethod
    def create(cls, clip_limit: float = 2.0, tiles: int = 8, nfeatures: int = 0) -> ClaheSift:
        """OpenCV-style factory, same arguments as the constructor."""
        return cls(clip_limit, tiles, nfeatures)

    def enhance(self, image: np.ndarray) -> np.ndarray:
        """(H, W) uint8: the CLAHE-enhanced green channel of ``image``."""
        img = to_uint8(np.asarray(image))
        green = img[..., 1] if img.ndim == 3 and img.shape[2] >= 3 else img.reshape(img.shape[:2])
        return self._clahe.apply(np.ascontiguousarray(green))

    def detect(self, image: np.ndarray, mask: np.ndarray | None = None) -> tuple:
        """Keypoints (tuple of cv2.KeyPoint), like ``cv2.SIFT.detect``."""
        return self._sift.detect(self.enhance(image), mask)

    def compute(self, image: np.ndarray, keypoints: Any) -> tuple:
        """``(keypoints, descriptors)`` at given keypoints, like ``cv2.SIFT.compute``."""
        return self._sift.compute(self.enhance(image), keypoints)

    def detectAndCompute(
        self,
        image: np.ndarray,
        mask: np.ndarray | None,
        descriptors: np.ndarray | None = None,
        useProvidedKeypoints: bool = False,
    ) -> tuple:
        """``(keypoints, descriptors)``, like ``cv2.SIFT.detectAndCompute``."""
        return self._sift.detectAndCompute(
            self.enhance(image), mask, descriptors, useProvidedKeypoints
        )

    def descriptorSize(self) -> int:
        return self._sift.descriptorSize()

    def descriptorType(self) -> int:
        return self._sift.descriptorType()

    def defaultNorm(self) -> int:
        return self._sift.defaultNorm()

    def getDefaultName(self) -> str:
        return "Feature2D.ClaheSIFT"

    def empty(self) -> bool:
        return False

    def __getstate__(self) -> dict[str, Any]:
        return {"params": self._params}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(*state["params"])

    def __repr__(self) -> str:
        clip, tiles, n = self._params
        return f"ClaheSift(clip_limit={clip}, tiles={tiles}, nfeatures={n})"


def _r2d2(
    model: str | None, device: str | None, backend: str = "auto", weights: str = "default"
) -> Any:
    from fundusfeat.features.feature2d import R2D2Fundus  # imports torch: only when asked for

    kwargs: dict[str, Any] = {"device": device, "backend": backend, "weights": weights}
    if model is not None:
        kwargs["model"] = model
    return R2D2Fundus.create(**kwargs)


def _learned(name: str) -> tuple[str, str, str] | None:
    """``(method, backend, weights)`` of a learned method name
    (``method[=CHECKPOINT][@BACKEND]``; ``"auto"`` and ``"default"`` where not given),
    else None."""
    head, sep, backend = name.rpartition("@") if "@" in name else (name, "", "")
    base, eq, weights = head.partition("=")
    if base not in _MODELS or (sep and backend in ("", "auto")) or (eq and not weights):
        return None
    return base, backend or "auto", weights or "default"


def _akaze() -> Any:
    """AKAZE (in ``cv2`` up to OpenCV 4, in ``cv2.xfeatures2d`` from OpenCV 5)."""
    factory = getattr(cv2, "AKAZE_create", None) or cv2.xfeatures2d.AKAZE_create
    return factory()


_OPENCV: dict[str, Callable[[], Any]] = {
    "sift": cv2.SIFT_create,
    "sift-clahe": ClaheSift,
    "orb": partial(cv2.ORB_create, nfeatures=5000),
    "akaze": _akaze,
}
_MODELS: dict[str, str | None] = {
    "r2d2fundus": None,
    **{f"r2d2fundus-{name}": name for name in models.names()},
}


def is_learned(name: str) -> bool:
    """True for the R2D2Fundus methods (the ones that run on a torch device)."""
    return _learned(name) is not None


def make_detector(name: str, device: str | None = None) -> Any:
    """Create a detector by method name.

    Args:
        name: a name in :data:`METHODS` or ``"module:factory"``.
        device: torch device for the learned methods (None = the detector's default);
            ignored by OpenCV detectors.

    Returns:
        A cv2.Feature2D or an object with the same methods.

    Raises:
        ValueError: for an unknown name or a factory that cannot be imported.
    """
    if name in _OPENCV:
        return _OPENCV[name]()
    learned = _learned(name)
    if learned is not None:
        base, backend, weights = learned
        model = _MODELS[base] if weights == "default" else None  # a checkpoint names its own
        return _r2d2(model, device, backend, weights)
    module_name, sep, attr = name.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"unknown method {name!r}: expected one of {METHODS} or 'module:factory'")
    try:
        factory = importlib.import_module(module_name)
        for part in attr.split("."):
            factory = getattr(factory, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(
            f"method {name!r}: cannot import {attr} from {module_name}: {exc}"
        ) from exc
    return factory()


def parse_methods(text: str) -> list[str]:
    """Split a comma-separated method list; raises ValueError if it is empty."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError("methods: expected a comma-separated list of method names")
    return list(dict.fromkeys(names))


def make_registrar(
    name: str,
    device: str | None = None,
    ransac_threshold: float | None = None,
    estimator: str | None = None,
    transform: str | None = None,
    global_keypoints: int | None = None,
) -> Registrar:
    """A registration method: the named detector through ``fundusfeat.register``.

    Every method shares the matching (mutual nearest neighbour, Hamming for binary
    descriptors) and the estimation of ``fundusfeat.register`` (MAGSAC++ by default).

    Args:
        name: see :func:`make_detector`.
        device: torch device for the learned methods.
        ransac_threshold: RANSAC reprojection threshold in working pixels (None = the
            default of ``fundusfeat.register``).
        estimator: ``"ransac"``, ``"magsac"`` or ``"lmeds"`` (None = the default of
            ``fundusfeat.register``).
        transform: the transform model (``"auto"``, ``"homography"``, ...; None = the
            default of ``fundusfeat.register``).
        global_keypoints: strongest keypoints per image in the global matching (None =
            the default of ``fundusfeat.register``).
    """
    from fundusfeat.pipeline.register import register

    kwargs: dict[str, Any] = {"detector": make_detector(name, device)}
    if ransac_threshold is not None:
        kwargs["ransac_threshold"] = ransac_threshold
    if estimator is not None:
        kwargs["method"] = estimator
    if transform is not None:
        kwargs["transform_model"] = transform
    if global_keypoints is not None:
        kwargs["global_keypoints"] = global_keypoints
    return partial(register, **kwargs)
