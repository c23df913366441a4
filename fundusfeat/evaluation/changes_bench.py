"""The comparison benchmark: painted lesions on eye-model longitudinal pairs.

Pairs (:mod:`fundusfeat.evaluation.lesions`): pair ``i`` uses image ``i % len(images)``
and the seed ``SeedSequence([seed, STREAM_TAG, i])``; its follow-up shows 3 to 6 new
lesions (haemorrhages, exudates, cotton-wool spots); its *control* is the same pair with
nothing painted. Each pair is taken in every *variant*:

- ``as-taken``: the rendered photographs;
- ``red-clipped``: both visits with the red channel x 1.6, clipped (as many fundus
  cameras record it);
- ``dark-corner``: the follow-up darkened by up to 60 % towards one corner of its FOV;
- ``halo``: the follow-up brightened by up to 50 % in a patch of the retina (clipping
  red there);

and each (pair, variant) is registered once by :func:`fundusfeat.register`, then
compared by every *method* from the same registration:

- ``fundusfeat``: :func:`fundusfeat.compare` with the given :class:`ChangeParams`;
- ``plain``: the baseline row: the same alignment and thresholds on a plain difference
  (no tolerance for the registration's residual, no vessel weighting, no smoothing, the
  global noise level only).

Scores (:func:`~fundusfeat.evaluation.lesions.score_changes`): lesions found, by kind and
by radius; false regions (covering no lesion) as a share of all regions on lesion pairs;
regions per control pair; failed registrations (no change map); the median time of the
comparison beyond the registration (alignment, difference, regions).

:func:`calibrate` chooses ``high``, ``low`` and ``min_radius`` on a grid: the most lesions
found with false regions at most :data:`MAX_FALSE_SHARE` of the regions on lesion pairs
and at most :data:`MAX_CONTROL_REGIONS` per control pair, in every variant. Run it on
training images only (``training/splits/train.txt``).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fundusfeat.evaluation.eye import EYE_PRESETS
from fundusfeat.evaluation.lesions import (
    LESION_KINDS,
    LongitudinalPair,
    clip_channel,
    make_longitudinal_pair,
    score_changes,
)
from fundusfeat.evaluation.report import markdown
from fundusfeat.evaluation.synthetic import named_preset
from fundusfeat.features.fov import estimate_fov
from fundusfeat.io.images import read_image
from fundusfeat.io.progress import Progress
from fundusfeat.pipeline.alignment import align_visits
from fundusfeat.pipeline.changes import ChangeParams, changes_from_maps, difference_maps
from fundusfeat.pipeline.register import register

STREAM_TAG = 0xC4A6
"""Second entropy word of the benchmark's seed sequence."""


def _light(image: np.ndarray, offset: tuple[float, float], sigma: float, amp: float) -> np.ndarray:
    """``image`` times ``1 + amp * gaussian`` centred at the FOV centre + ``offset`` (both
    in FOV diameters, sigma too), clipped: a halo (amp > 0) or a dark corner (amp < 0)."""
    fov = estimate_fov(image)
    d = fov.diameter
    cx, cy = fov.center[0] + offset[0] * d, fov.center[1] + offset[1] * d
    h, w = image.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w]
    gain = 1.0 + amp * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * (sigma * d) ** 2))
    return np.clip(image * gain[..., None] + 0.5, 0, 255).astype(np.uint8)


VARIANTS: dict[str, Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]] = {
    "as-taken": lambda a, b: (a, b),
    "red-clipped": lambda a, b: (clip_channel(a, "red", 1.6), clip_channel(b, "red", 1.6)),
    "dark-corner": lambda a, b: (a, _light(b, (-0.45, -0.45), 0.3, -0.6)),
    "halo": lambda a, b: (a, _light(b, (0.15, -0.1), 0.15, 0.5)),
}
"""What is done to the visits ``(baseline, follow-up)`` of a pair before the comparison."""

METHODS = ("fundusfeat", "plain")

DEFAULT_PAIRS = 30
"""Lesion pairs of the benchmark (each with its control)."""

PLAIN = {"tolerance": 0, "vessel_weight": 1.0, "smooth": 0.0, "noise_window": 0.0}
"""What the ``plain`` row changes in the parameters."""

SIZE_BINS = (0.005, 0.009)
"""Lesion radius bins (fractions of the FOV diameter): below, between, above."""

