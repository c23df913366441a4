"""pipeline.canvas on real-like two-field cases made here, at the size of real photographs
(the seam is found on a copy reduced about 10x):

- every canvas pixel inside the union of the placed fields' FOV masks gets a value (no
  holes along the seam), for large and small overlaps, a seam near the optic disc, both
  orders, both transform models and two exposures;
- a bright halo on one field leaves no visible seam: the step in low-pass luminance
  across the seam stays within 1.5x the same statistic inside a field.

The fields are views of one photograph (the embedded demo image at 1536 px), so they
agree where they overlap: field pixel q shows the photograph at T(q), T the field's
placement.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fundusfeat.evaluation.seams import seam_step
from fundusfeat.geometry.fitting import fit
from fundusfeat.geometry.transforms import ProjectiveTransform
from fundusfeat.pipeline.canvas import RIM_PX, blend, canvas_bounds, shifted, warp_into

SOURCE = 1536
"""Side of the photograph the fields are cut from (its FOV radius is about 759 px)."""

FIELD = 1000
"""Side of a field; its FOV is a centred circle of radius :data:`RADIUS`."""

RADIUS = 480


@pytest.fixture(scope="module")
def source(demo_pair):
    return cv2.resize(demo_pair[0], (SOURCE, SOURCE), interpolation=cv2.INTER_CUBIC)


def _placement(centre: tuple[float, float], angle: float, quadratic: bool):
    """Field px -> photograph px: rotation about the field centre, then the field centre
    moved to ``centre``; ``quadratic`` adds a mild bend (a fitted quadratic model)."""
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    h = FIELD / 2
    matrix = np.array(
        [[c, -s, centre[0] - c * h + s * h], [s, c, centre[1] - s * h - c * h], [0, 0, 1]]
    )
    if not quadratic:
        return ProjectiveTransform(matrix)
    grid = np.stack(np.meshgrid(np.linspace(0, FIELD, 9), np.linspace(0, FIELD, 9)), -1)
    p1 = grid.reshape(-1, 2)
    u = (p1 - h) / FIELD
    p2 = ProjectiveTransform(matrix).apply(p1) + 10.0 * np.stack(
        [u[:, 0] ** 2, u[:, 0] * u[:, 1]], 1
    )
    return fit("quadratic", p1, p2)


def _field(source: np.ndarray, placement) -> tuple[np.ndarray, np.ndarray]:
    """The field seen through ``placement`` and its circular FOV mask."""
    ys, xs = np.mgrid[0:FIELD, 0:FIELD]
    pts = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    maps = placement.apply(pts).astype(np.float32).reshape(FIELD, FIELD, 2)
    image = cv2.remap(source, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR)
    mask = np.hypot(xs - (FIELD - 1) / 2, ys - (FIELD - 1) / 2) <= RADIUS
    image[~mask] = 0
    return image, mask


def _halo(image: np.ndarray, mask: np.ndarray, centre, sigma: float, amp: float) -> np.ndarray:
    ys, xs = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    gain = 1 + amp * np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma**2))
    out = np.clip(image * gain[..., None], 0, 255).astype(np.uint8)
    out[~mask] = 0
    return out


def _montage(source, centres, angles, quadratic, reverse=False, edit=None, **kwargs):
    placements = [_placement(c, a, quadratic) for c, a in zip(centres, angles, strict=True)]
    fields = [_field(source, p) for p in placements]
    images, masks = [f[0] for f in fields], [f[1] for f in fields]
    if edit is not None:
        images[1] = edit(images[1], masks[1])
    if reverse:
        images, masks, placements = images[::-1], masks[::-1], placements[::-1]
    offset, size = canvas_bounds(placements, masks)
    transforms = [shifted(t, offset) for t in placements]
    return blend(images, masks, transforms, size, **kwargs), transforms, masks, size


def _union(transforms, masks, size) -> np.ndarray:
    """Canvas pixels inside some field's FOV mask (eroded as blend erodes it)."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * RIM_PX + 1, 2 * RIM_PX + 1))
    union = np.zeros(size[::-1], bool)
    for t, m in zip(transforms, masks, strict=True):
        inner = cv2.erode(m.astype(np.uint8), kernel) > 0
        union |= warp_into(inner.astype(np.uint8), inner, t, (0, 0, *size))[1]
    return union


LARGE = ((700.0, 740.0), (820.0, 800.0))
SMALL = ((560.0, 640.0), (1000.0, 900.0))
DISC = ((520.0, 560.0), (560.0, 900.0))  # fields above and below the optic disc


@pytest.mark.parametrize(
    ("centres", "angles", "reverse", "quadratic"),
    [
        (LARGE, (0.0, 3.0), False, False),
        (LARGE, (0.0, 3.0), True, True),
        (SMALL, (0.0, -6.0), False, True),
        (SMALL, (0.0, -6.0), True, False),
        (DISC, (2.0, -4.0), False, False),
    ],
)
def test_no_hole_inside_the_placed_fields(source, centres, angles, reverse, quadratic):
    darker = lambda img, mask: cv2.convertScaleAbs(img, alpha=0.7)  # noqa: E731
    (out, mask), transforms, masks, size = _montage(
        source, centres, angles, quadratic, reverse, edit=darker
    )
    union = _union(transforms, masks, size)
    assert union.sum() > 1.05 * masks[0].sum()
    assert not (union & ~mask).any(), f"{int((union & ~mask).sum())} px without a value"
    assert not (out[union] == 0).all(axis=1).any()  # no black pixel inside the fields
    assert not out[~mask].any()


def test_a_halo_on_one_field_leaves_no_visible_seam(source):
    """Field 2 taken at 0.7x the exposure with a bright halo (1.45x at its centre) over
    the overlap: the seam step is well above the in-field statistic without compensation
    and within 1.5x of it with. (The halo clips no channel: a clipped channel cannot be
    brought back, and the seams give clipped pixels to a field that still shows them.)"""

    def halo(img, mask):
        return _halo(cv2.convertScaleAbs(img, alpha=0.7), mask, (300, 420), 200.0, 0.45)

    ratios = {}
    for compensate in (False, True):
        (out, _, labels), *_ = _montage(
            source, SMALL, (0.0, -6.0), False, edit=halo, compensate=compensate, labels=True
        )
        ratios[compensate] = seam_step(out, labels).ratio
    assert ratios[False] > 2.0, ratios
    assert ratios[True] <= 1.5, ratios


def test_exposure_of_the_reference_kept(source):
    """The reference field's pixels away from the seam are unchanged by compensation."""
    dim = lambda img, mask: cv2.convertScaleAbs(img, alpha=0.6)  # noqa: E731
    for reference in (0, 1):
        (out, _, labels), transforms, masks, size = _montage(
            source, LARGE, (0.0, 3.0), False, edit=dim, reference=reference, labels=True
        )
        inner = cv2.erode((labels == reference).astype(np.uint8), np.ones((41, 41), np.uint8)) > 0
        field = _field(source, _placement(LARGE[reference], (0.0, 3.0)[reference], False))[0]
        if reference == 1:
            field = dim(field, None)
        expected = warp_into(
            field, np.ones(field.shape[:2], bool), transforms[reference], (0, 0, *size)
        )[0]
        diff = np.abs(out[inner].astype(int) - expected[inner].astype(int))
        assert np.median(diff) <= 2, (reference, np.median(diff))
