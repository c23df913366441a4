"""The model registry: one :class:`ModelSpec` per network, read by everything that lists
models (weights loading, ``R2D2Fundus.create``, the CLI's choices, ONNX export, the
training config and the evaluation's peers).

Adding a model is its network class (in :mod:`fundusfeat.features.network`) plus one entry in
:data:`MODELS` (docs/develop.md shows how).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from fundusfeat.features.network import (
    IMAGE_MEAN,
    IMAGE_STD,
    FastNet,
    FastNetV1,
    LeanNet,
    LeanNetDW,
    LeanNetDWS1,
    LeanNetS1,
    R2D2Net,
)
from fundusfeat.features.settings import DetectorConfig


@dataclass(frozen=True)
class Normalisation:
    """How an RGB image in [0, 1] becomes the network's input: ``(x - mean) / std``."""

    mean: tuple[float, float, float] = IMAGE_MEAN
    std: tuple[float, float, float] = IMAGE_STD


@dataclass(frozen=True)
class ModelSpec:
    """Everything the library knows about one model.

    Attributes:
        name: the model's name (``R2D2Fundus.create(model=...)``, ``--model``).
        network: the ``nn.Module`` class; ``network(dim)`` builds it untrained.
        defaults: the detector settings ``R2D2Fundus.create`` uses where the caller
            sets nothing (field of view, working size, thresholds, pyramid).
        weights: file name of the shipped state dict in ``fundusfeat/weights``, or None.
        sha256: hex sha256 of that file (checked at every load).
        trained: whether the shipped weights are trained (untrained ones are a seeded
            initialisation and never the default model).
        summary: one line for ``--help`` and the docs.
        normalisation: input normalisation of the network.
    """

    name: str
    network: type[nn.Module]
    defaults: DetectorConfig
    weights: str | None
    sha256: str | None
    trained: bool
    summary: str
    normalisation: Normalisation = field(default_factory=Normalisation)

    def build(self, dim: int = 128) -> nn.Module:
        """The untrained network (He initialisation)."""
        return self.network(dim)


_UNSMOOTHED = DetectorConfig(rel_thr=0.5, rep_blur=0.0)
"""The settings every model but lean-dw-s1 was measured with (no smoothing, rel_thr 0.5)."""

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="lean-dw-s1",
            network=LeanNetDWS1,
            defaults=DetectorConfig(),
            weights="lean_dw_s1_fundus.pt",
            sha256="1be28bedaa7249e9def2d7e3ea6d1f1a26e2b975644d6e4aa77b19dc659065d0",
            trained=True,
            summary="the default CPU network: lean-dw's encoder and lean-s1's stride-1 "
            "keypoint branch (keypoints that follow a shift; distilled from fast)",
        ),
        ModelSpec(
            name="lean",
            network=LeanNet,
            defaults=_UNSMOOTHED,
            weights="lean_fundus.pt",
            sha256="890034c22cef682f95ea23b07f9ca972857194d6be085791d57d62ca01da967c",
            trained=True,
            summary="the default before lean-dw-s1 (stride-2 work only; distilled from "
            "fast: its accuracy, ~1.7x faster forward)",
        ),
        ModelSpec(
            name="lean-s1",
            network=LeanNetS1,
            defaults=_UNSMOOTHED,
            weights="lean_s1_fundus.pt",
            sha256="96100c9d66c83307a42fc6b2ed4e6ebe568670914dcc81f1031044d483100728",
            trained=True,
            summary="lean's encoder and a thin stride-1 keypoint branch (keypoints that "
            "follow a shift like fast's; distilled from fast)",
        ),
        ModelSpec(
            name="fast",
            network=FastNet,
            defaults=_UNSMOOTHED,
            weights="fast_fundus.pt",
            sha256="f67b86f17a5169c1cae7df5314b7e22806e13a4e2b50f441c9eccb04ea4b3f80",
            trained=True,
            summary="the CPU network before lean (stride-1 keypoint layers; lean's teacher)",
        ),
        ModelSpec(
            name="lean-dw",
            network=LeanNetDW,
            defaults=_UNSMOOTHED,
            weights="lean_dw_fundus.pt",
            sha256="7e9abe5cc96eb44d9849439d1d2d12549734cf27c9a30499732ffbb13e7cc5ea",
            trained=True,
            summary="a lighter lean (depthwise-separable encoder, 8-channel keypoints; "
            "about 0.8x lean's detection time)",
        ),
        ModelSpec(
            name="fast-v1",
            network=FastNetV1,
            defaults=_UNSMOOTHED.replace(
                target_diameter=880.0, max_upscale=2.0, scale_tolerance=0.0
            ),
            weights=None,  # training/checkpoints/fast_v1_27500.pt: the fast model's start
            sha256=None,
            trained=False,
            summary="the first CPU-fast network (keypoints lock to its stride-8 grid; "
            "weights in training/checkpoints, not shipped)",
        ),
        ModelSpec(
            name="r2d2",
            network=R2D2Net,
            # the paper's inference: FOV 750 px, pyramid 1 .. 1/3 by 2**0.25, thresholds 0.7
            defaults=DetectorConfig(
                target_diameter=750.0,
                max_upscale=2.0,
                scale_tolerance=0.0,
                rep_thr=0.7,
                rel_thr=0.7,
                min_scale=1.0 / 3.0,
                rep_blur=0.0,
            ),
            weights="r2d2_fundus.pt",
            sha256="a26cbd4cd9924561f699dfd450ec48f5a0130bf2f7c8b06bead5fa371d5ac5ba",
            trained=False,
            summary="the paper's R2D2 network (full resolution; GPU)",
        ),
    )
}
"""The models by name."""


def names() -> tuple[str, ...]:
    """All model names, in registry order."""
    return tuple(MODELS)


def get(name: str) -> ModelSpec:
    """The spec of ``name``.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    if not isinstance(name, str) or name not in MODELS:
        raise ValueError(f"model must be one of {names()}, got {name!r}")
    return MODELS[name]


def default_model(device: torch.device | str | None = None) -> str:
    """The model used when the caller names none.

    ``"r2d2"`` (the paper's network) on CUDA once its shipped weights are trained;
    otherwise the first trained model of the registry.
    """
    cuda = device is not None and torch.device(device).type == "cuda"
    if cuda and MODELS["r2d2"].trained:
        return "r2d2"
    return next(spec.name for spec in MODELS.values() if spec.trained)
