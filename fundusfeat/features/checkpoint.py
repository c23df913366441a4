"""Reading weights: the shipped files (sha256-verified) and user checkpoints.

Which file belongs to which model, and its sha256, is in the registry
(:mod:`fundusfeat.features.models`). User checkpoints are either a bare state dict or a trainer
checkpoint ``{"model": name, "state_dict": {...}, ...}``; the architecture is the model
whose parameter and buffer names are exactly the file's. Everything is loaded with
``torch.load(..., map_location="cpu", weights_only=True)``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import pickle
import zipfile
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from fundusfeat.features import models

logger = logging.getLogger(__name__)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_weights_path(model: str) -> Path:
    """Path of the shipped weights file of ``model`` (inside the installed package).

    Raises:
        ValueError: unknown model, or a model that ships no weights.
    """
    spec = models.get(model)
    if spec.weights is None:
        raise ValueError(
            f"model {model!r} ships no weights: pass weights=<checkpoint path> "
            "(train one with `fundusfeat train`)"
        )
    return Path(str(resources.files("fundusfeat") / "weights" / spec.weights))


def infer_model(state_dict: Mapping[str, object]) -> str:
    """The model whose state-dict keys and tensor shapes are exactly those of
    ``state_dict`` (a network of another width, e.g. ``LeanNetDWS1(key_channels=2)``, has
    the same names).

    Raises:
        ValueError: no model of the registry has these keys and shapes.
    """
    shapes = {k: tuple(getattr(v, "shape", ())) for k, v in state_dict.items()}
    for name in models.names():
        if _state_shapes(name) == shapes:
            return name
    raise ValueError(
        "weights: cannot infer the architecture: the parameter names and shapes match "
        f"none of the models {models.names()}"
    )


@functools.cache
def _state_shapes(model: str) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in models.get(model).build().state_dict().items()}


def read_weights_file(path: str | Path) -> object:
    """``torch.load(path, map_location="cpu", weights_only=True)``, failures as ValueError.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a weights file torch can read safely (truncated,
            corrupt, or holding objects other than tensors and plain containers); the
            message names the path and the cause.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, zipfile.BadZipFile, OSError) as err:
        cause = str(err).split("\n", 1)[0] or type(err).__name__
        if isinstance(err, pickle.UnpicklingError):
            cause = "it holds objects other than tensors (not a state dict or checkpoint)"
        elif isinstance(err, EOFError):
            cause = "the file is empty or truncated"
        raise ValueError(f"cannot read weights file {path}: {cause}") from None


def load_state_dict(
    weights: str | Path = "default", model: str | None = None
) -> tuple[str, dict[str, torch.Tensor]]:
    """Read a state dict and find its architecture.

    Args:
        weights: ``"default"`` (shipped file of ``model``, sha256-verified) or a path to a
            bare state dict or a trainer checkpoint with ``"state_dict"``.
        model: expected architecture, or None to infer it from the keys (``"default"``
            then means :func:`fundusfeat.features.models.default_model`).

    Returns:
        ``(model, state_dict)`` with CPU tensors.

    Raises:
        ValueError: sha256 mismatch, unknown model, unreadable file or layout, or
            ``model`` not matching the checkpoint.
        FileNotFoundError: ``weights`` path does not exist.
        TypeError: ``weights`` is neither ``"default"`` nor a path.
    """
    if model is not None:
        models.get(model)
    if isinstance(weights, str) and weights == "default":
        model = model or models.default_model()
        path = default_weights_path(model)
        _verify_sha256(path, models.get(model).sha256)
    elif isinstance(weights, (str, Path)):
        path = Path(weights)
    else:
        raise TypeError(f"weights must be 'default' or a path, got {type(weights).__name__}")
    state, declared = _unwrap(read_weights_file(path), path)
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


def _verify_sha256(path: Path, expected: str | None) -> None:
    actual = file_sha256(path)
    if actual != expected:
        raise ValueError(
            f"weights file {path} has sha256 {actual}, expected {expected}: corrupted or "
            "replaced without updating its entry in fundusfeat.features.models"
        )


def network_from_state_dict(
    model: str, state_dict: Mapping[str, torch.Tensor], device: torch.device | str = "cpu"
) -> nn.Module:
    """Build ``model``, load ``state_dict`` strictly, move to ``device`` in eval mode."""
    net = models.get(model).build()
    net.load_state_dict(state_dict, strict=True)
    return net.to(device).eval()


def load_network(
    model: str | None = None,
    weights: str | Path = "default",
    device: torch.device | str = "cpu",
) -> nn.Module:
    """Load a network ready for inference.

    Args:
        model: a model name or None (inferred from user weights; for
            ``weights="default"`` None means :func:`fundusfeat.features.models.default_model` of
            ``device``).
        weights: ``"default"`` or a checkpoint path (see :func:`load_state_dict`).
        device: target device.

    Returns:
        The network in ``eval()`` mode on ``device``.
    """
    if model is None and isinstance(weights, str) and weights == "default":
        model = models.default_model(device)
    found, state = load_state_dict(weights, model)
    logger.debug("loaded %s weights from %s", found, weights)
    return network_from_state_dict(found, state, device)
