"""Time the cross-check matcher: one pass over the distances against two, and cv2.

FundusMatcher's cross-check computes one distance matrix (in chunks) and takes both
directions from it; the previous implementation computed it twice (nearest neighbours
1 -> 2, then 2 -> 1). Both, and ``cv2.BFMatcher(NORM_L2, crossCheck=True)``, run on the
same unit descriptors (true pairs with noise plus distractors); the script checks that
the three give the same matches. Run from the repository root::

    python examples/matcher_speed.py --n 5000 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np
import torch

from fundusfeat import FundusMatcher


def _two_pass(matcher: FundusMatcher, d1: np.ndarray, d2: np.ndarray) -> list[tuple[int, int]]:
    """The previous algorithm: nearest neighbours both ways, then the mutual check."""
    idx12, _ = matcher._knn(d1, d2, 1)
    idx21, _ = matcher._knn(d2, d1, 1)
    keep = idx21[idx12[:, 0], 0] == np.arange(len(d1))
    return [(int(q), int(idx12[q, 0])) for q in np.flatnonzero(keep)]


def _timed(fn, repeat: int) -> tuple[float, object]:
    out = fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="descriptors per side")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    rng = np.random.default_rng(0)
    d1 = rng.standard_normal((args.n, 128)).astype(np.float32)
    d1 /= np.linalg.norm(d1, axis=1, keepdims=True)
    d2 = d1[rng.permutation(args.n)] + 0.08 * rng.standard_normal((args.n, 128))
    d2[: args.n // 3] = rng.standard_normal((args.n // 3, 128))  # distractors
    d2 = (d2 / np.linalg.norm(d2, axis=1, keepdims=True)).astype(np.float32)
    matcher = FundusMatcher.create(device="cpu")
    one, ours = _timed(lambda: matcher.match(d1, d2), args.repeat)
    two, previous = _timed(lambda: _two_pass(matcher, d1, d2), args.repeat)
    bf, ref = _timed(lambda: cv2.BFMatcher(cv2.NORM_L2, crossCheck=True).match(d1, d2), args.repeat)
    ours = [(m.queryIdx, m.trainIdx) for m in ours]
    ref = sorted((m.queryIdx, m.trainIdx) for m in ref)
    print(f"{args.n} x {args.n} descriptors, {args.threads} threads, {len(ours)} matches")
    print(f"one pass (FundusMatcher): {one:.3f} s")
    print(f"two passes (previous):    {two:.3f} s  ({two / one:.1f}x the one pass)")
    print(f"cv2.BFMatcher crossCheck: {bf:.3f} s")
    print(f"identical to two passes: {ours == previous}; identical to cv2: {ours == ref}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
