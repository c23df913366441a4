"""``fundusfeat register-batch PAIRS --out RESULTS.csv``: the command line of
:func:`fundusfeat.pipeline.batch.register_dataset`.

Exit codes: 0 the run completed (every row written; failed rows are rows, not errors);
1 rows are missing (interrupted by SIGINT/SIGTERM, the workers lost): rerun the same
command to resume; 2 bad arguments: a malformed table, an unwritable or foreign
``--out``, an output or cache in use by another run (the holder's pid is named), an
output made with other settings (what differs is named; ``--restart`` starts over), a
``--cache`` that is a file, a bad or unreachable ``--dask``.
"""

from __future__ import annotations

import argparse
import signal
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
        "relative to the table; other columns are copied to the output) or of a folder "
        "of <name>_1/<name>_2 images. Each image is detected once (features cached by "
        "content and detector settings); a row is written as each pair finishes; a rerun "
        "with the same --out skips the done pairs.",
    )
    p.add_argument("pairs", type=Path, help="CSV table or folder of <name>_1/<name>_2 images")
    p.add_argument("--out", type=Path, required=True, help="results CSV (appended to)")
    p.add_argument(
        "--cache",
        type=Path,
        help="feature cache folder, kept (default: one under the user's cache dir, reused "
        "by a rerun of an interrupted run, removed when the run completes)",
    )
    p.add_argument("--workers", type=positive_int, default=1, help="processes on this machine")
    p.add_argument("--dask", metavar="ADDRESS", help="local:N (a LocalCluster) or tcp://host:port")
    p.add_argument(
        "--figures",
        type=Path,
        help="write each pair's figures into this folder (named <index>_<stem1>__<stem2>_*)",
    )
    p.add_argument(
        "--restart",
        action="store_true",
        help="discard the rows already in --out and start over (needed to change settings)",
    )
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="redo the rows that failed for a reason that can change (a missing or "
        "unreadable file, a runtime error); refusals by the verification are kept",
    )
    p.add_argument("--quiet", action="store_true", help="no progress line")
    add_detector_options(p)
    p.set_defaults(func=run_register_batch)
    return p


def run_register_batch(args: argparse.Namespace) -> int:
    """Run ``fundusfeat register-batch``; returns the exit code."""
    from fundusfeat.io.progress import ProgressLine
    from fundusfeat.pipeline.batch import BatchInputError, register_dataset
    from fundusfeat.pipeline.register import Options

    options = {"method": args.method, "transform_model": args.transform}
    try:
        opts = Options(**{k: v for k, v in options.items() if v is not None})
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from exc
    detector = make_detector(args)
    on_result = _figure_writer(args.figures) if args.figures else None
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        summary = register_dataset(
            args.pairs,
            args.out,
            detector,
            cache=args.cache,
            workers=args.workers,
            dask=args.dask,
            options=opts,
            restart=args.restart,
            retry_failed=args.retry_failed,
            progress=ProgressLine(not args.quiet and sys.stderr.isatty()),
            on_result=on_result,
        )
    except (BatchInputError, ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from exc
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; the rows written are in {args.out}: rerun the same command to resume",
            file=sys.stderr,
        )
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("\n".join(summary.lines()))
    print(f"wrote {args.out}")
    return 1 if summary.missing else 0


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM as Ctrl-C: the run stops its workers and syncs its rows."""
    raise KeyboardInterrupt


def _figure_writer(folder: Path):
    """An ``on_result`` callback writing the registration figures of each pair."""
    from fundusfeat.io.figures import registration_figures
    from fundusfeat.io.images import read_image

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the --figures folder {folder}: {exc}") from exc

    def write(pair, result) -> None:
        if result is None:
            return
        img1, img2 = read_image(pair.path1), read_image(pair.path2)
        # the row index makes names unique: a.jpg in two folders gives two names
        stem = f"{pair.index:05d}_{Path(pair.image1).stem}__{Path(pair.image2).stem}"
        for name, image in registration_figures(
            img1, img2, result, (pair.image1, pair.image2)
        ).items():
            cv2.imwrite(str(folder / f"{stem}_{name}.png"), image)

    return write
