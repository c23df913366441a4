"""The ``fundusfeat`` command line: ``demo | register | register-batch | evaluate | bench |
train | export-onnx``.

``demo`` and ``register`` live here. The other commands belong to their own modules,
each exposing ``add_<name>_parser(subparsers)`` that creates its subparser and sets
``func`` (parsed args -> int exit code) with ``set_defaults``. Those modules are
imported only when their command is the one being run, so ``fundusfeat demo`` never
imports training or evaluation code, and a module that is missing from an install
disables only its own command.

Exit codes: 0 success; 1 registration failed (the reason is printed) or, for
``demo``, the homography is further than :data:`DEMO_TOLERANCE_PX` from the known
one; 2 bad arguments or unreadable/unwritable files (a message is printed to stderr).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fundusfeat import __version__, demo, models, viz
from fundusfeat.argtypes import positive_int
from fundusfeat.registration import TRANSFORM_MODELS

log = logging.getLogger(__name__)

DEMO_TOLERANCE_PX = 10.0
"""``demo`` counts a homography as correct when its mean corner error is at most this."""


class UsageError(Exception):
    """A user error (bad argument, unreadable file): printed, exit code 2."""


@dataclass(frozen=True)
class ExternalCommand:
    """A subcommand implemented in another module, imported only when it is run."""

    name: str
    module: str
    adder: str
    help: str


EXTERNAL_COMMANDS = (
    ExternalCommand(
        "evaluate",
        "fundusfeat.evaluation.commands",
        "add_evaluate_parser",
        "evaluate registration on a dataset",
    ),
    ExternalCommand(
        "bench",
        "fundusfeat.evaluation.commands",
        "add_bench_parser",
        "benchmark against classical detectors",
    ),
    ExternalCommand(
        "train", "fundusfeat.training.commands", "add_train_parser", "train the network"
    ),
    ExternalCommand(
        "export-onnx", "fundusfeat.export", "add_export_parser", "export the network to ONNX"
    ),
    ExternalCommand(
        "register-batch",
        "fundusfeat.batch_command",
        "add_register_batch_parser",
        "register a table of pairs (each image detected once; resumable; parallel)",
    ),
)


# ----------------------------------------------------------------------------- parser


def _add_registration_options(parser: argparse.ArgumentParser, prefix: str) -> None:
    """Options shared by ``demo`` and ``register``: detector, estimator and outputs."""
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for the figures")
    parser.add_argument("--prefix", default=prefix, help="file-name prefix of the figures")
    add_detector_options(parser)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


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


def _add_unavailable(subparsers: Any, command: ExternalCommand, reason: str) -> None:
    """A placeholder subparser listed in ``--help``; running it (with any arguments)
    explains why the command is unavailable."""
    sub = subparsers.add_parser(command.name, help=command.help, add_help=False)
    sub.set_defaults(
        func=lambda _args: _fail_usage(f"{command.name}: {reason}"), ignores_arguments=True
    )


def _add_external(subparsers: Any, command: ExternalCommand) -> None:
    """Import ``command.module`` and let it add its subparser (missing module: placeholder)."""
    try:
        module = importlib.import_module(command.module)
    except ModuleNotFoundError as exc:
        if exc.name is None or not _is_module_or_parent(exc.name, command.module):
            raise
        log.debug("command %r unavailable: %s", command.name, exc)
        _add_unavailable(subparsers, command, f"not available ({command.module} is missing)")
        return
    getattr(module, command.adder)(subparsers)


def _is_module_or_parent(missing: str, module: str) -> bool:
    """True when ``missing`` is ``module`` or one of its fundusfeat sub-packages."""
    return missing.startswith("fundusfeat.") and (
        module == missing or module.startswith(missing + ".")
    )


def _split_command(argv: Sequence[str]) -> tuple[list[str], str | None]:
    """(top-level options, subcommand name): the command is the first argument that is
    not an option (top-level options take no values)."""
    for i, arg in enumerate(argv):
        if not arg.startswith("-"):
            return list(argv[:i]), arg
    return list(argv), None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; only the external module of ``command`` is imported."""
    parser = argparse.ArgumentParser(
        prog="fundusfeat",
        description="Learned keypoints for colour fundus image registration.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo_parser = subparsers.add_parser(
        "demo",
        help="register the embedded demo pair",
        description="Register the embedded demo pair and compare the estimate with its "
        f"known homography (exit code 0 when within {DEMO_TOLERANCE_PX:g} px).",
    )
    _add_registration_options(demo_parser, prefix="fundusfeat_demo")
    demo_parser.set_defaults(func=run_demo)

    reg_parser = subparsers.add_parser("register", help="register two fundus images")
    reg_parser.add_argument("image1", type=Path, help="first image (the fixed frame)")
    reg_parser.add_argument("image2", type=Path, help="second image (warped onto the first)")
    _add_registration_options(reg_parser, prefix="fundusfeat_register")
    reg_parser.set_defaults(func=run_register)

    for external in EXTERNAL_COMMANDS:
        if external.name == command:
            _add_external(subparsers, external)
        else:
            _add_unavailable(subparsers, external, "not loaded")
    return parser


