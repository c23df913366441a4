"""What becomes of the keypoints a whole-pixel shift does not find again: drifted (the
nearest one moved by 1-3 px: positions not shift-equivariant) or lost (none within 3 px:
usually a weak keypoint crossing a threshold).

The image is resized so its FOV diameter is ``--fov`` px (as ``fundusfeat bench``
does), detected, shifted by each of ``--shifts`` and detected again. Run from the
repository root::

    python examples/shift_misses.py ../shared/data/retina.jpg --models lean,lean-s1
    python examples/shift_misses.py IMAGE --models lean-dw-s1 --rep-blur 0 --rel-thr 0.5

Without an image, the embedded demo photograph. ``--rep-blur`` and ``--rel-thr`` override
every model's own setting and ``--weights`` names a checkpoint
(``R2D2Fundus.create``'s arguments of those names).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import cv2
import numpy as np

from fundusfeat import R2D2Fundus
from fundusfeat.evaluation.shift import shift_image, why_missed
from fundusfeat.geometry.estimation import keypoints_to_array


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", help="a fundus photograph (default: demo)")
    parser.add_argument("--models", default="lean,lean-s1", help="comma-separated models")
    parser.add_argument("--fov", type=float, default=768.0, help="FOV diameter (px)")
    parser.add_argument("--shifts", default="1,0;3,1;5,0", help="dx,dy;dx,dy;...")
    parser.add_argument("--rep-blur", type=float, help="repeatability smoothing (sigma, px)")
    parser.add_argument("--rel-thr", type=float, help="reliability threshold")
    parser.add_argument("--weights", default="default", help="a checkpoint (one model)")
    args = parser.parse_args(argv)
    img = cv2.imread(args.image) if args.image else None
    if img is None:
        from fundusfeat.io.demo import load_demo_pair

        img = load_demo_pair()[0]
    shifts = [tuple(float(v) for v in s.split(",")) for s in args.shifts.split(";")]
    print("| model | shift | found again | drifted 1-3 px | lost |")
    print("|---|---|---|---|---|")
    for model in args.models.split(","):
        det = R2D2Fundus.create(
            model=model, weights=args.weights, rep_blur=args.rep_blur, rel_thr=args.rel_thr
        )
        scale = args.fov / det.core.prepare(img, None).fov.diameter
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        image = cv2.resize(img, None, fx=scale, fy=scale, interpolation=interp)
        size = (image.shape[1], image.shape[0])
        points = keypoints_to_array(tuple(det.detect(image, None)))
        rows = []
        for dx, dy in shifts:
            moved = keypoints_to_array(tuple(det.detect(shift_image(image, dx, dy), None)))
            rows.append(why_missed(points, moved, (dx, dy), size))
            print(_row(model, f"({dx:g}, {dy:g})", rows[-1]))
        print(_row(model, "mean", np.mean(rows, axis=0)))
    return 0


def _row(model: str, shift: str, values: Sequence[float]) -> str:
    return f"| {model} | {shift} | " + " | ".join(f"{v:.3f}" for v in values) + " |"


if __name__ == "__main__":
    raise SystemExit(main())
