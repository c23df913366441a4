"""Painted lesions and clipped channels: the ground truth of the comparison benchmark.

A *longitudinal pair* is an eye-model pair (:mod:`fundusfeat.evaluation.eye`) whose
follow-up (image 2) is rendered from a copy of the source with new lesions painted in.
Image 1 is the source, so every lesion's position is known in baseline (image 1) pixels.
A *control pair* is the same pair with nothing painted.

Lesions (sizes as fractions of the FOV diameter ``D``; 0.004 D is about 6 px on a
1400-px FOV):

- ``haemorrhage``: a dark red blot, radius 0.005-0.012 D (channels darkened, red least);
- ``exudate``: a bright yellow spot, radius 0.003-0.006 D, sharp-edged (red and green
  raised);
- ``cotton_wool``: a pale, fuzzy patch, radius 0.007-0.014 D (all channels raised,
  soft profile).

Each lesion is a soft-edged disc (alpha from a blurred disc) blended into the image.
Positions lie inside the FOV, at least 0.08 D from its rim and from the image border,
where camera 2 sees them at least 0.08 D inside its own rim, and apart from each other.

:func:`clip_channel` makes the variants of real cameras: a channel multiplied by a gain
and clipped (red x 1.6 saturates most of the retina, as many fundus cameras do).

Coordinates: ``(x, y)`` pixels, the centre of the top-left pixel at (0, 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from fundusfeat.evaluation.eye import EyePair, EyePreset, make_eye_pair
from fundusfeat.features.fov import FieldOfView, estimate_fov
from fundusfeat.io.arrays import points_in_mask

LESION_KINDS = ("haemorrhage", "exudate", "cotton_wool")
"""The painted kinds."""

_RADIUS = {"haemorrhage": (0.005, 0.012), "exudate": (0.003, 0.006), "cotton_wool": (0.007, 0.014)}
"""Radius range of each kind, fractions of the FOV diameter."""

_RIM = 0.08
"""Lesions lie at least this fraction of the FOV diameter inside the rim."""

LESION_TAG = 0x1E51
"""Spawn key appended to the pair's seed for the lesion draws (an independent stream)."""

CHANNELS = {"blue": 0, "green": 1, "red": 2}
"""BGR channel index by name."""


@dataclass(frozen=True)
class Lesion:
    """A painted lesion.

    Attributes:
        x, y: centre in baseline (image 1) pixels.
        radius: pixels.
        kind: one of :data:`LESION_KINDS`.
    """

    x: float
    y: float
    radius: float
    kind: str


@dataclass(frozen=True)
class LongitudinalPair:
    """Two visits of one eye, the later one with painted lesions (or none: a control).

    Attributes:
        pair: the eye-model pair (``image1`` baseline, ``image2`` follow-up, uint8 BGR).
        lesions: what was painted into the follow-up, in baseline pixels.
    """

    pair: EyePair
    lesions: list[Lesion]


def paint_lesion(image: np.ndarray, lesion: Lesion, rng: np.random.Generator) -> None:
    """Blend one lesion into ``image`` in place.

    Args:
        image: ``(H, W, 3)`` float32 BGR in [0, 1].
        lesion: where, how large and what kind.
        rng: draws its colour within the kind's range.
    """
    if lesion.kind not in LESION_KINDS:
        raise ValueError(f"lesion.kind must be one of {LESION_KINDS}, got {lesion.kind!r}")
    r = lesion.radius
    soft = {"haemorrhage": 0.35, "exudate": 0.2, "cotton_wool": 0.8}[lesion.kind] * r
    half = int(np.ceil(r + 3 * soft + 2))
    x0, y0 = int(round(lesion.x)) - half, int(round(lesion.y)) - half
    h, w = image.shape[:2]
    if x0 < 0 or y0 < 0 or x0 + 2 * half + 1 > w or y0 + 2 * half + 1 > h:
        raise ValueError("lesion: too close to the image border")
    size = 2 * half + 1
    disc = np.zeros((size, size), np.float32)
    centre = (lesion.x - x0, lesion.y - y0)
    cv2.circle(
        disc,
        (int(round(centre[0] * 16)), int(round(centre[1] * 16))),
        int(r * 16),
        1.0,
        -1,
        cv2.LINE_AA,
        shift=4,
    )
    alpha = cv2.GaussianBlur(disc, (0, 0), max(0.5, soft))[..., None]
    patch = image[y0 : y0 + size, x0 : x0 + size]
    if lesion.kind == "haemorrhage":
        factor = np.array([0.45, 0.4, 0.65], np.float32) * rng.uniform(0.85, 1.1)
        target = patch * factor
    elif lesion.kind == "exudate":
        lift = np.array([0.04, 0.22, 0.2], np.float32) * rng.uniform(0.9, 1.2)
        target = patch + lift
    else:
        lift = np.array([0.12, 0.14, 0.1], np.float32) * rng.uniform(0.9, 1.2)
        target = patch + lift
    image[y0 : y0 + size, x0 : x0 + size] = patch * (1 - alpha) + np.clip(target, 0, 1) * alpha


def painted_followup(
    image: np.ndarray, lesions: list[Lesion], to_followup: np.ndarray, seed: int = 0
) -> np.ndarray:
    """A follow-up with ``lesions`` (baseline px) painted where the homography
    ``to_followup`` (baseline px -> follow-up px) puts them; radii are kept.

    Args:
        image: ``(H, W, 3)`` uint8 BGR follow-up.
        lesions: in baseline pixels.
        to_followup: ``(3, 3)`` homography.
        seed: the colour draws.

    Returns:
        ``(H, W, 3)`` uint8 BGR.
    """
    pts = np.array([[[les.x, les.y] for les in lesions]], np.float64)
    moved = cv2.perspectiveTransform(pts, np.asarray(to_followup, np.float64))[0]
    out = image.astype(np.float32) / 255.0
    rng = np.random.default_rng(seed)
    for les, (x, y) in zip(lesions, moved, strict=True):
        paint_lesion(out, Lesion(float(x), float(y), les.radius, les.kind), rng)
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


