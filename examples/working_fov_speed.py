"""Time ``register()`` and detection at several working FOV diameters, alternating in one
process with the classical SIFT-CLAHE pipeline and ``cv2.SIFT``.

The pairs are ``fundusfeat bench --pipeline``'s: each image resized so that its field of
view is ``--fov`` px across, and an ``easy`` synthetic second image of it. Every round
registers each pair with each working FOV (``R2D2Fundus.create(target_diameter=D)``) and
with the classical pipeline, and detects image 2 with each detector and with
``cv2.SIFT_create()`` (no mask); the medians over all rounds are printed, with the ratios
of the same run. ``--serial`` adds, for each working FOV, the detector with its images
detected one after the other (``core.share_threads = False``; by default ``register()``
detects its two images side by side, torch's threads divided between them). Run from the
repository root::

    python examples/working_fov_speed.py training/splits/val.txt ../shared/data/retina.jpg \
        --fov 768 --diameters 1000,900,850,800 --threads 2 --rounds 3
    python examples/working_fov_speed.py training/splits/val.txt ../shared/data/retina.jpg \
        --fov 768 --diameters 1000 --serial --threads 2 --rounds 4

No image argument: the embedded demo photograph.
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("images", nargs="*", help="images, folders or .txt lists")
    p.add_argument("--fov", type=int, default=768, help="FOV diameter of the inputs (px)")
    p.add_argument("--diameters", default="1000,900,850", help="working FOVs to compare (px)")
    p.add_argument("--threads", type=int, default=2, help="torch and OpenCV threads")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds over the pairs")
    p.add_argument("--model", default=None, help="network (default: the default model)")
    p.add_argument(
        "--serial", action="store_true", help="also time each with its images one after the other"
    )
    args = p.parse_args(argv)
    try:
        diameters = [float(d) for d in args.diameters.split(",") if d.strip()]
    except ValueError:
        p.error(f"--diameters must be comma-separated numbers, got {args.diameters!r}")
    if not diameters or min(diameters) <= 0 or args.rounds < 1 or args.fov < 64:
        p.error("--diameters must be positive, --rounds >= 1 and --fov >= 64")

    from fundusfeat import R2D2Fundus, register
    from fundusfeat.evaluation import bench
    from fundusfeat.evaluation.registration_time import ClassicalPipeline
    from fundusfeat.evaluation.sources import benchmark_images
    from fundusfeat.evaluation.synthetic import PRESETS, make_synthetic_pair
    from fundusfeat.io import images

    bench.set_threads(args.threads)
    pairs = []
    for i, path in enumerate(benchmark_images(args.images)):
        small = bench.resize_to_fov(images.read_image(path), args.fov)
        pairs.append((small, make_synthetic_pair(small, PRESETS["easy"], i).image2))
    detectors = {}
    for d in diameters:
        for serial in (False, True) if args.serial else (False,):
            det = R2D2Fundus.create(model=args.model, device="cpu", target_diameter=d)
            det.core.share_threads = not serial
            detectors[f"{d:g} px" + (", one after the other" if serial else "")] = det
    classical, sift = ClassicalPipeline(), cv2.SIFT_create()
    for det in detectors.values():  # warm-up: first calls allocate and load
        register(*pairs[0], detector=det)
    classical(*pairs[0])
    reg = {d: [] for d in detectors}
    detect = {d: [] for d in detectors}
    classical_s, sift_s = [], []
    for _ in range(args.rounds):
        for img1, img2 in pairs:
            for d, det in detectors.items():
                t0 = time.perf_counter()
                register(img1, img2, detector=det)
                reg[d].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                det.detectAndCompute(img2, None)
                detect[d].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            classical(img1, img2)
            classical_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            sift.detectAndCompute(img2, None)
            sift_s.append(time.perf_counter() - t0)
    c, s = statistics.median(classical_s), statistics.median(sift_s)
    print(f"{len(pairs)} pairs at FOV {args.fov} px, {args.threads} threads, {args.rounds} rounds")
    print("| working FOV | register() s/pair | / SIFT-CLAHE pipeline | detection s | / SIFT |")
    print("|---|---|---|---|---|")
    for d in detectors:
        r, t = statistics.median(reg[d]), statistics.median(detect[d])
        print(f"| {d} | {r:.3f} | {r / c:.2f}x | {t:.3f} | {t / s:.2f}x |")
    print(f"SIFT-CLAHE pipeline {c:.3f} s per pair; cv2.SIFT {s:.3f} s per image")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
