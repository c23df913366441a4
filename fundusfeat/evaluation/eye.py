"""Eye-model pairs: a curved retina seen from two camera positions (not a homography).

Two photographs of a curved retina taken from different camera positions are not
related by a homography. This generator makes such pairs from one photograph:

- The retina is a sphere of radius ``radius_mm`` (12 mm). Camera 1 took the source
  photograph: its projection centre is ``pole_distance_mm`` (17 mm) in front of the
  posterior pole, on the axis through the sphere's centre, so it sits inside the globe
  and looks at the concave back wall. Its field of view (the photograph's FOV circle,
  estimated by :func:`fundusfeat.features.fov.estimate_fov`) spans ``field_deg`` (45 degrees):
  the focal length is the FOV radius over the distorted tangent of half the field, and
  the principal point is the FOV centre.
- Both cameras share one radial lens distortion ``x_d = x (1 + k r^2)`` (normalised
  coordinates), ``k`` drawn per pair.
- Camera 2 has the same intrinsics and the same FOV circle in its frame, its centre is
  displaced (lateral and axial, mm) and it is rotated (yaw, pitch, roll).
- Image 2 is rendered by ray tracing: each pixel's ray from camera 2 meets the sphere
  (``cv2.remap`` then samples the source where camera 1 saw that point; beyond camera
  1's FOV and frame the source is extended by a smooth fill, as in the homography
  presets). Image 1 is the source. Each gets an independent photometric change.

Ground truth is exact: control points (FIRE convention, ``points_fixed`` in image 1,
``points_moving`` in image 2) are mapped by ray tracing, and the *oracle homography* is
the least-squares homography of dense true correspondences over the overlap: the best
any projective model can do, reported as the ceiling of every projective method.

Reproducibility: pair ``i`` uses image ``i % len(images)`` and the ``i``-th child of
``SeedSequence([seed, STREAM_TAG])``; the tag differs from the homography presets' and
the trainer's, so the streams are independent.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from fundusfeat.evaluation.pairs import EvalPair
from fundusfeat.evaluation.synthetic import (
    EASY_PHOTO,
    HARD_PHOTO,
    HIGH_OVERLAP,
    named_preset,
    seeded_pairs,
    smooth_extension,
    spread_points,
)
from fundusfeat.features.fov import FieldOfView, estimate_fov
from fundusfeat.io.arrays import points_in_mask, to_uint8
from fundusfeat.io.images import read_image
from fundusfeat.training.warps import PhotoRange, photometric_change

logger = logging.getLogger(__name__)

STREAM_TAG = 0xE7E5
"""Second entropy word of the eye presets' seed sequence."""

_MAX_DRAWS = 200
_GRID_STEP = 8  # pixels between the dense correspondences of the overlap and the oracle


@dataclass(frozen=True)
class EyeRange:
    """Ranges of camera 2's pose and the shared lens distortion (uniform draws).

    Attributes:
        lateral_mm: largest displacement of camera 2 across the axis (x and y, mm).
        axial_mm: largest displacement along the axis (mm).
        rotation_deg: largest yaw and pitch (degrees).
        roll_deg: largest roll about the optical axis (degrees).
        distortion: (min, max) radial distortion coefficient ``k``.
    """

    lateral_mm: float = 2.0
    axial_mm: float = 1.0
    rotation_deg: float = 10.0
    roll_deg: float = 10.0
    distortion: tuple[float, float] = (-0.1, 0.1)


@dataclass(frozen=True)
class EyePreset:
    """How the eye-model pairs are drawn.

    Attributes:
        name: preset name.
        eye: camera-2 pose and distortion ranges.
        photo: photometric change of each image.
        min_overlap: smallest accepted fraction of image 1's FOV seen in image 2's.
        num_points: control points per pair.
        point_margin: margin from the FOV borders and spacing of the control points
            (fraction of the FOV diameter).
        radius_mm: radius of the retina sphere.
        pole_distance_mm: distance from camera 1's projection centre to the pole.
        field_deg: angular diameter of the FOV circle.
    """

    name: str
    eye: EyeRange
    photo: PhotoRange
    min_overlap: float
    num_points: int = 10
    point_margin: float = 0.03
    radius_mm: float = 12.0
    pole_distance_mm: float = 17.0
    field_deg: float = 45.0


