"""Synthetic registration pairs with known homographies, made from single fundus images.

Use only images the weights were NOT trained on (for the shipped weights: the IDRiD
validation split ``training/splits/val.txt`` and ``retina.jpg``); a training image gives
optimistic numbers.

From one photograph ``I`` with field of view (FOV) mask ``M`` (the camera's circle), a
pair is made as a real follow-up or montage pair would look:

- image 1 (fixed) = a photometric change of ``I``, black outside ``M``;
- image 2 (moving) = ``I`` warped by a random homography ``H`` (image 1 -> image 2), an
  independent photometric change (gamma, gain, contrast, colour cast, uneven
  illumination, blur, noise), then the camera's FOV ``M`` re-applied in image 2's frame
  (black outside). Before warping, ``I`` is extended beyond its FOV and frame with a
  smooth fill, so image 2 shows no edge where image 1's FOV or frame ends: that part of
  image 2 has no texture (a real pair shows unseen retina there), and no boundary
  consistent with ``H``.

The overlap of a pair is the fraction of image 1's FOV that lands inside image 2's FOV;
it is at least the preset's ``min_overlap`` (homographies are redrawn until it is). Pairs
are labelled like FIRE: ``"S"`` when the overlap is at least 75 %, ``"P"`` below.

Control points: ``num_points`` points drawn uniformly (with a minimum spacing) inside
both FOVs, in image 1, mapped exactly by ``H`` into image 2.

Reproducibility: pair ``i`` uses image ``i % len(images)`` and the ``i``-th child of
``numpy.random.SeedSequence([seed, STREAM_TAG])``; ``STREAM_TAG`` keeps this stream apart
from the trainer's (which seeds its generator with its own seed only). The homography and
control points are drawn first from a pair's generator, then the photometric changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fundusfeat.evaluation.pairs import EvalPair
from fundusfeat.features.fov import FieldOfView, estimate_fov
from fundusfeat.geometry.homography import transform_points, translation, warp_image
from fundusfeat.io.arrays import to_uint8
from fundusfeat.io.images import read_image
from fundusfeat.training.warps import PhotoRange, WarpRange, photometric_change, sample_homography

logger = logging.getLogger(__name__)

STREAM_TAG = 0xE7A1
"""Second entropy word of the evaluation seed sequence (independent of training)."""

HIGH_OVERLAP = 0.75
"""Overlap at and above which a pair is category ``"S"`` (else ``"P"``), as in FIRE."""

_MAX_DRAWS = 200


@dataclass(frozen=True)
class SyntheticPreset:
    """How hard the synthetic pairs are.

    Attributes:
        name: preset name.
        warp: ranges of the homography image 1 -> image 2.
        photo: ranges of the photometric change (drawn independently for each image).
        min_overlap: smallest accepted fraction of image 1's FOV visible in image 2.
        num_points: control points per pair.
        point_margin: margin (fraction of the FOV diameter) kept between the control
            points and the FOV borders, and their minimum spacing.
    """

    name: str
    warp: WarpRange
    photo: PhotoRange
    min_overlap: float
    num_points: int = 10
    point_margin: float = 0.03


EASY_PHOTO = PhotoRange(blur_sigma=0.8, noise_sigma=0.01)
"""Photometric change of the mild presets (``easy``, ``eye``): the library's defaults,
light blur and noise."""

HARD_PHOTO = PhotoRange(
    gamma=(0.7, 1.55),
    gain=(0.48, 1.1),
    contrast=(0.58, 1.0),
    color=0.21,
    hue_deg=8.0,
    saturation=(0.6, 1.2),
    illumination=0.42,
    blur_sigma=2.1,
    noise_sigma=0.032,
)
"""Photometric change of the hard presets (``hard``, ``eye-hard``), calibrated so that
SIFT on the CLAHE green channel scores about 0.6-0.7 AUC on ``hard``."""


PRESETS: dict[str, SyntheticPreset] = {
    "easy": SyntheticPreset(
        name="easy",
        warp=WarpRange(
            rotation_deg=10.0,
            scale=(0.9, 1.1),
            aspect=0.05,
            shear=0.05,
            perspective=0.05,
            translation=0.1,
        ),
        photo=EASY_PHOTO,
        min_overlap=0.7,
    ),
    "hard": SyntheticPreset(
        name="hard",
        warp=WarpRange(
            rotation_deg=20.0,
            scale=(0.8, 1.25),
            aspect=0.1,
            shear=0.1,
            perspective=0.1,
            translation=0.35,
        ),
        photo=HARD_PHOTO,
        min_overlap=0.4,
    ),
}
"""The named presets of ``fundusfeat evaluate --synthetic --preset``.

