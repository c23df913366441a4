"""``fundusfeat register-batch PAIRS --out RESULTS.csv``: the command line of
:func:`fundusfeat.pipeline.batch.register_dataset`.

Exit codes: 0 done (failed registrations are rows, not errors); 2 a malformed table
header, an unwritable or foreign ``--out``, or bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import cv2

from fundusfeat.cli.options import UsageError, add_detector_options, make_detector, positive_int


def add_register_batch_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``register-batch`` subcommand."""
    p = subparsers.add_parser(
        "register-batch",
        help="register a table of pairs (each image detected once; resumable; parallel)",
        description="Register every pair of a CSV table (columns image1,image2, paths "
        "relative to the table) or of a folder of <name>_1/<name>_2 images. Each image is "
        "detected once (features cached by content and detector settings); a row is "
        "written as each pair finishes; a rerun with the same --out skips the done pairs.",
    )
    p.add_argument("pairs", type=Path, help="CSV table or folder of <name>_1/<name>_2 images")
    p.add_argument("--out", type=Path, required=True, help="results CSV (appended to)")
    p.add_argument("--cache", type=Path, help="feature cache folder (default: temporary)")
    p.add_argument("--workers", type=positive_int, default=1, help="processes on this machine")
    p.add_argument("--dask", metavar="ADDRESS", help="local:N (a LocalCluster) or tcp://host:port")
    p.add_argument("--figures", type=Path, help="write each pair's figures into this folder")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    add_detector_options(p)
    p.set_defaults(func=run_register_batch)
    return p


def run_register_batch(args: argparse.Namespace) -> int:
    """Run ``fundusfeat register-batch``; returns the exit code."""
    from fundusfeat.io.progress import ProgressLine
    from fundusfeat.pipeline.batch import BatchInputError, register_dataset
    from fundusfeat.pipeline.register import Options

    options = {"method": args.method, "model": args.transform}
    try:
        opts = Options(**{k: v for k, v in options.items() if v is not None})
        detector = make_detector(args)
        on_result = _figure_writer(args.figures) if args.figures else None
        summary = register_dataset(
            args.pairs,
            args.out,
            detector,
            cache=args.cache,
            workers=args.workers,
            dask=args.dask,
            options=opts,
            progress=ProgressLine(not args.quiet and sys.stderr.isatty()),
            on_result=on_result,
        )
    except (BatchInputError, ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from exc
    print("\n".join(summary.lines()))
    print(f"wrote {args.out}")
    return 0


def _figure_writer(folder: Path):
    """An ``on_result`` callback writing the registration figures of each pair."""
    from fundusfeat.io.figures import registration_figures
    from fundusfeat.io.images import read_image

    folder.mkdir(parents=True, exist_ok=True)

    def write(pair, result) -> None:
        if result is None:
            return
        img1, img2 = read_image(pair.path1), read_image(pair.path2)
        stem = f"{Path(pair.image1).stem}__{Path(pair.image2).stem}"
        for name, image in registration_figures(
            img1, img2, result, (pair.image1, pair.image2)
        ).items():
            cv2.imwrite(str(folder / f"{stem}_{name}.png"), image)

    return write
