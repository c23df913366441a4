"""``fundusfeat montage IMG... | DIR --out OUT``: many fields of one eye on one canvas.

Writes ``montage.jpg`` and ``montage.png`` (the blended montage), ``transforms.json``
(:meth:`~fundusfeat.pipeline.montage.MontageResult.to_json`, with the input paths),
``edges.csv`` (one verified pair a row) and ``field_graph.png`` into ``--out``; progress
on stderr.

Exit codes: 0 every field placed; 1 some fields unplaced (each named on stderr with its
reason); 2 bad input, before any detection (an unreadable file, named; a file named
twice; fewer than two images; an ``--out`` that is a file or not writable; bad
arguments).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

import cv2

from fundusfeat.cli.options import (
    UsageError,
    distinct_paths,
    make_detector,
    positive_int,
    prepare_out_dir,
    read_image_arg,
)


def add_montage_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``fundusfeat montage``."""
    from fundusfeat.features import models
    from fundusfeat.pipeline.canvas import MAX_CANVAS_PIXELS
    from fundusfeat.pipeline.montage import MONTAGE_MODELS

    p = subparsers.add_parser(
        "montage",
        help="many fields of one eye on one canvas (jointly fitted)",
        description="Detect each field once, verify every pair, fit all fields' transforms "
        "jointly to the reference field's frame and blend them into one montage.",
    )
    p.add_argument("images", nargs="+", type=Path, help="image files, folders or .txt lists")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--reference", type=int, help="index of the reference field (default: best)")
    p.add_argument(
        "--transform",
        choices=MONTAGE_MODELS,
        default="auto",
        help="per-field model of the joint fit (default auto)",
    )
    p.add_argument("--threshold", type=float, help="confidence of a verified pair")
    p.add_argument(
        "--max-pixels",
        type=positive_int,
        default=MAX_CANVAS_PIXELS,
        help=f"bound on the canvas area (default {MAX_CANVAS_PIXELS})",
    )
    p.add_argument(
        "--model", choices=models.names(), help="network (default: the library's default model)"
    )
    p.add_argument("--weights", help="state-dict path (default: the shipped weights)")
    p.add_argument("--device", help="torch device, e.g. cpu or cuda (default: auto)")
    p.add_argument("--max-keypoints", type=positive_int, help="keypoints per image")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run_montage)
    return p


def _paths(args: argparse.Namespace) -> list[Path]:
    from fundusfeat.io.images import expand_image_args

    try:
        paths = distinct_paths(expand_image_args(args.images, unique=False))
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    if len(paths) < 2:
        raise UsageError(f"a montage needs at least 2 images, got {len(paths)}")
    return paths


def _progress(quiet: bool):
    def report(done: int, total: int, label: str) -> None:
        print(f"[{done}/{total}] {label}", file=sys.stderr, flush=True)

    return None if quiet else report


def write_edges_csv(result: Any, names: list[str], path: Path) -> None:
    """One verified pair a row: fields, names, confidence, inliers, residual, used, tree."""
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "i",
                "j",
                "image_i",
                "image_j",
                "confidence",
                "inliers",
                "residual_px",
                "used",
                "in_tree",
            ]
        )
        for e in result.edges:
            residual = "" if not math.isfinite(e.residual) else f"{e.residual:.3f}"
            w.writerow(
                [
                    e.i,
                    e.j,
                    names[e.i],
                    names[e.j],
                    f"{e.confidence:.4f}",
                    e.inliers,
                    residual,
                    int(e.used),
                    int(e.in_tree),
                ]
            )


def _write(path: Path, image: Any) -> None:
    if not cv2.imwrite(str(path), image):
        raise UsageError(f"cannot write {str(path)!r}")


def run_montage(args: argparse.Namespace) -> int:
    """Run ``fundusfeat montage``; returns the exit code."""
    from fundusfeat.io.montage_figures import field_graph_figure
    from fundusfeat.pipeline.montage import montage

    paths = _paths(args)
    prepare_out_dir(args.out)
    progress = _progress(args.quiet)
    images = []
    for k, path in enumerate(paths):
        images.append(read_image_arg(path))
        if progress is not None:
            progress(k + 1, len(paths), f"read {path.name}")
    detector = make_detector(args)
    try:
        result = montage(
            images,
            reference=args.reference,
            detector=detector,
            transform_model=args.transform,
            threshold=args.threshold,
            max_pixels=args.max_pixels,
            progress=progress,
        )
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from exc
    names = [p.name for p in paths]
    _write(args.out / "montage.jpg", result.image)
    _write(args.out / "montage.png", result.image)
    data = result.to_dict()
    data["images"] = [str(p) for p in paths]
    (args.out / "transforms.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    write_edges_csv(result, names, args.out / "edges.csv")
    sizes = [(img.shape[1], img.shape[0]) for img in images]
    _write(args.out / "field_graph.png", field_graph_figure(result, sizes))
    placed = sum(result.placed)
    print(
        f"placed {placed}/{len(paths)} fields (reference {names[result.reference]}), "
        f"{sum(e.used for e in result.edges)} of {len(result.edges)} verified pairs used, "
        f"canvas {result.size[0]} x {result.size[1]} px, {result.timings['total']:.1f} s"
    )
    print(f"wrote {args.out}/montage.jpg, montage.png, transforms.json, edges.csv, field_graph.png")
    for k, t in enumerate(result.transforms):
        if t is None:
            print(f"not placed: {names[k]}: {result.reasons[k]}", file=sys.stderr)
        elif result.reasons[k] != "ok":
            print(f"{names[k]}: {result.reasons[k]}", file=sys.stderr)
    return 0 if result.success else 1
