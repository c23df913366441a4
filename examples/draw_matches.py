"""Draw fundusfeat matches between two fundus images with cv2.drawMatches.

Inliers of the estimated homography are drawn green; outliers are hidden.

Usage::

    python examples/draw_matches.py                      # the embedded demo pair
    python examples/draw_matches.py A.jpg B.jpg --out matches.png --model fast
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2

import fundusfeat
from fundusfeat.features import models
from fundusfeat.io.demo import load_demo_pair


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="*", help="two images (default: the demo pair)")
    parser.add_argument("--out", default="out/matches.png")
    parser.add_argument("--model", choices=models.names(), default=None)
    args = parser.parse_args()

    if not args.images:
        img1, img2, _ = load_demo_pair()
    elif len(args.images) == 2:
        img1, img2 = (cv2.imread(path) for path in args.images)
        if img1 is None or img2 is None:
            parser.error(f"cannot read {args.images}")
    else:
        parser.error("give two images, or none for the demo pair")

    options = {} if args.model is None else {"model": args.model}
    detector = fundusfeat.R2D2Fundus.create(**options)
    kps1, desc1 = detector.detectAndCompute(img1, None)
    kps2, desc2 = detector.detectAndCompute(img2, None)
    matches = fundusfeat.FundusMatcher.create().match(desc1, desc2)
    H, inliers = fundusfeat.estimate_projective(kps1, kps2, matches)

    mask = inliers.ravel().tolist() if H is not None else None
    figure = cv2.drawMatches(
        img1,
        kps1,
        img2,
        kps2,
        matches,
        None,
        matchColor=(0, 200, 0),
        matchesMask=mask,
        flags=cv2.DrawMatchesFlags_NOT_DRAW_SINGLE_POINTS,
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(args.out, figure)
    n_in = int(sum(mask)) if mask is not None else 0
    print(f"{len(kps1)} / {len(kps2)} keypoints, {len(matches)} matches, {n_in} inliers")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
