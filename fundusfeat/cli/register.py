"""``fundusfeat demo`` and ``fundusfeat register A B``: register two images, print the
result, write its figures.

Exit codes: 0 registered; 1 registration failed (the reason is printed) or, for
``demo``, the homography is further than :data:`DEMO_TOLERANCE_PX` from the known one;
2 bad arguments or unreadable/unwritable files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fundusfeat._version import __version__
from fundusfeat.cli.options import (
    UsageError,
    add_detector_options,
    make_detector,
    prepare_out_dir,
    read_image_arg,
    registration_options,
)
from fundusfeat.evaluation.metrics import mean_corner_error
from fundusfeat.io import figures as viz
from fundusfeat.io.demo import load_demo_pair
from fundusfeat.pipeline.register import register

DEMO_TOLERANCE_PX = 10.0
"""``demo`` counts a homography as correct when its mean corner error is at most this."""


def add_demo_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``fundusfeat demo``."""
    p = subparsers.add_parser(
        "demo",
        help="register the embedded demo pair",
        description="Register the embedded demo pair and compare the estimate with its "
        f"known homography (exit code 0 when within {DEMO_TOLERANCE_PX:g} px).",
    )
    _add_registration_options(p, prefix="fundusfeat_demo")
    p.set_defaults(func=run_demo)
    return p


def add_register_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``fundusfeat register A B``."""
    p = subparsers.add_parser("register", help="register two fundus images")
    p.add_argument("image1", type=Path, help="first image (the fixed frame)")
    p.add_argument("image2", type=Path, help="second image (warped onto the first)")
    _add_registration_options(p, prefix="fundusfeat_register")
    p.set_defaults(func=run_register)
    return p


def _add_registration_options(parser: argparse.ArgumentParser, prefix: str) -> None:
    """Options shared by ``demo`` and ``register``: detector, estimator and outputs."""
    parser.add_argument(
        "--out",
        type=Path,
        help="write the figures (matches, registered, checkerboard, overlay, a "
        "full-resolution crop) into this folder; without it none are written",
    )
    parser.add_argument("--prefix", default=prefix, help="file-name prefix of the figures")
    add_detector_options(parser)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _register(img1: np.ndarray, img2: np.ndarray, args: argparse.Namespace) -> Any:
    detector = make_detector(args)
    try:
        return register(img1, img2, detector=detector, **registration_options(args))
    except (TypeError, ValueError) as exc:  # e.g. an image under the 16-px minimum
        raise UsageError(str(exc)) from exc


def _write_figures(figures: dict[str, np.ndarray], out: Path, prefix: str) -> list[Path]:
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
    error = None if H is None else mean_corner_error(H, H_true, shape[1], shape[0])
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
    names: tuple[str, str],
    H_true: np.ndarray | None = None,
) -> int:
    """Register, write the figures (only with ``--out``), print the report.

    Returns 0 on success, 1 when registration failed or (``H_true`` given) the estimate
    is not within :data:`DEMO_TOLERANCE_PX` of ``H_true``.
    """
    result = _register(img1, img2, args)
    paths = []
    if args.out is not None:
        figures = viz.registration_figures(img1, img2, result, names)
        paths = _write_figures(figures, args.out, args.prefix)
    summary = _summary(result, paths)
    if H_true is not None:
        summary.update(_truth_check(result.H, H_true, img1.shape))
    print(json.dumps(summary, indent=2) if args.json else f"{title}\n{_format_text(summary)}")
    return 0 if summary["success"] and summary.get("accurate", True) else 1


def run_demo(args: argparse.Namespace) -> int:
    """``fundusfeat demo``: register the embedded demo pair and compare with its true H."""
    if args.out is not None:
        prepare_out_dir(args.out)
    img1, img2, H_true = load_demo_pair()
    title = f"fundusfeat {__version__} demo: embedded pair {img1.shape[1]}x{img1.shape[0]}"
    names = ("retina_a.jpg", "retina_b.jpg")
    return _register_and_report(img1, img2, args, title, names, H_true)


def run_register(args: argparse.Namespace) -> int:
    """``fundusfeat register A B``: register two images from disk."""
    if args.out is not None:
        prepare_out_dir(args.out)
    img1, img2 = read_image_arg(args.image1), read_image_arg(args.image2)
    title = f"{args.image1} -> {args.image2}"
    names = (args.image1.name, args.image2.name)
    return _register_and_report(img1, img2, args, title, names)