# ----------------------------------------------------------------------------- commands


def _fail_usage(message: str) -> int:
    raise UsageError(message)


def _read_image(path: Path) -> np.ndarray:
    from fundusfeat.imageio import read_image

    try:
        return read_image(path)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(f"cannot read image {str(path)!r}: {err}") from err


def make_detector(args: argparse.Namespace) -> Any:
    """The detector the options ask for; unset options keep the library's defaults."""
    from fundusfeat import R2D2Fundus

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


def _register(img1: np.ndarray, img2: np.ndarray, args: argparse.Namespace) -> Any:
    from fundusfeat import register

    options = {"method": args.method, "model": args.transform}
    options = {k: v for k, v in options.items() if v is not None}
    return register(img1, img2, detector=make_detector(args), **options)


MAX_DRAWN_MATCHES = 150
"""Inliers (and outliers) drawn in the matches figure; more would cover the images."""


def figure_images(img1: np.ndarray, img2: np.ndarray, result: Any) -> dict[str, np.ndarray]:
    """The figures of a result, by name: matches always; when registered, image 2 in
    image 1's frame (``registered``), the checkerboard, the overlay and a crop of the
    overlay at full resolution (``overlay_crop``, where errors of a few pixels show)."""
    figures = {
        "matches": viz.draw_matches(
            img1,
            result.keypoints1,
            img2,
            result.keypoints2,
            result.matches,
            result.inliers,
            max_draw=MAX_DRAWN_MATCHES,
        )
    }
    if result.transform is not None:
        warped = viz.warp_to(img2, result.transform, img1.shape)
        figures["registered"] = viz.to_bgr_uint8(warped, "registered")
        figures["checkerboard"] = viz.checkerboard(img1, warped)
        figures["overlay"] = viz.overlay(img1, warped)
        figures["overlay_crop"] = viz.detail_crop(
            figures["overlay"], _inlier_centre(result, img1.shape)
        )
    return figures