EYE_PRESETS: dict[str, EyePreset] = {
    "eye": EyePreset(
        name="eye",
        eye=EyeRange(
            lateral_mm=3.0,
            axial_mm=1.5,
            rotation_deg=15.0,
            roll_deg=10.0,
            distortion=(-0.15, 0.15),
        ),
        photo=EASY_PHOTO,
        min_overlap=0.5,
    ),
    "eye-hard": EyePreset(
        name="eye-hard",
        eye=EyeRange(
            lateral_mm=3.0,
            axial_mm=1.5,
            rotation_deg=18.0,
            roll_deg=15.0,
            distortion=(-0.15, 0.15),
        ),
        photo=HARD_PHOTO,
        min_overlap=0.4,
    ),
}
"""The eye-model presets of ``fundusfeat evaluate --synthetic --preset eye|eye-hard``,
calibrated so that the oracle homography's median error is at least 3 px on the held-out
images at their own size (about 1536 px; docs/benchmarks.md)."""


@dataclass(frozen=True)
class Camera:
    """A pinhole camera with one radial distortion coefficient.

    Attributes:
        focal: focal length (pixels).
        principal: ``(cx, cy)`` principal point (pixels).
        k: radial distortion, ``x_d = x (1 + k |x|^2)`` in normalised coordinates.
        rotation: (3, 3) world-from-camera rotation.
        centre: (3,) projection centre in the world (mm).
    """

    focal: float
    principal: tuple[float, float]
    k: float
    rotation: np.ndarray
    centre: np.ndarray

    def rays(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 3) unit world directions of the rays through ``(N, 2)`` pixels."""
        xd = (pixels - np.asarray(self.principal)) / self.focal
        x = _undistort(xd, self.k)
        d = np.concatenate([x, np.ones((len(x), 1))], axis=1) @ self.rotation.T
        return d / np.linalg.norm(d, axis=1, keepdims=True)

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) pixels of (N, 3) world points (NaN behind the camera)."""
        cam = (points - self.centre) @ self.rotation
        with np.errstate(divide="ignore", invalid="ignore"):
            x = cam[:, :2] / cam[:, 2:3]
        x[cam[:, 2] <= 1e-9] = np.nan
        r2 = (x * x).sum(axis=1, keepdims=True)
        return x * (1.0 + self.k * r2) * self.focal + np.asarray(self.principal)


def _undistort(xd: np.ndarray, k: float) -> np.ndarray:
    """Invert ``x_d = x (1 + k r^2)`` (Newton on the radius, vectorised)."""
    rd = np.linalg.norm(xd, axis=1)
    r = rd.copy()
    for _ in range(20):
        step = (r + k * r**3 - rd) / (1.0 + 3.0 * k * r * r)
        r -= step
        if np.max(np.abs(step), initial=0.0) < 1e-12:
            break
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(rd > 0, r / rd, 1.0)
    return xd * ratio[:, None]


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """World-from-camera rotation: roll about z, then pitch about x, then yaw about y."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return ry @ rx @ rz


@dataclass(frozen=True)
class EyeGeometry:
    """Two cameras looking at one retina sphere: the exact maps between their images.

    Attributes:
        camera1, camera2: the cameras (camera 1 took the source photograph).
        sphere_centre: (3,) centre of the retina sphere (mm).
        radius: its radius (mm).
    """

    camera1: Camera
    camera2: Camera
    sphere_centre: np.ndarray
    radius: float

    def _hit(self, camera: Camera, pixels: np.ndarray) -> np.ndarray:
        """(N, 3) points where the rays of ``pixels`` meet the sphere's far wall."""
        d = camera.rays(pixels)
        oc = camera.centre - self.sphere_centre
        b = d @ oc
        c = oc @ oc - self.radius**2
        with np.errstate(invalid="ignore"):
            t = -b + np.sqrt(b * b - c)
        t[~(t > 0)] = np.nan
        return camera.centre + t[:, None] * d

    def map_1_to_2(self, points1: np.ndarray) -> np.ndarray:
        """(N, 2) image-2 pixels of image-1 pixels (the true transform)."""
        return self.camera2.project(self._hit(self.camera1, np.asarray(points1, np.float64)))

    def map_2_to_1(self, points2: np.ndarray) -> np.ndarray:
        """(N, 2) image-1 pixels of image-2 pixels (the true inverse)."""
        return self.camera1.project(self._hit(self.camera2, np.asarray(points2, np.float64)))