MAX_FALSE_SHARE = 0.10
"""Calibration bound: false regions / regions on lesion pairs."""

MAX_CONTROL_REGIONS = 0.2
"""Calibration bound: regions per control pair."""

GRID = {
    "high": (3.5, 4.0, 4.5, 5.0, 6.0),
    "low": (2.0, 2.5, 3.0),
    "min_radius": (0.0015, 0.002),
}
"""The calibration grid (``low <= high`` combinations only)."""


@dataclass(frozen=True)
class Outcome:
    """One method on one pair in one variant.

    Attributes:
        pair: pair name (``lesion007`` / ``control007``).
        variant: a key of :data:`VARIANTS`.
        method: a name of :data:`METHODS` (or ``high=..,low=..`` in calibration).
        registered: False when the registration failed (no change map).
        kinds: the painted lesions' kinds.
        radii: their radii as fractions of the FOV diameter.
        found: one bool per lesion.
        regions: regions reported.
        false_regions: regions covering no lesion.
        seconds: the comparison's time beyond the registration.
    """

    pair: str
    variant: str
    method: str
    registered: bool
    kinds: list[str]
    radii: list[float]
    found: list[bool]
    regions: int
    false_regions: int
    seconds: float

    @property
    def control(self) -> bool:
        """True for a control pair (nothing painted)."""
        return self.pair.startswith("control")


@dataclass(frozen=True)
class ChangesBenchmark:
    """All outcomes and the settings that produced them."""

    outcomes: list[Outcome]
    meta: dict[str, Any] = field(default_factory=dict)


def longitudinal_pairs(
    paths: Sequence[Path], num_pairs: int, seed: int = 0, preset: str = "eye"
) -> list[tuple[str, LongitudinalPair]]:
    """``num_pairs`` lesion pairs and their controls: ``[(name, pair), ...]``.

    Raises:
        ValueError: no image, or ``num_pairs < 1``.
    """
    if not paths:
        raise ValueError("paths: no source photograph")
    if num_pairs < 1:
        raise ValueError(f"num_pairs must be >= 1, got {num_pairs}")
    chosen = named_preset(preset, EYE_PRESETS)
    images: dict[int, np.ndarray] = {}
    out = []
    for i in range(num_pairs):
        k = i % len(paths)
        if k not in images:
            images[k] = read_image(paths[k])
        seq = np.random.SeedSequence([seed, STREAM_TAG, i])
        count = 3 + int(np.random.default_rng(seq.spawn(1)[0]).integers(0, 4))
        control = make_longitudinal_pair(images[k], chosen, seq, 0)
        painted = make_longitudinal_pair(images[k], chosen, seq, count, control=control.pair)
        out.append((f"lesion{i:03d}", painted))
        out.append((f"control{i:03d}", control))
    return out


def _score(
    name: str,
    variant: str,
    method: str,
    lp: LongitudinalPair,
    changes: list,
    diameter: float,
    seconds: float,
) -> Outcome:
    s = score_changes(changes, lp.lesions)
    return Outcome(
        name,
        variant,
        method,
        True,
        [les.kind for les in lp.lesions],
        [les.radius / diameter for les in lp.lesions],
        s.found,
        s.regions,
        s.false_regions,
        seconds,
    )


def compare_pair(
    name: str,
    lp: LongitudinalPair,
    variant: str,
    methods: dict[str, ChangeParams],
    detector: Any,
) -> list[Outcome]:
    """Register one pair in one variant, then compare it with every method."""
    a, b = VARIANTS[variant](lp.pair.image1, lp.pair.image2)
    reg = register(a, b, detector)
    if not reg.success or reg.transform is None:
        n = len(lp.lesions)
        return [
            Outcome(
                name,
                variant,
                m,
                False,
                [les.kind for les in lp.lesions],
                [0.0] * n,
                [False] * n,
                0,
                0,
                0.0,
            )
            for m in methods
        ]
    out = []
    alignments: dict[tuple, tuple[Any, float]] = {}
    maps: dict[tuple, tuple[np.ndarray, np.ndarray, float]] = {}
    for method, params in methods.items():
        key = (params.side, params.rim, params.tolerance)
        if key not in alignments:
            t0 = time.perf_counter()
            al = align_visits(
                a, b, reg.transform, side=params.side, rim=params.rim, band=max(1, params.tolerance)
            )
            alignments[key] = (al, time.perf_counter() - t0)
        al, t_align = alignments[key]
        map_key = (*key, params.vessel_weight, params.smooth, params.noise_window)
        if map_key not in maps:
            t0 = time.perf_counter()
            z, contrast = difference_maps(al, params)
            maps[map_key] = (z, contrast, time.perf_counter() - t0)
        z, contrast, t_maps = maps[map_key]
        t0 = time.perf_counter()
        _, changes = changes_from_maps(z, contrast, al, params)
        seconds = t_align + t_maps + time.perf_counter() - t0  # as one compare() would take
        diameter = al.diameter / al.factors[0]
        out.append(_score(name, variant, method, lp, changes, diameter, seconds))
    return out