def _inlier_centre(result: Any, shape: tuple[int, ...]) -> tuple[float, float]:
    """Median image-1 position of the inliers (where the crop of the overlay looks; the
    image centre when there are none)."""
    mask = np.asarray(result.inliers).reshape(-1).astype(bool)
    pts = [
        result.keypoints1[m.queryIdx].pt for m, ok in zip(result.matches, mask, strict=True) if ok
    ]
    if not pts:
        return (shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0
    xy = np.asarray(pts)
    return float(np.median(xy[:, 0])), float(np.median(xy[:, 1]))


def _write_figures(figures: dict[str, np.ndarray], out: Path, prefix: str) -> list[Path]:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output folder {str(out)!r}: {exc}") from exc
    paths = []
    for name, image in figures.items():
        path = out / f"{prefix}_{name}.png"
        if not cv2.imwrite(str(path), image):
            raise UsageError(f"cannot write {str(path)!r}")
        paths.append(path)
    return paths


def _summary(result: Any, figures: list[Path]) -> dict[str, Any]:
    """A JSON-serialisable summary of a registration result."""
    summary = {
        "success": bool(result.success),
        "reason": result.reason,
        "H": None if result.H is None else np.asarray(result.H).tolist(),
        "transform": None if result.transform is None else result.transform.to_dict(),
        "confidence": float(result.confidence),
        "num_keypoints1": len(result.keypoints1),
        "num_keypoints2": len(result.keypoints2),
        "num_matches": len(result.matches),
        "num_inliers": int(result.num_inliers),
        "timings_s": {k: float(v) for k, v in result.timings.items()},
        "figures": [str(p) for p in figures],
    }
    return summary


def _truth_check(H: np.ndarray | None, H_true: np.ndarray, shape: tuple[int, ...]) -> dict:
    """Mean corner error of ``H`` against the known homography (None when there is no
    finite error) and whether it is within :data:`DEMO_TOLERANCE_PX`."""
    error = None if H is None else demo.mean_corner_error(H, H_true, shape[1], shape[0])
    if error is not None and not np.isfinite(error):
        error = None
    return {
        "mean_corner_error_px": error,
        "accurate": error is not None and error <= DEMO_TOLERANCE_PX,
    }


def _format_text(summary: dict[str, Any]) -> str:
    """Human-readable report of :func:`_summary`'s dict."""
    status = "success" if summary["success"] else f"FAILED ({summary['reason']})"
    lines = [
        f"registration: {status}",
        f"keypoints: {summary['num_keypoints1']} / {summary['num_keypoints2']}   "
        f"matches: {summary['num_matches']}   inliers: {summary['num_inliers']}",
    ]
    lines.append(f"confidence: {summary['confidence']:.3f}")
    if summary["H"] is None:
        lines.append("H: none")
    else:
        model = summary["transform"]["model"]
        rows = np.array2string(np.asarray(summary["H"]), precision=6, suppress_small=True)
        lines.append(f"transform: {model}; its best homography H (image 1 -> image 2):\n{rows}")
    if "accurate" in summary:
        lines.append(_format_truth(summary["mean_corner_error_px"], summary["accurate"]))
    timings = ", ".join(f"{k} {v:.3f}" for k, v in summary["timings_s"].items())
    lines.append(f"timings (s): {timings}")
    lines.extend(f"wrote {p}" for p in summary["figures"])
    return "\n".join(lines)


def _format_truth(error: float | None, accurate: bool) -> str:
    verdict = "correct" if accurate else "WRONG"
    value = "n/a" if error is None else f"{error:.2f} px"
    return f"mean corner error vs true H: {value} -> {verdict} (tolerance {DEMO_TOLERANCE_PX:g} px)"


def _register_and_report(
    img1: np.ndarray,
    img2: np.ndarray,
    args: argparse.Namespace,
    title: str,
    H_true: np.ndarray | None = None,
) -> int:
    """Register, write the figures, print the report.

    Returns 0 on success, 1 when registration failed or (``H_true`` given) the estimate
    is not within :data:`DEMO_TOLERANCE_PX` of ``H_true``.
    """
    result = _register(img1, img2, args)
    paths = _write_figures(figure_images(img1, img2, result), args.out, args.prefix)
    summary = _summary(result, paths)
    if H_true is not None:
        summary.update(_truth_check(result.H, H_true, img1.shape))
    print(json.dumps(summary, indent=2) if args.json else f"{title}\n{_format_text(summary)}")
    return 0 if summary["success"] and summary.get("accurate", True) else 1


def run_demo(args: argparse.Namespace) -> int:
    """``fundusfeat demo``: register the embedded demo pair and compare with its true H."""
    img1, img2, H_true = demo.load_demo_pair()
    title = f"fundusfeat {__version__} demo: embedded pair {img1.shape[1]}x{img1.shape[0]}"
    return _register_and_report(img1, img2, args, title, H_true)


def run_register(args: argparse.Namespace) -> int:
    """``fundusfeat register A B``: register two images from disk."""
    img1, img2 = _read_image(args.image1), _read_image(args.image2)
    return _register_and_report(img1, img2, args, f"{args.image1} -> {args.image2}")


# ----------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (argparse exits 2 on bad syntax)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    options, command = _split_command(argv)
    verbose = "-v" in options or "--verbose" in options
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    parser = build_parser(command)
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "ignores_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args))
    except UsageError as exc:
        print(f"fundusfeat: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # python -m fundusfeat.cli (e.g. under torchrun)
    sys.exit(main())
