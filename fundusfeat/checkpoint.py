"""Weights registry and network loading.

The shipped weights are state dicts stored as package data (``fundusfeat/weights``)
and verified against the sha256 recorded in :data:`WEIGHTS`. User checkpoints are
either a bare state dict or a trainer checkpoint ``{"model": "fast" | "r2d2",
"state_dict": {...}, ...}``; the architecture is inferred from the parameter names
(``stem.*`` -> ``"fast"``, ``body.*`` -> ``"r2d2"``). Everything is loaded with
``torch.load(..., map_location="cpu", weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from fundusfeat.network import MODEL_NAMES, build_network

logger = logging.getLogger(__name__)

WEIGHTS: dict[str, tuple[str, str]] = {
    # model name: (file in fundusfeat/weights, sha256)
    "r2d2": ("r2d2_fundus.pt", "a26cbd4cd9924561f699dfd450ec48f5a0130bf2f7c8b06bead5fa371d5ac5ba"),
    "fast": ("fast_fundus.pt", "c9252d1db4322fbac8300957a3e06e2a054633c908a1ebb0b792d50523924793"),
}

_KEY_PREFIXES = {"stem.": "fast", "body.": "r2d2"}


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


TRAINED = frozenset({"fast"})
"""Models whose shipped weights are trained (see fundusfeat/weights/MODEL_CARD.md); the
``r2d2`` file is still a seeded random initialisation until it is trained on a GPU."""


def default_model(device: torch.device | str | None = None) -> str:
    """Model used when the user names none.

    ``"r2d2"`` (the paper's network) on CUDA once its shipped weights are trained, else
    ``"fast"`` (the CPU-fast network, and the only trained one today).
    """
    cuda = torch.device(device or "cpu").type == "cuda"
    return "r2d2" if cuda and "r2d2" in TRAINED else "fast"


def default_weights_path(model: str) -> Path:
    """Path of the shipped weights file of ``model`` (inside the installed package)."""
    _check_model(model)
    return Path(str(resources.files("fundusfeat") / "weights" / WEIGHTS[model][0]))


def infer_model(state_dict: Mapping[str, object]) -> str:
    """Architecture name from a state dict's keys (``stem.*`` -> fast, ``body.*`` -> r2d2)."""
    for prefix, model in _KEY_PREFIXES.items():
        if any(k.startswith(prefix) for k in state_dict):
            return model
    raise ValueError(
        "weights: cannot infer the architecture: expected parameter names starting with "
        f"{sorted(_KEY_PREFIXES)}"
    )


def load_state_dict(
    weights: str | Path = "default", model: str | None = None
) -> tuple[str, dict[str, torch.Tensor]]:
    """Read a state dict and find its architecture.

    Args:
        weights: ``"default"`` (shipped file of ``model``, sha256-verified) or a path to a
            bare state dict or a trainer checkpoint with ``"state_dict"``.
        model: expected architecture, or None to infer it from the keys (``"default"``
            then means the ``"fast"`` model).

    Returns:
        ``(model, state_dict)`` with CPU tensors.

    Raises:
        ValueError: sha256 mismatch, unknown model, unreadable layout, or ``model`` not
            matching the checkpoint.
        FileNotFoundError: ``weights`` path does not exist.
    """
    if model is not None:
        _check_model(model)
    if isinstance(weights, str) and weights == "default":
        model = model or "fast"
        path = default_weights_path(model)
        _verify_sha256(path, WEIGHTS[model][1])
    else:
        if not isinstance(weights, (str, Path)):
            raise TypeError(f"weights must be 'default' or a path, got {type(weights).__name__}")
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"weights file not found: {path}")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    state, declared = _unwrap(obj, path)
    found = infer_model(state)
    for claimed, what in ((declared, "the checkpoint's 'model' entry"), (model, "model")):
        if claimed is not None and claimed != found:
            raise ValueError(f"{what} is {claimed!r} but the weights in {path} are for {found!r}")
    return found, state


def _unwrap(obj: object, path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    if not isinstance(obj, Mapping):
        raise ValueError(f"weights file {path} does not hold a state dict")
    if "state_dict" in obj:
        return dict(obj["state_dict"]), obj.get("model")
    return dict(obj), None


def _verify_sha256(path: Path, expected: str) -> None:
    actual = file_sha256(path)
    if actual != expected:
        raise ValueError(
            f"weights file {path} has sha256 {actual}, expected {expected}: corrupted or "
            "replaced without updating fundusfeat.checkpoint.WEIGHTS"
        )


def _check_model(model: str) -> None:
    if model not in MODEL_NAMES:
        raise ValueError(f"model must be one of {MODEL_NAMES}, got {model!r}")


def network_from_state_dict(
    model: str, state_dict: Mapping[str, torch.Tensor], device: torch.device | str = "cpu"
) -> nn.Module:
    """Build ``model``, load ``state_dict`` strictly, move to ``device`` in eval mode."""
    net = build_network(model)
    net.load_state_dict(state_dict, strict=True)
    return net.to(device).eval()


def load_network(
    model: str | None = None,
    weights: str | Path = "default",
    device: torch.device | str = "cpu",
) -> nn.Module:
    """Load a network ready for inference.

    Args:
        model: ``"r2d2"``, ``"fast"`` or None (inferred from user weights; for
            ``weights="default"`` None means :func:`default_model` of ``device``).
        weights: ``"default"`` or a checkpoint path (see :func:`load_state_dict`).
        device: target device.

    Returns:
        The network in ``eval()`` mode on ``device``.
    """
    if model is None and isinstance(weights, str) and weights == "default":
        model = default_model(device)
    found, state = load_state_dict(weights, model)
    logger.debug("loaded %s weights from %s", found, weights)
    return network_from_state_dict(found, state, device)


def write_default_weights(directory: str | Path, seed: int = 0) -> dict[str, str]:
    """Write random-init weights for every model (``torch.manual_seed(seed)``).

    Used to create the placeholder package files; returns ``{model: sha256}``.
    """
    hashes = {}
    for model, (filename, _) in WEIGHTS.items():
        torch.manual_seed(seed)
        path = Path(directory) / filename
        torch.save(build_network(model).state_dict(), path)
        hashes[model] = file_sha256(path)
    return hashes