def default_methods(params: ChangeParams | None = None) -> dict[str, ChangeParams]:
    """``{"fundusfeat": params, "plain": params with :data:`PLAIN`}``."""
    params = params if params is not None else ChangeParams()
    return {"fundusfeat": params, "plain": replace(params, **PLAIN)}


def run_changes_benchmark(
    paths: Sequence[Path],
    *,
    num_pairs: int = DEFAULT_PAIRS,
    seed: int = 0,
    variants: Sequence[str] = tuple(VARIANTS),
    methods: dict[str, ChangeParams] | None = None,
    detector: Any = None,
    progress: Progress | None = None,
) -> ChangesBenchmark:
    """Run the benchmark (held-out images; :func:`calibrate` is for training images).

    Raises:
        ValueError: an unknown variant, no image, or ``num_pairs < 1``.
    """
    from fundusfeat.features.feature2d import R2D2Fundus

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}: expected some of {tuple(VARIANTS)}")
    methods = methods if methods is not None else default_methods()
    detector = detector if detector is not None else R2D2Fundus.create()
    pairs = longitudinal_pairs(paths, num_pairs, seed)
    total, done, outcomes = len(pairs) * len(variants), 0, []
    for name, lp in pairs:
        for variant in variants:
            outcomes += compare_pair(name, lp, variant, methods, detector)
            done += 1
            if progress is not None:
                progress(done, total, f"{name} {variant}")
    meta = {
        "pairs": num_pairs,
        "seed": seed,
        "variants": list(variants),
        "methods": {m: p.__dict__ for m, p in methods.items()},
    }
    return ChangesBenchmark(outcomes, meta)


# ------------------------------------------------------------------------- summaries
@dataclass(frozen=True)
class Summary:
    """The scores of one (variant, method)."""

    found: int
    lesions: int
    by_kind: dict[str, tuple[int, int]]
    by_size: list[tuple[int, int]]
    regions: int
    false_regions: int
    control_regions: int
    controls: int
    failed: int
    pairs: int
    seconds: float

    @property
    def recall(self) -> float:
        """Share of the lesions found."""
        return self.found / self.lesions if self.lesions else float("nan")

    @property
    def false_share(self) -> float:
        """False regions / regions on lesion pairs (0 without a region)."""
        return self.false_regions / self.regions if self.regions else 0.0

    @property
    def per_control(self) -> float:
        """Regions per control pair."""
        return self.control_regions / self.controls if self.controls else 0.0


def summarize(outcomes: Sequence[Outcome]) -> Summary:
    """:class:`Summary` of outcomes of one (variant, method). A lesion of a pair whose
    registration failed counts as missed."""
    lesions = [o for o in outcomes if not o.control]
    controls = [o for o in outcomes if o.control]
    found = [(k, r, f) for o in lesions for k, r, f in zip(o.kinds, o.radii, o.found, strict=True)]
    by_kind = {
        kind: (sum(f for k, _, f in found if k == kind), sum(k == kind for k, _, _ in found))
        for kind in LESION_KINDS
    }
    edges = (0.0, *SIZE_BINS, np.inf)
    by_size = [
        (sum(f for _, r, f in found if lo <= r < hi), sum(lo <= r < hi for _, r, _ in found))
        for lo, hi in itertools.pairwise(edges)
    ]
    times = [o.seconds for o in outcomes if o.registered]
    return Summary(
        found=sum(f for _, _, f in found),
        lesions=len(found),
        by_kind=by_kind,
        by_size=by_size,
        regions=sum(o.regions for o in lesions),
        false_regions=sum(o.false_regions for o in lesions),
        control_regions=sum(o.regions for o in controls),
        controls=len(controls),
        failed=sum(not o.registered for o in outcomes),
        pairs=len(outcomes),
        seconds=float(np.median(times)) if times else float("nan"),
    )


