"""Why a homography is not enough on a curved retina: an eye-model pair, three transforms.

An eye-model pair (``fundusfeat.evaluation.eye``: a spherical retina photographed from
two displaced camera positions through a distorting lens) has no true homography. This
script registers one such pair with ``register(transform_model="homography")`` and with the default
model choice, and compares both with the *oracle* homography (the best homography that
exists for the pair, fitted to the true correspondences). It prints each transform's
mean control-point error and its worst residual over the overlap, and writes a figure of
full-resolution overlay crops (green: image 1; magenta: image 2 warped into image 1's
frame; grey: aligned) at the place where the estimated homography is worst, and a second
figure of the residual over the whole overlap (how far the oracle homography and the
chosen model land from the true correspondent of each pixel).

Usage::

    python examples/eye_model_figure.py ../shared/data/retina.jpg --seed 3 --out docs/img
    python examples/eye_model_figure.py               # the embedded demo image
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

import fundusfeat
from fundusfeat.evaluation.eye import EYE_PRESETS, make_eye_pair
from fundusfeat.evaluation.metrics import pair_error
from fundusfeat.geometry.transforms import Transform, homography_transform
from fundusfeat.geometry.warp import warp_to
from fundusfeat.io import figures as viz
from fundusfeat.io.demo import load_demo_pair
from fundusfeat.io.images import read_image

CROP = 320  # px of image 1 per panel, shown at full resolution


def residual_map(transform: Transform, pair, step: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Residuals ``||T(p) - true(p)||`` (px in image 2) on a grid of image-1 pixels
    ``p`` inside both FOVs. Returns ((N, 2) grid points, (N,) residuals)."""
    h, w = pair.image1.shape[:2]
    ys, xs = np.mgrid[step // 2 : h : step, step // 2 : w : step]
    p = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    true = pair.geometry.map_1_to_2(p)
    q = np.round(np.nan_to_num(true, nan=-1.0, posinf=-1.0, neginf=-1.0)).astype(int)
    keep = (q[:, 0] >= 0) & (q[:, 0] < w) & (q[:, 1] >= 0) & (q[:, 1] < h)
    keep &= pair.image1[ys.ravel(), xs.ravel()].reshape(len(p), -1).max(axis=1) > 0
    keep[keep] &= pair.image2[q[keep, 1], q[keep, 0]].reshape(int(keep.sum()), -1).max(axis=1) > 0
    return p[keep], np.linalg.norm(transform.apply(p[keep]) - true[keep], axis=1)


def panel(pair, transform: Transform, centre: tuple[float, float], label: str) -> np.ndarray:
    """The full-resolution overlay crop of ``pair`` registered by ``transform``."""
    warped = warp_to(pair.image2, transform, pair.image1.shape)
    crop = viz.detail_crop(viz.overlay(pair.image1, warped), centre, CROP)
    crop = cv2.resize(crop, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    cv2.rectangle(crop, (0, 0), (crop.shape[1], 34), (0, 0, 0), -1)
    cv2.putText(
        crop, label, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.62, (255, 255, 255), 1, cv2.LINE_AA
    )
    return crop


def residual_image(transform: Transform, pair, label: str, step: int = 8) -> np.ndarray:
    """A colour map over image 1 of ``||T(p) - true(p)||`` (px), black outside the
    overlap, with ``label`` and the colour scale (0 .. the maximum) written on it."""
    h, w = pair.image1.shape[:2]
    grid, residuals = residual_map(transform, pair, step)
    cells = np.full((h // step + 1, w // step + 1), np.nan)
    cells[(grid[:, 1] // step).astype(int), (grid[:, 0] // step).astype(int)] = residuals
    top = float(np.nanmax(cells))
    scaled = np.nan_to_num(255 * cells / max(top, 1e-9), nan=0).astype(np.uint8)
    colour = cv2.applyColorMap(scaled, cv2.COLORMAP_TURBO)
    colour[np.isnan(cells)] = 0
    colour = cv2.resize(colour, (w, h), interpolation=cv2.INTER_NEAREST)
    colour = cv2.resize(colour, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    cv2.rectangle(colour, (0, 0), (colour.shape[1], 58), (0, 0, 0), -1)
    for row, text in enumerate((label, f"residual 0 (blue) .. {top:.1f} px (red)")):
        cv2.putText(
            colour,
            text,
            (8, 22 + 26 * row),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.6,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
    return colour


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("image", nargs="?", help="a colour fundus photograph (default: demo)")
    parser.add_argument("--preset", default="eye", choices=sorted(EYE_PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("out"))
    args = parser.parse_args()
    image = read_image(args.image) if args.image else load_demo_pair()[0]
    pair = make_eye_pair(image, EYE_PRESETS[args.preset], args.seed)

    detector = fundusfeat.R2D2Fundus.create()
    homography = fundusfeat.register(
        pair.image1, pair.image2, detector=detector, transform_model="homography"
    )
    chosen = fundusfeat.register(pair.image1, pair.image2, detector=detector)
    if not (homography.success and chosen.success):
        print("registration failed:", homography.reason, chosen.reason)
        return 1
    rows = [
        ("oracle homography", homography_transform(pair.H_oracle)),
        ("register(transform_model='homography')", homography.transform),
        (f"register() -> {chosen.transform.model}", chosen.transform),
    ]
    grid, worst_residuals = residual_map(homography.transform, pair)
    centre = tuple(grid[int(np.argmax(worst_residuals))])
    print(
        f"pair: preset {args.preset}, seed {args.seed}, overlap {pair.overlap:.0%}; "
        f"crop centre (x, y) = ({centre[0]:.0f}, {centre[1]:.0f})"
    )
    print(
        "| transform | control-point error px | residual over the overlap: median | 95th pct "
        "| max px |"
    )
    print("|---|---|---|---|---|")
    panels = []
    for label, transform in rows:
        error = pair_error(transform, pair.points_fixed, pair.points_moving)
        _, residuals = residual_map(transform, pair)
        p50, p95, pmax = np.percentile(residuals, [50, 95, 100])
        print(f"| {label} | {error:.2f} | {p50:.2f} | {p95:.2f} | {pmax:.2f} |")
        panels.append(panel(pair, transform, centre, f"{label}: {error:.2f} px"))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "eye_model_overlay.png"
    cv2.imwrite(str(path), np.hstack(panels))
    print(f"wrote {path}")
    maps = [residual_image(t, pair, label) for label, t in (rows[0], rows[2])]
    path = args.out / "eye_model_residuals.png"
    cv2.imwrite(str(path), np.hstack(maps))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
