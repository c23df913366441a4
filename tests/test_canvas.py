"""pipeline.canvas on real-like two-field cases made here: every canvas pixel inside the
union of the placed fields' FOV masks gets a value (no holes along the seam), for large
and small overlaps, a seam across bright and dark structure, both orders and both
transform models; at the size of real photographs, where the seam is found on a copy
reduced about 10x."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fundusfeat.features.fov import estimate_fov
from fundusfeat.geometry.transforms import ProjectiveTransform, fit
from fundusfeat.pipeline.canvas import RIM_PX, blend, canvas_bounds, shifted, warp_into

SIDE = 1536
"""Long side of the fields: large enough that the seam is found on a reduced copy."""


@pytest.fixture(scope="module")
def photo(demo_pair):
    img = cv2.resize(demo_pair[0], (SIDE, SIDE), interpolation=cv2.INTER_CUBIC)
    return img, estimate_fov(img).mask


def _gaze(shift: tuple[float, float], angle: float) -> np.ndarray:
    """A homography of field px -> reference px: rotation about the centre, then shift."""
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    h = SIDE / 2
    rot = np.array([[c, -s, h - c * h + s * h], [s, c, h - s * h - c * h], [0, 0, 1.0]])
    move = np.array([[1, 0, shift[0] * SIDE], [0, 1, shift[1] * SIDE], [0, 0, 1.0]])
    return move @ rot


def _transform(matrix: np.ndarray, quadratic: bool):
    if not quadratic:
        return ProjectiveTransform(matrix)
    grid = np.stack(np.meshgrid(np.linspace(0, SIDE, 9), np.linspace(0, SIDE, 9)), -1)
    p1 = grid.reshape(-1, 2)
    p2 = ProjectiveTransform(matrix).apply(p1)
    u = (p1 - SIDE / 2) / SIDE
    p2 = p2 + 12.0 * np.stack([u[:, 0] ** 2, u[:, 0] * u[:, 1]], 1)  # a mild bend
    return fit("quadratic", p1, p2)


def _union(transforms, masks, size) -> np.ndarray:
    """Canvas pixels inside some field's FOV mask (eroded as blend erodes it)."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * RIM_PX + 1, 2 * RIM_PX + 1))
    union = np.zeros(size[::-1], bool)
    for t, m in zip(transforms, masks, strict=True):
        inner = cv2.erode(m.astype(np.uint8), kernel) > 0
        union |= warp_into(inner.astype(np.uint8), inner, t, (0, 0, *size))[1]
    return union


@pytest.mark.parametrize(
    ("shift", "angle", "reverse", "quadratic"),
    [
        ((0.06, 0.03), 2.0, False, False),  # large overlap, small gaze change
        ((0.06, 0.03), 2.0, True, True),
        ((0.45, 0.2), -7.0, False, True),  # small overlap
        ((0.45, 0.2), -7.0, True, False),
        ((0.25, -0.1), 4.0, False, False),  # the seam crosses the optic disc and vessels
    ],
)
def test_no_hole_inside_the_placed_fields(photo, shift, angle, reverse, quadratic):
    img, fov = photo
    other = cv2.convertScaleAbs(img, alpha=0.7)  # another exposure: a costly seam
    images, masks = [img, other], [fov, fov]
    transforms = [ProjectiveTransform(np.eye(3)), _transform(_gaze(shift, angle), quadratic)]
    if reverse:
        images, masks, transforms = images[::-1], masks[::-1], transforms[::-1]
    offset, size = canvas_bounds(transforms, masks)
    transforms = [shifted(t, offset) for t in transforms]
    out, mask = blend(images, masks, transforms, size)
    union = _union(transforms, masks, size)
    assert union.sum() > 1.05 * fov.sum()
    assert not (union & ~mask).any(), f"{int((union & ~mask).sum())} px without a value"
    assert not (out[union] == 0).all(axis=1).any()  # no black pixel inside the fields
    assert not out[~mask].any()
