"""Register many fundus image pairs from Python: a thin example of register_dataset.

The same as ``fundusfeat register-batch`` (which adds the progress bar, figures, Dask and
the exit codes): pairs come from a CSV table with columns ``image1,image2`` (paths
relative to the table) or a folder of FIRE-style ``<name>_1`` / ``<name>_2`` images;
every image is detected once; a row is appended to the output as each pair finishes, and
a rerun with the same output skips the pairs already done.

Usage::

    python examples/batch_register.py --csv pairs.csv --out results.csv
    python examples/batch_register.py --folder FIRE/Images --out results.csv --workers 2

Output columns: image1, image2, success, reason, num_inliers, confidence, model, H (9
numbers, row-major, image 1 -> image 2) and transform (JSON).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import fundusfeat
from fundusfeat.features import models
from fundusfeat.pipeline.batch import register_dataset


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--folder", type=Path, help="folder of <name>_1 / <name>_2 images")
    source.add_argument("--csv", type=Path, help="CSV file with columns image1,image2")
    parser.add_argument("--out", type=Path, default=Path("out/results.csv"))
    parser.add_argument("--model", choices=models.names(), default=None)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    options = {} if args.model is None else {"model": args.model}
    detector = fundusfeat.R2D2Fundus.create(**options)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = register_dataset(args.folder or args.csv, args.out, detector, workers=args.workers)
    print("\n".join(summary.lines()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