def place_lesions(
    fov: FieldOfView,
    seen: np.ndarray,
    rng: np.random.Generator,
    count: int,
) -> list[Lesion]:
    """Draw ``count`` lesions inside the FOV, away from the rim, where ``seen``, apart.

    Args:
        fov: the source's field of view.
        seen: ``(H, W)`` bool, source pixels that the follow-up shows.
        rng: the draws.
        count: how many.
    """
    d = fov.diameter
    k = max(1, int(round(_RIM * d)))
    inner = cv2.erode(fov.mask.astype(np.uint8), np.ones((2 * k + 1, 2 * k + 1), np.uint8))
    region = (inner > 0) & seen
    m = int(np.ceil(_RIM * d))  # a FOV clipped by the frame: keep lesions inside it too
    region[:m] = region[-m:] = False
    region[:, :m] = region[:, -m:] = False
    ys, xs = np.nonzero(region)
    if not len(xs):
        raise ValueError("no room for lesions: the visits hardly overlap")
    lesions: list[Lesion] = []
    for _ in range(50 * count):
        if len(lesions) == count:
            break
        i = int(rng.integers(len(xs)))
        x, y = float(xs[i]), float(ys[i])
        if any(np.hypot(x - o.x, y - o.y) < 0.06 * d for o in lesions):
            continue
        kind = LESION_KINDS[len(lesions) % len(LESION_KINDS)]
        lo, hi = _RADIUS[kind]
        lesions.append(Lesion(x, y, float(rng.uniform(lo, hi) * d), kind))
    return lesions


def make_longitudinal_pair(
    image: np.ndarray,
    preset: EyePreset,
    seed: int | np.random.SeedSequence,
    num_lesions: int = 4,
    control: EyePair | None = None,
) -> LongitudinalPair:
    """An eye-model pair whose follow-up shows ``num_lesions`` new lesions (0: a control).

    The camera geometry and the photometric changes are those of
    :func:`~fundusfeat.evaluation.eye.make_eye_pair` with the same ``seed``, so a control
    and a lesion pair of one seed differ only by the lesions. The lesions are drawn from
    an independent stream of ``seed``. ``control``: that seed's control pair when the
    caller has it already (``make_longitudinal_pair(image, preset, seed, 0).pair``); it
    is not rendered again.
    """
    seq = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    if control is None:
        control = make_eye_pair(image, preset, seq)
    if num_lesions <= 0:
        return LongitudinalPair(control, [])
    rng = np.random.default_rng(
        np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, LESION_TAG))
    )
    fov = estimate_fov(image)
    h, w = fov.mask.shape
    ys, xs = np.mgrid[0:h:4, 0:w:4]
    grid = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    k = max(1, int(round(_RIM * fov.diameter)))
    inner2 = cv2.erode(fov.mask.astype(np.uint8), np.ones((2 * k + 1, 2 * k + 1), np.uint8)) > 0
    visible = points_in_mask(inner2, control.geometry.map_1_to_2(grid))  # away from its rim
    seen = np.zeros(((h + 3) // 4, (w + 3) // 4), np.uint8)
    seen[(grid[visible, 1] // 4).astype(int), (grid[visible, 0] // 4).astype(int)] = 1
    seen = cv2.resize(seen, (w, h), interpolation=cv2.INTER_NEAREST) > 0
    lesions = place_lesions(fov, seen, rng, num_lesions)
    painted = image.astype(np.float32) / 255.0
    for lesion in lesions:
        paint_lesion(painted, lesion, rng)
    source = np.clip(painted * 255.0 + 0.5, 0, 255).astype(np.uint8)
    pair = make_eye_pair(image, preset, seq, followup_source=source)
    return LongitudinalPair(pair, lesions)


def clip_channel(image: np.ndarray, channel: str, gain: float = 1.6) -> np.ndarray:
    """``image`` (uint8 BGR) with one channel multiplied by ``gain`` and clipped at 255."""
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {tuple(CHANNELS)}, got {channel!r}")
    out = image.copy()
    c = CHANNELS[channel]
    out[..., c] = np.clip(image[..., c].astype(np.float32) * gain + 0.5, 0, 255).astype(np.uint8)
    return out


@dataclass(frozen=True)
class Score:
    """How a comparison's regions meet the painted lesions.

    Attributes:
        found: one bool per lesion: some region covers it.
        false_regions: regions that cover no lesion.
        regions: all regions.
    """

    found: list[bool]
    false_regions: int
    regions: int


def score_changes(changes: list, lesions: list[Lesion], margin: float = 3.0) -> Score:
    """Match regions (:class:`~fundusfeat.pipeline.changes.Change`) to painted lesions.

    A region covers a lesion when the lesion's centre lies inside the region's bounding
    box grown by ``margin`` px plus half the lesion's radius (positions in baseline px).
    """

    def covers(change, lesion: Lesion) -> bool:
        x, y, w, h = change.bbox
        grow = margin + 0.5 * lesion.radius
        return (x - grow <= lesion.x <= x + w - 1 + grow) and (
            y - grow <= lesion.y <= y + h - 1 + grow
        )

    found = [any(covers(c, les) for c in changes) for les in lesions]
    false = sum(not any(covers(c, les) for les in lesions) for c in changes)
    return Score(found, int(false), len(changes))