def eye_geometry(fov: FieldOfView, rng: np.random.Generator, preset: EyePreset) -> EyeGeometry:
    """Draw camera 2's pose and the distortion for a photograph's field of view."""
    r = preset.eye
    k = float(rng.uniform(*r.distortion))
    half = math.tan(math.radians(preset.field_deg / 2.0))
    focal = fov.radius / (half * (1.0 + k * half * half))
    yaw, pitch = np.radians(rng.uniform(-r.rotation_deg, r.rotation_deg, size=2))
    roll = math.radians(rng.uniform(-r.roll_deg, r.roll_deg))
    lateral = rng.uniform(-r.lateral_mm, r.lateral_mm, size=2)
    axial = rng.uniform(-r.axial_mm, r.axial_mm)
    cam1 = Camera(focal, fov.center, k, np.eye(3), np.zeros(3))
    cam2 = Camera(
        focal,
        fov.center,
        k,
        _rotation(float(yaw), float(pitch), roll),
        np.array([lateral[0], lateral[1], axial]),
    )
    centre = np.array([0.0, 0.0, preset.pole_distance_mm - preset.radius_mm])
    return EyeGeometry(cam1, cam2, centre, preset.radius_mm)


def _grid(h: int, w: int, step: int) -> np.ndarray:
    ys, xs = np.mgrid[step // 2 : h : step, step // 2 : w : step]
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)


@dataclass(frozen=True)
class EyePair:
    """One eye-model pair.

    Attributes:
        image1, image2: (H, W, 3) uint8 BGR, the size of the source.
        geometry: the exact cameras and sphere.
        points_fixed, points_moving: (N, 2) control points in image 1 and image 2.
        H_oracle: (3, 3) least-squares homography of the dense true correspondences.
        overlap: fraction of image 1's FOV inside image 2's FOV.
    """

    image1: np.ndarray
    image2: np.ndarray
    geometry: EyeGeometry
    points_fixed: np.ndarray
    points_moving: np.ndarray
    H_oracle: np.ndarray
    overlap: float


@dataclass(frozen=True)
class _Draw:
    geometry: EyeGeometry
    overlap: float
    points_fixed: np.ndarray
    H_oracle: np.ndarray