``hard`` is calibrated so that SIFT on the CLAHE-enhanced green channel (``sift-clahe``)
scores a pooled Registration Score of about 0.65-0.7 on the nine held-out images
(``training/splits/val.txt`` + ``retina.jpg``) at their own size, close to what SIFT
gets on real follow-up pairs (FIRE, ~0.69): see ``docs/benchmarks.md``. ``easy`` is a
mild sanity check (small warps, overlap >= 70 %, mild photometric change).
"""


@dataclass(frozen=True)
class SyntheticPair:
    """One generated pair.

    Attributes:
        image1, image2: (H, W, 3) uint8 BGR, the size of the source image.
        H: (3, 3) float64 true homography mapping image-1 pixels onto image 2.
        points_fixed: (N, 2) float64 control points in image 1.
        points_moving: (N, 2) float64 ``transform_points(H, points_fixed)``.
        overlap: fraction of image 1's FOV inside image 2's FOV.
    """

    image1: np.ndarray
    image2: np.ndarray
    H: np.ndarray
    points_fixed: np.ndarray
    points_moving: np.ndarray
    overlap: float


@dataclass(frozen=True)
class _Geometry:
    H: np.ndarray
    overlap: float
    points_fixed: np.ndarray


def _sample_geometry(
    fov: np.ndarray, rng: np.random.Generator, preset: SyntheticPreset
) -> _Geometry:
    """Draw H until the overlap is large enough, then the control points."""
    h, w = fov.shape
    fov_u8 = fov.astype(np.uint8)
    area = max(int(fov.sum()), 1)
    for _ in range(_MAX_DRAWS):
        H = sample_homography(rng, w, h, preset.warp)
        inside2 = warp_image(fov_u8, H, (w, h), cv2.INTER_NEAREST).astype(bool) & fov
        overlap = float(inside2.sum()) / area
        if overlap >= preset.min_overlap:
            break
    else:
        raise ValueError(
            f"no homography with overlap >= {preset.min_overlap} in {_MAX_DRAWS} draws; "
            "is the image's field of view detected?"
        )
    inside1 = warp_image(fov_u8, np.linalg.inv(H), (w, h), cv2.INTER_NEAREST).astype(bool) & fov
    diameter = 2.0 * np.sqrt(area / np.pi)
    points = spread_points(inside1, rng, preset.num_points, preset.point_margin * diameter)
    return _Geometry(H=H, overlap=overlap, points_fixed=points)


def spread_points(
    region: np.ndarray, rng: np.random.Generator, count: int, margin: float
) -> np.ndarray:
    """Up to ``count`` random (x, y) points in ``region`` eroded by ``margin``, spaced."""
    k = max(1, int(round(margin)))
    eroded = cv2.erode(region.astype(np.uint8), np.ones((2 * k + 1, 2 * k + 1), np.uint8))
    ys, xs = np.nonzero(eroded if eroded.any() else region)
    order = rng.permutation(len(xs))[: 50 * count]
    candidates = np.stack([xs[order], ys[order]], 1).astype(np.float64)
    candidates += rng.uniform(-0.5, 0.5, size=candidates.shape)
    chosen: list[np.ndarray] = []
    for p in candidates:
        if all(np.hypot(*(p - q)) >= margin for q in chosen):
            chosen.append(p)
            if len(chosen) == count:
                break
    return np.asarray(chosen, dtype=np.float64).reshape(-1, 2)


def _smooth_fill(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Replace ``image`` where ``known`` is False by a smooth extension of the rest.

    Push-pull at 1/8 resolution: the known values and their weights are averaged down a
    pyramid to a single pixel; on the way back up each level keeps its own average where
    its weight is full and blends in the upsampled coarser level where it is not. The
    fill is smooth (no rings), follows the known values near them and tends to their
    global mean far away. It is used only where ``known`` is False.

    Args:
        image: (H, W, 3) float32.
        known: (H, W) bool.

    Returns:
        (H, W, 3) float32.
    """
    h, w = known.shape
    small_size = (max(1, w // 8), max(1, h // 8))
    weight = cv2.resize(known.astype(np.float32), small_size, interpolation=cv2.INTER_AREA)
    values = cv2.resize(image * known[..., None], small_size, interpolation=cv2.INTER_AREA)
    levels = [(values, weight)]
    while max(levels[-1][1].shape) > 1:
        v, wt = levels[-1]
        size = (max(1, (wt.shape[1] + 1) // 2), max(1, (wt.shape[0] + 1) // 2))
        levels.append(
            (
                cv2.resize(v, size, interpolation=cv2.INTER_AREA),
                cv2.resize(wt, size, interpolation=cv2.INTER_AREA),
            )
        )
    v, wt = levels[-1]
    fill = (v / max(float(wt.max()), 1e-6)).reshape(1, 1, 3)
    for v, wt in reversed(levels[:-1]):
        coarse = cv2.resize(fill, wt.shape[::-1], interpolation=cv2.INTER_LINEAR)
        coarse = coarse.reshape(*wt.shape, 3)
        alpha = np.clip(wt, 0.0, 1.0)[..., None]
        mean = v / np.maximum(wt, 1e-6)[..., None]
        fill = alpha * mean + (1.0 - alpha) * coarse
    fill = cv2.resize(fill.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    return np.where(known[..., None], image, fill)


def smooth_extension(
    image: np.ndarray, fov: np.ndarray, pad_fraction: float = 0.5
) -> tuple[np.ndarray, int]:
    """``image`` as if the retina went on smoothly beyond its FOV and frame.

    The image is padded by ``pad_fraction`` of its long side and everything outside its
    (slightly eroded) FOV is replaced by a smooth fill, so a warp of the canvas shows no
    edge where the FOV or the frame ends.

    Args:
        image: (H, W, 3) uint8 BGR.
        fov: (H, W) bool field of view.
        pad_fraction: padding on each side, as a fraction of the long side.

    Returns:
        ``(canvas, pad)``: (H + 2 pad, W + 2 pad, 3) float32 in [0, 1]; image pixel
        ``(x, y)`` is canvas pixel ``(x + pad, y + pad)``.
    """
    h, w = fov.shape
    pad = int(max(h, w) * pad_fraction)
    k = max(1, round(0.005 * max(h, w)))
    known = cv2.erode(fov.astype(np.uint8), np.ones((2 * k + 1, 2 * k + 1), np.uint8))
    known = np.pad(known.astype(bool), pad)
    canvas = np.pad(image.astype(np.float32) / 255.0, ((pad, pad), (pad, pad), (0, 0)))
    return _smooth_fill(canvas, known), pad


def _warp_extended(image: np.ndarray, fov: np.ndarray, H: np.ndarray) -> np.ndarray:
    """Warp ``image`` by ``H`` over its :func:`smooth_extension` (border replicated).

    Returns:
        (H, W, 3) float32 in [0, 1], the size of ``image``.
    """
    h, w = fov.shape
    canvas, pad = smooth_extension(image, fov)
    return cv2.warpPerspective(
        canvas,
        H @ translation(-pad, -pad),
        (w, h),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def _to_uint8(image: np.ndarray, fov: np.ndarray) -> np.ndarray:
    out = to_uint8(image).copy()
    out[~fov] = 0
    return out


def make_synthetic_pair(
    image: np.ndarray, preset: SyntheticPreset, seed: np.random.SeedSequence | int
) -> SyntheticPair:
    """Make one pair from a colour fundus photograph (deterministic given ``seed``).

    Args:
        image: (H, W, 3) uint8 BGR photograph.
        preset: the difficulty preset.
        seed: seed of the pair's ``numpy.random.Generator``.

    Returns:
        The :class:`SyntheticPair`, both images the size of ``image``.

    Raises:
        ValueError: if no homography reaches the preset's overlap.
    """
    rng = np.random.default_rng(seed)
    fov = estimate_fov(image).mask
    geometry = _sample_geometry(fov, rng, preset)
    h, w = fov.shape
    image1 = photometric_change(image, rng, preset.photo)
    warped = _warp_extended(image, fov, geometry.H)
    image2 = photometric_change(warped, rng, preset.photo)
    return SyntheticPair(
        image1=_to_uint8(image1, fov),
        image2=_to_uint8(image2, fov),
        H=geometry.H,
        points_fixed=geometry.points_fixed,
        points_moving=transform_points(geometry.H, geometry.points_fixed),
        overlap=geometry.overlap,
    )


def _load_pair(
    path: Path, preset: SyntheticPreset, seed: np.random.SeedSequence
) -> tuple[np.ndarray, np.ndarray]:
    pair = make_synthetic_pair(read_image(path), preset, seed)
    return pair.image1, pair.image2


def named_preset(preset: Any, presets: dict[str, Any]) -> Any:
    """``preset`` itself, or the preset of that name in ``presets``.

    Raises:
        ValueError: an unknown name.
    """
    if isinstance(preset, str):
        if preset not in presets:
            raise ValueError(f"preset: expected one of {sorted(presets)}, got {preset!r}")
        return presets[preset]
    return preset


def seeded_pairs(
    images: Sequence[Path],
    num_pairs: int,
    seed: int,
    tag: int,
    make: Callable[[int, Path, FieldOfView, np.random.SeedSequence], EvalPair],
) -> list[EvalPair]:
    """``make(i, image path, its FOV, seed)`` for pair ``i`` of a benchmark.

    Pair ``i`` uses ``images[i % len(images)]`` and the ``i``-th child of
    ``SeedSequence([seed, tag])``; each image is read once, for its field of view.

    Raises:
        ValueError: no images or ``num_pairs < 1``.
    """
    if not images:
        raise ValueError("images: expected at least one image")
    if num_pairs < 1:
        raise ValueError(f"num_pairs must be >= 1, got {num_pairs}")
    children = np.random.SeedSequence([int(seed), tag]).spawn(num_pairs)
    fovs: dict[Path, FieldOfView] = {}
    pairs = []
    for i, child in enumerate(children):
        path = Path(images[i % len(images)])
        if path not in fovs:
            fovs[path] = estimate_fov(read_image(path))
        pairs.append(make(i, path, fovs[path], child))
    return pairs


def synthetic_pairs(
    images: list[Path], preset: SyntheticPreset | str, num_pairs: int, seed: int = 0
) -> list[EvalPair]:
    """The benchmark's pairs; images are generated on demand by ``EvalPair.load``.

    Args:
        images: source photographs (never training images); pair ``i`` uses
            ``images[i % len(images)]``.
        preset: a :class:`SyntheticPreset` or a name in :data:`PRESETS`.
        num_pairs: number of pairs (>= 1).
        seed: the benchmark seed.

    Returns:
        ``num_pairs`` pairs named ``syn000``, ``syn001``, ..., with category ``"S"``
        or ``"P"`` by overlap, control points and ``H_true``.

    Raises:
        ValueError: for an unknown preset, no images or ``num_pairs < 1``.
    """
    preset = named_preset(preset, PRESETS)

    def make(i: int, path: Path, fov: FieldOfView, child: np.random.SeedSequence) -> EvalPair:
        geometry = _sample_geometry(fov.mask, np.random.default_rng(child), preset)
        return EvalPair(
            name=f"syn{i:03d}",
            category="S" if geometry.overlap >= HIGH_OVERLAP else "P",
            points_fixed=geometry.points_fixed,
            points_moving=transform_points(geometry.H, geometry.points_fixed),
            load=partial(_load_pair, path, preset, child),
            H_true=geometry.H,
        )

    pairs = seeded_pairs(images, num_pairs, seed, STREAM_TAG, make)
    logger.info("synthetic %s: %d pairs from %d images", preset.name, num_pairs, len(images))
    return pairs
