"""Synthetic multi-field sets of one eye: narrow fields of a curved retina, exact truth.

The eye model of :mod:`fundusfeat.evaluation.eye`: the source photograph is the texture of
a retina sphere seen by a *source camera* (its FOV circle spans ``SOURCE_DEG`` = 45
degrees). Each field is rendered by a *field camera* with a narrower field
(``field_deg``, 28 degrees by default), the same image size and FOV circle as the source,
looking in a gaze direction of the layout (a 5-field cross or a 7-field hexagon; gaze
step ``step_deg`` drawn in 6-8 degrees), with its projection centre displaced (up to
``lateral_mm``), one radial distortion ``k`` shared by all cameras of a set and an
independent photometric change per field.

Truth: for every pair of fields whose FOVs overlap, dense true correspondences (a grid
of field-i pixels mapped by ray tracing into field j, kept inside both FOVs).

Coordinates: ``(x, y)`` pixels, the centre of the top-left pixel at (0, 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fundusfeat.evaluation.eye import Camera, EyeGeometry, _rotation, render_second_image
from fundusfeat.evaluation.synthetic import EASY_PHOTO
from fundusfeat.features.fov import FieldOfView, estimate_fov
from fundusfeat.io.arrays import points_in_mask, to_uint8
from fundusfeat.training.warps import PhotoRange, photometric_change

SOURCE_DEG = 45.0
"""Angular diameter of the source photograph's FOV circle."""

LAYOUTS: dict[str, tuple[tuple[float, float], ...]] = {
    "cross5": ((0.0, 0.0), (1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, -1.0)),
    "seven": (
        (0.0, 0.0),
        (1.0, 0.0),
        (-1.0, 0.0),
        (0.5, 0.866),
        (-0.5, 0.866),
        (0.5, -0.866),
        (-0.5, -0.866),
    ),
}
"""Gaze directions of each layout, in units of the gaze step: (yaw, pitch)."""

_GRID_STEP = 16
_RADIUS_MM = 12.0
_POLE_MM = 17.0


@dataclass(frozen=True)
class FieldSet:
    """Fields of one eye with their exact geometry.

    Attributes:
        images: (H, W, 3) uint8 BGR fields (FOV outside set to 0).
        fov: the fields' common field of view (mask ``(H, W)`` bool).
        cameras: one :class:`~fundusfeat.evaluation.eye.Camera` per field.
        pairs: ``{(i, j): (points_i, points_j)}`` for ``i < j`` whose FOVs overlap: ``(N, 2)``
            true correspondences.
        layout: the layout's name.
    """

    images: list[np.ndarray]
    fov: FieldOfView
    cameras: list[Camera]
    pairs: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]
    layout: str


def _geometry(a: Camera, b: Camera) -> EyeGeometry:
    centre = np.array([0.0, 0.0, _POLE_MM - _RADIUS_MM])
    return EyeGeometry(a, b, centre, _RADIUS_MM)


def _focal(fov: FieldOfView, field_deg: float, k: float) -> float:
    half = math.tan(math.radians(field_deg / 2.0))
    return fov.radius / (half * (1.0 + k * half * half))


def _render(
    source: np.ndarray,
    fov: FieldOfView,
    source_camera: Camera,
    camera: Camera,
    rng: np.random.Generator,
    photo: PhotoRange,
) -> np.ndarray:
    """One field: ray-traced view of the source, photometric change, FOV outside 0."""
    rendered = render_second_image(source, fov, _geometry(source_camera, camera))
    img = to_uint8(photometric_change(rendered, rng, photo))
    img[~fov.mask] = 0
    return img


def make_field_set(
    source: np.ndarray,
    layout: str = "cross5",
    seed: int | np.random.SeedSequence = 0,
    *,
    field_deg: float = 28.0,
    step_deg: tuple[float, float] = (6.0, 8.0),
    lateral_mm: float = 0.5,
    distortion: tuple[float, float] = (-0.1, 0.1),
    photo: PhotoRange = EASY_PHOTO,
) -> FieldSet:
    """Render a multi-field set from one photograph (deterministic given ``seed``).

    Args:
        source: (H, W, 3) colour fundus photograph (the retina texture; fields have its size).
        layout: a key of :data:`LAYOUTS`.
        seed: seed of the draws (gaze step, camera displacements, distortion, photometry).
        field_deg: angular diameter of each field's FOV circle.
        step_deg: (min, max) of the gaze step.
        lateral_mm: largest displacement of a field camera's projection centre.
        distortion: (min, max) of the shared radial distortion.
        photo: photometric change of each field.

    Raises:
        ValueError: an unknown layout.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
    rng = np.random.default_rng(seed)
    fov = estimate_fov(source)
    k = float(rng.uniform(*distortion))
    step = math.radians(float(rng.uniform(*step_deg)))
    src_cam = Camera(_focal(fov, SOURCE_DEG, k), fov.center, k, np.eye(3), np.zeros(3))
    focal = _focal(fov, field_deg, k)
    cameras, images = [], []
    for yaw, pitch in LAYOUTS[layout]:
        roll = math.radians(float(rng.uniform(-2.0, 2.0)))
        shift = np.append(rng.uniform(-lateral_mm, lateral_mm, size=2), 0.0)
        cam = Camera(focal, fov.center, k, _rotation(yaw * step, pitch * step, roll), shift)
        cameras.append(cam)
        images.append(_render(source, fov, src_cam, cam, rng, photo))
    h, w = fov.mask.shape
    ys, xs = np.mgrid[_GRID_STEP // 2 : h : _GRID_STEP, _GRID_STEP // 2 : w : _GRID_STEP]
    grid = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    grid = grid[points_in_mask(fov.mask, grid)]
    pairs = {}
    for i in range(len(cameras)):
        for j in range(i + 1, len(cameras)):
            mapped = _geometry(cameras[i], cameras[j]).map_1_to_2(grid)
            keep = points_in_mask(fov.mask, mapped)
            if keep.sum() >= 20:
                pairs[(i, j)] = (grid[keep], mapped[keep])
    return FieldSet(images, fov, cameras, pairs, layout)


def impostor_field(other_source: np.ndarray, seed: int = 0, field_deg: float = 28.0) -> np.ndarray:
    """One field of another eye: ``other_source`` seen straight on with a ``field_deg``
    field (as the centre field of a set), with a photometric change."""
    rng = np.random.default_rng(seed)
    fov = estimate_fov(other_source)
    k = float(rng.uniform(-0.1, 0.1))
    src_cam = Camera(_focal(fov, SOURCE_DEG, k), fov.center, k, np.eye(3), np.zeros(3))
    cam = Camera(_focal(fov, field_deg, k), fov.center, k, np.eye(3), np.zeros(3))
    return _render(other_source, fov, src_cam, cam, rng, EASY_PHOTO)
