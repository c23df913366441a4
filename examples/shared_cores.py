"""Time detection with the cores shared: each backend and thread count, alone and beside a
second busy process, against ``cv2.SIFT`` under the same conditions.

The busy process is a spawned Python doing float32 matrix products with ``--busy-threads``
BLAS threads without pause (a stand-in for another session, a ``--workers`` run or a
user's parallel script). Each configuration runs in a fresh process (its own thread pool);
the time is the median of ``--repeat`` ``detectAndCompute`` calls after one warm-up, on
the embedded photograph (or ``--image``) resized so its long side is ``--size`` px. Run
from the repository root::

    python examples/shared_cores.py --size 1536 --threads 1,2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

import cv2

CHILD = r"""
import json, os, statistics, sys, time
import cv2, torch
size, threads, method, path, repeat, model = sys.argv[1:7]
torch.set_num_threads(int(threads)); cv2.setNumThreads(int(threads))
img = cv2.imread(path) if path else None
if img is None:
    from fundusfeat.io.demo import load_demo_pair
    img = load_demo_pair()[0]
s = int(size) / max(img.shape[:2])
interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
img = cv2.resize(img, None, fx=s, fy=s, interpolation=interp)
if method == "sift":
    det = cv2.SIFT_create()
else:
    from fundusfeat import R2D2Fundus
    det = R2D2Fundus.create(device="cpu", backend=method, model=model or None)
det.detectAndCompute(img, None)
times = []
for _ in range(int(repeat)):
    t0 = time.perf_counter()
    det.detectAndCompute(img, None)
    times.append(time.perf_counter() - t0)
print(json.dumps(statistics.median(times)))
"""


def _busy(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    import numpy as np

    a = np.random.default_rng(0).random((1024, 1024), dtype=np.float32)
    while True:
        a = (a @ a) * 1e-3


def _time(size: int, threads: int, method: str, image: str, repeat: int, model: str) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    args = [str(size), str(threads), method, image, str(repeat), model]
    out = subprocess.run(
        [sys.executable, "-c", CHILD, *args],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=1536, help="long side of the image (px)")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    p.add_argument("--methods", default="sift,torch,openvino", help="sift and/or backends")
    p.add_argument("--busy-threads", type=int, default=2, help="threads of the busy process")
    p.add_argument("--repeat", type=int, default=3, help="timed calls per configuration")
    p.add_argument("--image", default="", help="an image file (default: the demo photograph)")
    p.add_argument("--model", default="", help="the network (default: the library's default)")
    p.add_argument("--no-busy", action="store_true", help="only the quiet machine")
    args = p.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    methods = args.methods.split(",")
    print(f"{cv2.getVersionString()}; {os.cpu_count()} CPUs; size {args.size}")
    print("| load | method | threads | s/image | x SIFT (same threads, same load) |")
    print("|---|---|---|---|---|")
    for busy in (False,) if args.no_busy else (False, True):
        proc = None
        if busy:
            proc = mp.get_context("spawn").Process(target=_busy, args=(args.busy_threads,))
            proc.start()
            time.sleep(1.0)
        try:
            for t in threads:
                times = {
                    m: _time(args.size, t, m, args.image, args.repeat, args.model) for m in methods
                }
                for m, sec in times.items():
                    ratio = f"{sec / times['sift']:.2f}" if "sift" in times else "-"
                    load = f"busy {args.busy_threads}-thread process" if busy else "quiet"
                    print(f"| {load} | {m} | {t} | {sec:.3f} | {ratio} |", flush=True)
        finally:
            if proc is not None:
                proc.terminate()
                proc.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
