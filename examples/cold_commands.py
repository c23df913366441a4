"""A single registration as a user runs it, cold: a new process per command, alternating
``fundusfeat register A B`` and ``examples/sift_clahe_register.py A B`` on the same two
images, wall time of each process (Python's start, imports, reading, work, exit).

Usage: ``python examples/cold_commands.py [A B] [--repeat 5] [--side 2000] [--model M]``. Without
images, the embedded demo pair, enlarged so that its long side is ``--side`` px (written
to a temporary folder). Prints the median seconds of each and their ratio.

An installed package is byte-compiled; a source checkout run with
``PYTHONDONTWRITEBYTECODE`` set compiles every module at each start (~0.1 s here), so
compile it first (``python -m compileall -q fundusfeat``) to time what a user starts.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

HERE = Path(__file__).resolve().parent


def _images(args: argparse.Namespace, folder: Path) -> list[str]:
    if args.images:
        return args.images
    from fundusfeat.io.demo import load_demo_pair

    out = []
    for name, img in zip(("a.png", "b.png"), load_demo_pair()[:2], strict=True):
        scale = args.side / max(img.shape[:2])
        big = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(folder / name), big)
        out.append(str(folder / name))
    return out


def _wall(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="*", help="two images (default: the demo pair)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--side", type=int, default=2000)
    parser.add_argument("--model", help="fundusfeat register --model (default: its default)")
    args = parser.parse_args()
    if len(args.images) not in (0, 2):
        parser.error("give two images or none")
    folder = Path(tempfile.mkdtemp(prefix="cold-commands-"))
    try:
        a, b = _images(args, folder)
        fundusfeat = [sys.executable, "-m", "fundusfeat", "register", a, b]
        if args.model:
            fundusfeat += ["--model", args.model]
        classical = [sys.executable, str(HERE / "sift_clahe_register.py"), a, b]
        times: dict[str, list[float]] = {"fundusfeat register": [], "SIFT-CLAHE script": []}
        for _ in range(args.repeat):
            times["fundusfeat register"].append(_wall(fundusfeat))
            times["SIFT-CLAHE script"].append(_wall(classical))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k}: {v:.2f} s (median of {args.repeat}, cold processes)")
    print(f"ratio: {med['fundusfeat register'] / med['SIFT-CLAHE script']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
