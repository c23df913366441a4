"""Register two fundus images with a classical OpenCV script, then swap SIFT for fundusfeat.

Everything below is plain OpenCV (detectAndCompute, BFMatcher with cross-check,
findHomography with RANSAC, warpPerspective). The line marked ``THE SWAP`` is the
only change needed to use the learned fundus detector instead of SIFT.

Usage::

    python examples/swap_sift.py                         # SIFT on the embedded demo pair
    python examples/swap_sift.py --detector fundusfeat   # the same script, fundusfeat
    python examples/swap_sift.py A.jpg B.jpg --out overlay.png

The overlay shows image 1 in green and the registered image 2 in magenta: aligned
vessels look grey/white, misaligned ones show coloured fringes.
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

import fundusfeat


def demo_paths() -> tuple[str, str]:
    """File paths of the embedded demo pair (fundusfeat/data/retina_a.jpg, retina_b.jpg)."""
    data = resources.files("fundusfeat") / "data"
    return str(data / "retina_a.jpg"), str(data / "retina_b.jpg")


def main() -> int:
    default1, default2 = demo_paths()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("image1", nargs="?", default=default1)
    parser.add_argument("image2", nargs="?", default=default2)
    parser.add_argument("--detector", choices=("sift", "fundusfeat"), default="sift")
    parser.add_argument("--out", default="out/swap_sift_overlay.png")
    args = parser.parse_args()

    img1 = cv2.imread(args.image1)
    img2 = cv2.imread(args.image2)
    if img1 is None or img2 is None:
        parser.error(f"cannot read {args.image1!r} or {args.image2!r}")

    # ---- THE SWAP: the only line that differs from a classical SIFT script ----------------
    detector = cv2.SIFT_create() if args.detector == "sift" else fundusfeat.R2D2Fundus.create()

    kps1, desc1 = detector.detectAndCompute(img1, None)
    kps2, desc2 = detector.detectAndCompute(img2, None)
    matcher = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True)
    matches = matcher.match(desc1, desc2) if len(kps1) and len(kps2) else []
    print(f"{args.detector}: {len(kps1)} / {len(kps2)} keypoints, {len(matches)} matches")
    if len(matches) < 4:
        print("too few matches for a homography")
        return 1

    src = np.float32([kps1[m.queryIdx].pt for m in matches]).reshape(-1, 1, 2)
    dst = np.float32([kps2[m.trainIdx].pt for m in matches]).reshape(-1, 1, 2)
    H, mask = cv2.findHomography(src, dst, cv2.RANSAC, 5.0)  # maps image 1 onto image 2
    if H is None:
        print("no homography found")
        return 1
    print(f"{int(mask.sum())} RANSAC inliers\nH =\n{H}")

    h, w = img1.shape[:2]
    registered = cv2.warpPerspective(img2, H, (w, h), flags=cv2.WARP_INVERSE_MAP)
    overlay = cv2.merge([registered[..., 1], img1[..., 1], registered[..., 1]])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(args.out, overlay)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