def _groups(outcomes: Sequence[Outcome]) -> dict[tuple[str, str], list[Outcome]]:
    groups: dict[tuple[str, str], list[Outcome]] = {}
    for o in outcomes:
        groups.setdefault((o.variant, o.method), []).append(o)
    return groups


def _frac(a: int, b: int) -> str:
    return f"{a}/{b} ({100 * a / b:.0f} %)" if b else "-"


def markdown_report(bench: ChangesBenchmark) -> str:
    """One row per (variant, method)."""
    head = [
        "variant",
        "method",
        "lesions found",
        *[f"{k.replace('_', '-')}s" for k in LESION_KINDS],
        f"r < {SIZE_BINS[0]} D",
        f"{SIZE_BINS[0]}-{SIZE_BINS[1]} D",
        f"r >= {SIZE_BINS[1]} D",
        "false regions (lesion pairs)",
        "regions / control pair",
        "failed registrations",
        "s beyond registration",
    ]
    rows = []
    for (variant, method), outs in _groups(bench.outcomes).items():
        s = summarize(outs)
        rows.append(
            [
                variant,
                method,
                _frac(s.found, s.lesions),
                *[_frac(*s.by_kind[k]) for k in LESION_KINDS],
                *[_frac(*b) for b in s.by_size],
                _frac(s.false_regions, s.regions),
                f"{s.per_control:.2f}",
                f"{s.failed}/{s.pairs}",
                f"{s.seconds:.2f}",
            ]
        )
    return markdown(head, rows)


def to_json(bench: ChangesBenchmark) -> dict[str, Any]:
    """JSON-serialisable outcomes and summaries."""
    summaries = []
    for (variant, method), outs in _groups(bench.outcomes).items():
        s = summarize(outs)
        summaries.append(
            {
                "variant": variant,
                "method": method,
                "recall": s.recall,
                "false_share": s.false_share,
                "regions_per_control": s.per_control,
                **{k: v for k, v in s.__dict__.items() if k != "by_kind"},
                "by_kind": {k: list(v) for k, v in s.by_kind.items()},
            }
        )
    return {
        "meta": bench.meta,
        "summaries": summaries,
        "outcomes": [o.__dict__ for o in bench.outcomes],
    }


# ------------------------------------------------------------------------ calibration
def grid_params(base: ChangeParams | None = None) -> dict[str, ChangeParams]:
    """Every :data:`GRID` combination (``low <= high``) as named parameters."""
    base = base if base is not None else ChangeParams()
    out = {}
    for high, low, radius in itertools.product(GRID["high"], GRID["low"], GRID["min_radius"]):
        if low <= high:
            out[f"high={high},low={low},min_radius={radius}"] = replace(
                base, high=high, low=low, min_radius=radius
            )
    return out


def calibrate(
    bench: ChangesBenchmark, grid: dict[str, ChangeParams]
) -> tuple[str | None, list[list[str]]]:
    """The grid point that finds the most lesions within the false-alarm bounds in every
    variant (the worst variant's recall decides; ties: fewer false regions, then the
    strictest thresholds).

    Args:
        bench: a run whose methods are ``grid`` (names as keys).
        grid: :func:`grid_params`.

    Returns:
        ``(best name or None when no point meets the bounds, table rows: name, worst
        recall, worst false share, worst regions per control, meets the bounds)``.
    """
    groups = _groups(bench.outcomes)
    variants = sorted({v for v, _ in groups})
    rows, best, best_key = [], None, None
    for name, p in grid.items():
        sums = [summarize(groups[(v, name)]) for v in variants if (v, name) in groups]
        if not sums:
            continue
        recall = min(s.recall for s in sums)
        false = max(s.false_share for s in sums)
        control = max(s.per_control for s in sums)
        ok = false <= MAX_FALSE_SHARE and control <= MAX_CONTROL_REGIONS
        rows.append(
            [name, f"{recall:.3f}", f"{false:.3f}", f"{control:.2f}", "yes" if ok else "no"]
        )
        key = (recall, -false, -control, p.high, p.low, p.min_radius)  # ties: the strictest
        if ok and (best_key is None or key > best_key):
            best, best_key = name, key
    return best, rows
