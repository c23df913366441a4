"""What a classical fundus script does: SIFT on CLAHE-enhanced green inside the field of
view, Lowe's ratio test, RANSAC. The cold-command comparison of ``fundusfeat register``
(``examples/cold_commands.py``); usage: ``python examples/sift_clahe_register.py A B``."""

import argparse
import sys

import cv2
import numpy as np


def features(path):
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        sys.exit(f"cannot read {path}")
    fov = (img.max(axis=2) > 20).astype(np.uint8) * 255  # the bright disc
    green = cv2.createCLAHE(2.0, (8, 8)).apply(img[..., 1])
    return cv2.SIFT_create().detectAndCompute(green, cv2.erode(fov, np.ones((9, 9))))


parser = argparse.ArgumentParser(description="SIFT-CLAHE registration of two images")
parser.add_argument("image1")
parser.add_argument("image2")
args = parser.parse_args()
(k1, d1), (k2, d2) = features(args.image1), features(args.image2)
pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(d1, d2, k=2)
good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]
src = np.float32([k1[m.queryIdx].pt for m in good])
dst = np.float32([k2[m.trainIdx].pt for m in good])
H, inliers = cv2.findHomography(src, dst, cv2.RANSAC, 5.0) if len(good) >= 4 else (None, None)
print("H =", None if H is None else np.round(H, 5).tolist())
print("inliers:", 0 if inliers is None else int(inliers.sum()), "of", len(good), "matches")
