"""What the command modules share: argparse value types, the usage error (exit 2), the
detector and registration options and the objects they build, and reading an image
argument.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np

from fundusfeat.features import models
from fundusfeat.pipeline.register import TRANSFORM_MODELS


class UsageError(Exception):
    """A user error (bad argument, unreadable file): printed, exit code 2."""


def prepare_out_dir(path: Path) -> Path:
    """Create the output folder ``path`` (parents too) and check that a file can be
    written in it: commands call this before any work, so a bad ``--out`` fails at once.

    Raises:
        UsageError: ``path`` is an existing file, cannot be created or is not writable.
    """
    import tempfile

    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {str(path)!r} is an existing file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".fundusfeat-write-test-"):
            pass
    except OSError as exc:
        raise UsageError(
            f"--out {str(path)!r} is not a writable folder: {exc.strerror or exc}"
        ) from exc
    return path


def distinct_paths(paths: list[Path]) -> list[Path]:
    """``paths`` when no file is named twice (after resolving links and ``..``).

    Raises:
        UsageError: naming the repeated file.
    """
    seen: dict[Path, Path] = {}
    for p in paths:
        key = p.resolve()
        if key in seen:
            raise UsageError(f"the same image is given twice: {str(seen[key])!r} and {str(p)!r}")
        seen[key] = p
    return paths


def positive_int(text: str) -> int:
    """An integer > 0 (argparse type)."""
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}") from exc
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (argparse type)."""
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}") from exc
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def positive_int_list(text: str) -> tuple[int, ...]:
    """Integers > 0 separated by commas, e.g. ``768,1152`` (argparse type)."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas: {text}") from exc
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive integers: {text}")
    return values


def add_detector_options(parser: argparse.ArgumentParser) -> None:
    """The detector and registration options (``demo``, ``register``, ``register-batch``)."""
    parser.add_argument(
        "--model", choices=models.names(), help="network (default: the library's default model)"
    )
    parser.add_argument("--weights", help="state-dict path (default: the shipped weights)")
    parser.add_argument("--device", help="torch device, e.g. cpu or cuda (default: auto)")
    parser.add_argument("--max-keypoints", type=positive_int, help="keypoints per image")
    parser.add_argument(
        "--method", choices=("ransac", "magsac"), help="estimator of the first homography"
    )
    parser.add_argument(
        "--transform",
        choices=TRANSFORM_MODELS,
        help="transform model (default auto: per pair, the homography or the quadratic)",
    )


def make_detector(args: argparse.Namespace) -> Any:
    """The detector the options ask for; unset options keep the library's defaults."""
    from fundusfeat.features.feature2d import R2D2Fundus

    options = {
        "model": args.model,
        "weights": args.weights,
        "device": args.device,
        "max_keypoints": args.max_keypoints,
    }
    try:
        return R2D2Fundus.create(**{k: v for k, v in options.items() if v is not None})
    except (ValueError, TypeError, OSError, RuntimeError) as exc:
        raise UsageError(f"cannot create the detector: {exc}") from exc


def registration_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``register()`` keyword arguments the options set (``--method``, ``--transform``)."""
    options = {"method": args.method, "transform_model": args.transform}
    return {k: v for k, v in options.items() if v is not None}


def read_image_arg(path: Path, frame: int | None = None) -> np.ndarray:
    """Read an image named on the command line; an unreadable file is a :class:`UsageError`.

    ``frame`` chooses the frame of a multi-frame DICOM file (:func:`read_image`).
    """
    from fundusfeat.io.images import read_image

    try:
        return read_image(path, frame=frame)
    except (FileNotFoundError, ValueError, ImportError) as err:
        raise UsageError(f"cannot read image {str(path)!r}: {err}") from err
