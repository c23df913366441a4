"""Compare two visits: the embedded demo pair with lesions painted into its follow-up.

Paints a haemorrhage, an exudate and a cotton-wool spot into the demo pair's second image
(at places known in the first image's pixels, through the pair's true homography), runs
``fundusfeat.compare`` and writes the figures ``fundusfeat compare`` writes
(``flicker.gif``, ``changes.png``, ``difference.png``), each shrunk to ``--side`` px, then
prints each change and whether it is one of the painted lesions.

Usage::

    python examples/compare_visits.py                       # writes out/compare/
    python examples/compare_visits.py --out docs/img --prefix compare_ --side 480
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

import fundusfeat
from fundusfeat.evaluation.lesions import Lesion, painted_followup, score_changes
from fundusfeat.io import compare_figures as fig
from fundusfeat.io.demo import load_demo_pair

LESIONS = (
    (0.42, 0.62, 7.0, "haemorrhage"),
    (0.62, 0.40, 4.0, "exudate"),
    (0.55, 0.72, 8.0, "cotton_wool"),
)
"""(x, y) as fractions of image 1's size, radius px, kind."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="out/compare")
    parser.add_argument("--prefix", default="")
    parser.add_argument("--side", type=int, default=768, help="long side of the figures")
    args = parser.parse_args()

    img1, img2, H = load_demo_pair()  # H maps image-1 px onto image 2
    h, w = img1.shape[:2]
    lesions = [Lesion(fx * w, fy * h, r, kind) for fx, fy, r, kind in LESIONS]
    follow = painted_followup(img2, lesions, H)

    res = fundusfeat.compare(img1, follow)
    if not res.success:
        print(f"no change map: {res.reason}")
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scale = args.side / max(res.baseline.shape[:2])

    def small(image: np.ndarray) -> np.ndarray:
        return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)

    frames = [small(f) for f in fig.flicker_frames([res])]
    fig.write_flicker_gif(out / f"{args.prefix}flicker.gif", frames)
    cv2.imwrite(str(out / f"{args.prefix}changes.png"), small(fig.changes_figure(res)))
    cv2.imwrite(str(out / f"{args.prefix}difference.png"), small(fig.difference_figure(res)))
    score = score_changes(res.changes, lesions)
    for k, c in enumerate(res.changes, 1):
        print(
            f"change {k}: ({c.x:.0f}, {c.y:.0f}) {c.area:.0f} px {c.polarity}, score {c.score:.1f}"
        )
    print(
        f"painted lesions found: {sum(score.found)}/{len(lesions)}; false regions: "
        f"{score.false_regions}; confidence {res.registration.confidence:.3f}; wrote {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
