"""Benchmark ``register_dataset`` on a synthetic cohort against a plain loop of register().

Builds a cohort (``fundusfeat.evaluation.cohort``: eyes x visits, every two visits of an
eye paired) from held-out photographs, then

1. ``--mode loop``: registers every pair with ``fundusfeat.register`` (each image read
   and detected again for every pair it is in);
2. ``--mode batch``: ``fundusfeat.pipeline.batch.register_dataset`` (each image detected once);

and prints wall time and peak memory of each, each in a fresh process, plus whether the
rows are identical. Run from the repository root::

    HELD_OUT="training/splits/val.txt ../shared/data/retina.jpg"
    python examples/batch_benchmark.py --sources $HELD_OUT --eyes 3 --visits 8   # 84 pairs
    python examples/batch_benchmark.py --sources $HELD_OUT --eyes 36 --visits 8 --modes batch

Without ``--sources`` the cohort is made from the embedded demo photograph.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

from fundusfeat.evaluation.cohort import make_cohort
from fundusfeat.evaluation.sources import benchmark_images
from fundusfeat.io.images import read_image


def run_mode(mode: str, table: Path, out: Path) -> dict:
    """One measurement in this process (called in a fresh process by :func:`main`)."""
    import fundusfeat
    from fundusfeat.pipeline.batch import COLUMNS, read_pairs, register_dataset, result_row

    detector = fundusfeat.R2D2Fundus.create()
    start = time.perf_counter()
    if mode == "loop":
        rows = []
        for pair in read_pairs(table):
            img1, img2 = read_image(pair.path1), read_image(pair.path2)
            rows.append(result_row(pair, fundusfeat.register(img1, img2, detector=detector)))
        with out.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        detected = 2 * len(rows)
    else:
        summary = register_dataset(table, out, detector)
        detected = summary.images_detected
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"mode": mode, "seconds": seconds, "peak_rss_mib": peak_mib, "detections": detected}


def _rows(path: Path) -> dict:
    with path.open(newline="") as fh:
        return {(r["image1"], r["image2"]): r for r in csv.DictReader(fh)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sources",
        nargs="*",
        default=[],
        help="held-out photographs, e.g. training/splits/val.txt ../shared/data/retina.jpg "
        "(default: the embedded demo photograph)",
    )
    parser.add_argument("--eyes", type=int, default=3)
    parser.add_argument("--visits", type=int, default=8)
    parser.add_argument("--modes", default="loop,batch")
    parser.add_argument("--folder", type=Path, help="cohort folder (default: temporary)")
    parser.add_argument("--run", nargs=3, metavar=("MODE", "TABLE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        print(json.dumps(run_mode(args.run[0], Path(args.run[1]), Path(args.run[2]))))
        return 0
    folder = args.folder or Path(tempfile.mkdtemp(prefix="cohort-"))
    sources = [read_image(p) for p in benchmark_images(args.sources)]
    eyes = [sources[i % len(sources)] for i in range(args.eyes)]
    eyes = [cv2.flip(img, 1) if (i // len(sources)) % 2 else img for i, img in enumerate(eyes)]
    table = make_cohort(eyes, args.visits, folder, seed=0)
    with table.open() as fh:
        pairs = sum(1 for _ in fh) - 1
    print(f"cohort: {args.eyes} eyes x {args.visits} visits, {pairs} pairs in {folder}")
    results = {}
    for mode in args.modes.split(","):
        out = folder / f"results_{mode}.csv"
        out.unlink(missing_ok=True)
        cmd = [sys.executable, __file__, "--run", mode, str(table), str(out)]
        line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results[mode] = json.loads(line.strip().splitlines()[-1])
        r = results[mode]
        print(
            f"{mode}: {r['seconds']:.1f} s, peak RSS {r['peak_rss_mib']:.0f} MiB, "
            f"{r['detections']} detections"
        )
    if {"loop", "batch"} <= set(results):
        same = _rows(folder / "results_loop.csv") == _rows(folder / "results_batch.csv")
        ratio = results["batch"]["seconds"] / results["loop"]["seconds"]
        print(f"batch / loop time: {ratio:.2f}; rows identical: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