def _draw(fov: FieldOfView, rng: np.random.Generator, preset: EyePreset) -> _Draw:
    """Draw the geometry until the overlap is large enough; then points and oracle."""
    mask = fov.mask
    h, w = mask.shape
    grid = _grid(h, w, _GRID_STEP)
    grid = grid[points_in_mask(mask, grid)]
    margin = preset.point_margin * fov.diameter
    k = max(1, int(round(margin)))
    inner = cv2.erode(mask.astype(np.uint8), np.ones((2 * k + 1, 2 * k + 1), np.uint8)) > 0
    for _ in range(_MAX_DRAWS):
        geometry = eye_geometry(fov, rng, preset)
        seen = points_in_mask(mask, geometry.map_1_to_2(grid))
        overlap = float(seen.mean()) if len(grid) else 0.0
        if overlap >= preset.min_overlap:
            break
    else:
        raise ValueError(
            f"no camera pose with overlap >= {preset.min_overlap} in {_MAX_DRAWS} draws"
        )
    src = grid[seen]
    H_oracle, _ = cv2.findHomography(src, geometry.map_1_to_2(src), 0)
    coarse = _grid(h, w, 4)  # the region where control points may lie, at 1/4 resolution
    ok = points_in_mask(inner, coarse) & points_in_mask(inner, geometry.map_1_to_2(coarse))
    region = np.zeros(((h + 3) // 4, (w + 3) // 4), np.uint8)
    region[(coarse[ok, 1] // 4).astype(int), (coarse[ok, 0] // 4).astype(int)] = 1
    region = cv2.resize(region, (w, h), interpolation=cv2.INTER_NEAREST).astype(bool) & inner
    points = spread_points(region, rng, preset.num_points, margin)
    return _Draw(geometry, overlap, points, H_oracle / H_oracle[2, 2])


def render_second_image(image: np.ndarray, fov: FieldOfView, geometry: EyeGeometry) -> np.ndarray:
    """Image 2 of ``image`` under ``geometry``: (H, W, 3) float32 in [0, 1], FOV applied."""
    h, w = fov.mask.shape
    canvas, pad = smooth_extension(image, fov.mask, pad_fraction=1.0)
    ys, xs = np.mgrid[0:h, 0:w]
    p2 = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    p1 = geometry.map_2_to_1(p2) + pad
    p1[~np.isfinite(p1)] = -1e6
    maps = p1.astype(np.float32).reshape(h, w, 2)
    out = cv2.remap(
        canvas, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    out[~fov.mask] = 0.0
    return out


def make_eye_pair(
    image: np.ndarray,
    preset: EyePreset,
    seed: np.random.SeedSequence | int,
    *,
    followup_source: np.ndarray | None = None,
) -> EyePair:
    """Make one eye-model pair from a colour fundus photograph (deterministic given ``seed``).

    Args:
        image: ``(H, W, 3)`` uint8 BGR source: image 1, and what camera 2 sees.
        preset: the cameras' and photometric ranges.
        seed: the pair's seed.
        followup_source: what camera 2 sees instead of ``image`` (same size and FOV: e.g.
            ``image`` with painted lesions, :mod:`fundusfeat.evaluation.lesions`); the
            draws are the same, so the two pairs differ only by it.

    Raises:
        ValueError: if no pose reaches the preset's overlap.
    """
    rng = np.random.default_rng(seed)
    fov = estimate_fov(image)
    draw = _draw(fov, rng, preset)
    second = image if followup_source is None else followup_source
    if second.shape != image.shape:
        raise ValueError(
            f"followup_source: expected the shape of image {image.shape}, got {second.shape}"
        )
    image1 = photometric_change(image, rng, preset.photo)
    image2 = photometric_change(render_second_image(second, fov, draw.geometry), rng, preset.photo)
    image1, image2 = to_uint8(image1), to_uint8(image2)
    image1[~fov.mask] = 0
    image2[~fov.mask] = 0
    return EyePair(
        image1=image1,
        image2=image2,
        geometry=draw.geometry,
        points_fixed=draw.points_fixed,
        points_moving=draw.geometry.map_1_to_2(draw.points_fixed),
        H_oracle=draw.H_oracle,
        overlap=draw.overlap,
    )


def _load_pair(
    path: Path, preset: EyePreset, seed: np.random.SeedSequence
) -> tuple[np.ndarray, np.ndarray]:
    pair = make_eye_pair(read_image(path), preset, seed)
    return pair.image1, pair.image2


def eye_pairs(
    images: list[Path], preset: EyePreset | str, num_pairs: int, seed: int = 0
) -> list[EvalPair]:
    """The eye-model benchmark's pairs; images are rendered on demand by ``EvalPair.load``.

    Args:
        images: source photographs (never training images); pair ``i`` uses
            ``images[i % len(images)]``.
        preset: an :class:`EyePreset` or a name in :data:`EYE_PRESETS`.
        num_pairs: number of pairs (>= 1).
        seed: the benchmark seed.

    Returns:
        Pairs named ``eye000``, ... with category ``"S"``/``"P"`` by overlap, control
        points and the oracle homography (``H_oracle``; ``H_true`` is None: no
        homography is true).
    """
    preset = named_preset(preset, EYE_PRESETS)

    def make(i: int, path: Path, fov: FieldOfView, child: np.random.SeedSequence) -> EvalPair:
        draw = _draw(fov, np.random.default_rng(child), preset)
        return EvalPair(
            name=f"eye{i:03d}",
            category="S" if draw.overlap >= HIGH_OVERLAP else "P",
            points_fixed=draw.points_fixed,
            points_moving=draw.geometry.map_1_to_2(draw.points_fixed),
            load=partial(_load_pair, path, preset, child),
            H_oracle=draw.H_oracle,
        )

    pairs = seeded_pairs(images, num_pairs, seed, STREAM_TAG, make)
    logger.info("eye %s: %d pairs from %d images", preset.name, num_pairs, len(images))
    return pairs
