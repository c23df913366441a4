"""The montage benchmark: synthetic multi-field sets, every overlapping pair scored.

Each source photograph (resized to a long side of ``size`` px, 1024 by default) gives one
set per layout (:func:`fundusfeat.evaluation.fields.make_field_set`). Rows:

- ``montage``: :func:`fundusfeat.pipeline.montage.montage` (features once, all pairs
  verified, spanning tree, joint fit, blend);
- ``tree``: the same run's spanning-tree start (pairwise homographies composed along the
  tree), without the joint fit; its time is the montage's minus the fit;
- ``star``: each field registered to the reference (the layout's centre field, 0) by
  :func:`fundusfeat.register` (both images detected per call, as a user would);
- ``stitcher``: OpenCV's ``cv2.Stitcher`` in SCANS mode with its defaults
  (``estimateTransform`` + ``composePanorama``); the field -> panorama mapping is read
  from its cameras through ``cv2.PyRotationWarper("affine")`` at its work scale.

Metric, for every pair of fields whose FOVs overlap (registered directly or not): the mean
distance of its true correspondences mapped field i -> montage -> field j, in field-j
pixels (``inf`` when a field is unplaced or a point maps nowhere). Per method: the AUC of
the success curve over 0..25 px (:func:`fundusfeat.evaluation.metrics.registration_score`),
the median and worst pair error, fields placed, seconds per set and the peak resident
memory of the call (``VmHWM`` after resetting it through ``/proc/self/clear_refs``;
None where that is not possible).

Seams (montage row): :func:`fundusfeat.evaluation.seams.seam_step` of the blended
montage (the low-pass luminance step across the seams over the same statistic across
lines inside the fields; 1 = no more visible than the fields' own shading), with the
exposure compensation (``seam``) and, from the same transforms, without it (``seam
without gains``); medians over the sets. The fields of a set carry independent
photometric changes (exposure, gamma, colour, illumination gradients).

Impostor test: a field of another eye (the next source photograph, seen straight on) is
added to each source's cross set; it must be left unplaced while the others are placed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fundusfeat.evaluation.bench import rss_mib
from fundusfeat.evaluation.fields import LAYOUTS, FieldSet, impostor_field, make_field_set
from fundusfeat.evaluation.metrics import MAX_THRESHOLD, registration_score
from fundusfeat.evaluation.report import markdown
from fundusfeat.evaluation.seams import seam_step
from fundusfeat.geometry.transforms import ProjectiveTransform, Transform
from fundusfeat.io.arrays import resize_long_side
from fundusfeat.io.images import read_image
from fundusfeat.io.progress import Progress
from fundusfeat.pipeline.canvas import blend
from fundusfeat.pipeline.montage import montage
from fundusfeat.pipeline.register import register

METHODS = ("montage", "tree", "star", "stitcher")
DEFAULT_SIZE = 1024
"""Long side (px) the source photographs are resized to: fields of about 1024 px."""


@dataclass(frozen=True)
class SetResult:
    """One method on one field set.

    Attributes:
        set_name: ``<image stem>/<layout>``.
        method: a name of :data:`METHODS`.
        fields: number of fields.
        placed: fields the method placed.
        errors: ``{(i, j): mean transfer error px}`` of every overlapping pair.
        seconds: wall time of the method on the set.
        peak_mib: peak resident memory during the call (MiB), or None.
        note: what went wrong, if anything.
        seam: the montage's seam step ratio (montage row only), or None.
        seam_raw: the same blended without exposure compensation, or None.
    """

    set_name: str
    method: str
    fields: int
    placed: int
    errors: dict[tuple[int, int], float]
    seconds: float
    peak_mib: float | None
    note: str = ""
    seam: float | None = None
    seam_raw: float | None = None


@dataclass(frozen=True)
class ImpostorResult:
    """The impostor test on one set: ``unplaced`` is True when the other eye's field was
    left out, ``others_placed`` the fields of the eye that were placed (of ``fields``)."""

    set_name: str
    unplaced: bool
    reason: str
    others_placed: int
    fields: int


@dataclass(frozen=True)
class MontageBenchmark:
    """All results of :func:`run_montage_benchmark`."""

    results: list[SetResult]
    impostors: list[ImpostorResult]
    meta: dict[str, Any] = field(default_factory=dict)


# -------------------------------------------------------------------------- measuring
def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measured(fn: Callable[[], Any]) -> tuple[Any, float, float | None]:
    """``(fn(), seconds, peak resident MiB during the call or None)``."""
    reset = _reset_peak()
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    return out, seconds, rss_mib(peak=True) if reset else None


def transfer_errors(
    transforms: Sequence[Transform | None], field_set: FieldSet
) -> dict[tuple[int, int], float]:
    """Mean error (field-j px) of each overlapping pair's true correspondences mapped
    i -> montage -> j (``inf`` when a field is unplaced or a point maps nowhere)."""
    out = {}
    for (i, j), (pi, pj) in field_set.pairs.items():
        t_i, t_j = transforms[i], transforms[j]
        if t_i is None or t_j is None:
            out[(i, j)] = math.inf
            continue
        err = np.linalg.norm(t_j.inverse(t_i.apply(pi)) - pj, axis=1)
        out[(i, j)] = float(err.mean()) if np.isfinite(err).all() else math.inf
    return out


# ---------------------------------------------------------------------------- methods
class StitcherField(Transform):
    """Field px -> the Stitcher's panorama plane (its work scale), via its affine warper."""

    model = "affine"

    def __init__(self, camera: Any, work_scale: float) -> None:
        self.K = camera.K().astype(np.float32)
        self.R = camera.R.astype(np.float32)
        self.scale = float(work_scale)
        self.warper = cv2.PyRotationWarper("affine", 1.0)

    def apply(self, points1: Any) -> np.ndarray:
        s = self.scale
        return np.array(
            [self.warper.warpPoint((x * s, y * s), self.K, self.R) for x, y in points1]
        ).reshape(-1, 2)

    def inverse(self, points2: Any) -> np.ndarray:
        back = [self.warper.warpPointBackward((x, y), self.K, self.R) for x, y in points2]
        return np.array(back).reshape(-1, 2) / self.scale


def stitcher_transforms(images: Sequence[np.ndarray]) -> tuple[list[Transform | None], str]:
    """cv2.Stitcher (SCANS, defaults): per-field transforms to its plane (None where it
    left a field out) and a note (its status when it failed)."""
    stitcher = cv2.Stitcher_create(cv2.Stitcher_SCANS)
    status = stitcher.estimateTransform(list(images))
    if status != cv2.Stitcher_OK:
        return [None] * len(images), f"estimateTransform status {status}"
    status, _ = stitcher.composePanorama()
    if status != cv2.Stitcher_OK:
        return [None] * len(images), f"composePanorama status {status}"
    cameras, scale = stitcher.cameras(), stitcher.workScale()
    out: list[Transform | None] = [None] * len(images)
    for camera, k in zip(cameras, stitcher.component(), strict=True):
        out[int(k)] = StitcherField(camera, scale)
    return out, ""


def star_transforms(
    images: Sequence[np.ndarray], detector: Any, reference: int = 0
) -> list[Transform | None]:
    """Each field registered to ``reference`` by :func:`fundusfeat.register`."""
    out: list[Transform | None] = []
    for k, img in enumerate(images):
        if k == reference:
            out.append(ProjectiveTransform(np.eye(3)))
            continue
        res = register(img, images[reference], detector)
        out.append(res.transform if res.success else None)
    return out


def _row(name: str, method: str, fs: FieldSet, transforms, seconds, peak, note="") -> SetResult:
    placed = sum(t is not None for t in transforms)
    errors = transfer_errors(transforms, fs)
    return SetResult(name, method, len(fs.images), placed, errors, seconds, peak, note)


def benchmark_set(
    name: str,
    fs: FieldSet,
    detector: Any,
    methods: Sequence[str] = METHODS,
    model: str = "auto",
) -> list[SetResult]:
    """Every method of ``methods`` on one field set (``model``: the montage's)."""
    rows = []
    if "montage" in methods or "tree" in methods:
        m, seconds, peak = measured(
            lambda: montage(fs.images, detector=detector, transform_model=model)
        )
        if "montage" in methods:
            row = _row(name, "montage", fs, m.transforms, seconds, peak)
            rows.append(replace(row, **seam_ratios(m, fs)))
        if "tree" in methods:
            tree_s = seconds - m.timings.get("fit", 0.0)
            rows.append(_row(name, "tree", fs, m.tree_transforms, tree_s, peak))
    if "star" in methods:
        star, seconds, peak = measured(lambda: star_transforms(fs.images, detector))
        rows.append(_row(name, "star", fs, star, seconds, peak))
    if "stitcher" in methods:
        (st, note), seconds, peak = measured(lambda: stitcher_transforms(fs.images))
        rows.append(_row(name, "stitcher", fs, st, seconds, peak, note))
    return rows


def seam_ratios(m: Any, fs: FieldSet) -> dict[str, float | None]:
    """``{"seam": ratio, "seam_raw": ratio without exposure compensation}`` of a
    montage of ``fs`` (None where it has no seam, e.g. one field placed)."""
    placed = [k for k, t in enumerate(m.transforms) if t is not None]
    if len(placed) < 2 or m.image.size == 0:
        return {"seam": None, "seam_raw": None}
    raw, _, labels = blend(
        [fs.images[k] for k in placed],
        [fs.fov.mask] * len(placed),
        [m.transforms[k] for k in placed],
        m.size,
        reference=placed.index(m.reference),
        compensate=False,
        labels=True,
    )
    try:
        return {
            "seam": seam_step(m.image, m.labels).ratio,
            "seam_raw": seam_step(raw, labels).ratio,
        }
    except ValueError:
        return {"seam": None, "seam_raw": None}


def impostor_test(
    name: str, fs: FieldSet, other: np.ndarray, detector: Any, model: str = "auto"
) -> ImpostorResult:
    """Add a field of another eye to the set: is it left unplaced?"""
    images = [*fs.images, other]
    m = montage(images, detector=detector, transform_model=model, blend_fields=False)
    return ImpostorResult(name, not m.placed[-1], m.reasons[-1], sum(m.placed[:-1]), len(fs.images))


def source_image(path: Path, size: int) -> np.ndarray:
    """A source photograph read and resized to a long side of ``size`` px."""
    img = read_image(path)
    return resize_long_side(img, size)[0] if max(img.shape[:2]) != size else img


def run_montage_benchmark(
    paths: Sequence[Path],
    *,
    layouts: Sequence[str] = tuple(LAYOUTS),
    seed: int = 0,
    size: int = DEFAULT_SIZE,
    methods: Sequence[str] = METHODS,
    impostors: bool = True,
    detector: Any = None,
    model: str = "auto",
    progress: Progress | None = None,
) -> MontageBenchmark:
    """Run the benchmark over source photographs (never training images).

    Args:
        paths: source photographs; set ``(image k, layout)`` uses seed ``seed + k``.
        layouts: layout names of :data:`fundusfeat.evaluation.fields.LAYOUTS`.
        seed: base seed.
        size: long side the sources are resized to.
        methods: rows (:data:`METHODS`).
        impostors: also run the impostor test (needs two or more sources, or uses the
            mirrored source as the other eye for one).
        detector: the detector of every learned row (default ``R2D2Fundus.create()``).
        model: the montage's per-field model.
        progress: ``callback(done, total, label)``.

    Raises:
        ValueError: an unknown layout or method, or no source.
    """
    from fundusfeat.features.feature2d import R2D2Fundus

    unknown = [m for m in methods if m not in METHODS] + [x for x in layouts if x not in LAYOUTS]
    if unknown:
        raise ValueError(f"unknown methods or layouts: {unknown}")
    if not paths:
        raise ValueError("paths: no source photograph")
    detector = detector if detector is not None else R2D2Fundus.create()
    total = len(paths) * (len(layouts) + int(impostors))
    done, results, tests = 0, [], []
    for k, path in enumerate(paths):
        source = source_image(Path(path), size)
        for layout in layouts:
            name = f"{Path(path).stem}/{layout}"
            fs = make_field_set(source, layout, seed + k)
            results += benchmark_set(name, fs, detector, methods, model)
            done += 1
            if progress is not None:
                progress(done, total, name)
        if impostors:
            other = (
                source_image(Path(paths[(k + 1) % len(paths)]), size)
                if len(paths) > 1
                else cv2.flip(source, 1)
            )
            fs = make_field_set(source, "cross5", seed + k)
            name = f"{Path(path).stem}/cross5+impostor"
            tests.append(impostor_test(name, fs, impostor_field(other, seed + k), detector, model))
            done += 1
            if progress is not None:
                progress(done, total, name)
    meta = {
        "layouts": list(layouts),
        "seed": seed,
        "size": size,
        "methods": list(methods),
        "model": model,
    }
    return MontageBenchmark(results, tests, meta)


# ---------------------------------------------------------------------------- reports
def _fmt(value: float, digits: int = 2) -> str:
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def summary_rows(bench: MontageBenchmark) -> tuple[list[str], list[list[str]]]:
    """One row per method: sets, fields placed, pairs, AUC (0..25 px), median and worst
    pair error, median seconds per set, the ratio to the star's total time, peak MiB and
    the montage's median seam step ratios with and without exposure compensation."""
    head = [
        "method",
        "sets",
        "fields placed",
        "pairs",
        f"AUC 0..{MAX_THRESHOLD:g}px",
        "median px",
        "worst px",
        "s/set",
        "time / star",
        "peak MiB",
        "seam step",
        "seam step, no gains",
    ]
    by_method: dict[str, list[SetResult]] = {}
    for r in bench.results:
        by_method.setdefault(r.method, []).append(r)
    star_time = sum(r.seconds for r in by_method.get("star", []))
    rows = []
    for method in METHODS:
        rs = by_method.get(method)
        if not rs:
            continue
        errors = [e for r in rs for e in r.errors.values()]
        peaks = [r.peak_mib for r in rs if r.peak_mib is not None]
        seconds = sum(r.seconds for r in rs)
        rows.append(
            [
                method,
                str(len(rs)),
                f"{sum(r.placed for r in rs)}/{sum(r.fields for r in rs)}",
                str(len(errors)),
                f"{registration_score(errors):.3f}",
                _fmt(float(np.median(errors))),
                _fmt(max(errors)),
                f"{float(np.median([r.seconds for r in rs])):.1f}",
                f"{seconds / star_time:.2f}" if star_time > 0 else "-",
                f"{max(peaks):.0f}" if peaks else "-",
                _median([r.seam for r in rs]),
                _median([r.seam_raw for r in rs]),
            ]
        )
    return head, rows


def _median(values: list[float | None]) -> str:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return f"{float(np.median(kept)):.2f}" if kept else "-"


def markdown_report(bench: MontageBenchmark) -> str:
    """The summary table, the per-layout AUCs and the impostor test as markdown."""
    text = markdown(*summary_rows(bench))
    layouts = sorted({r.set_name.split("/")[-1] for r in bench.results})
    head = ["method", *[f"AUC {x}" for x in layouts], *[f"worst px {x}" for x in layouts]]
    rows = []
    for method in METHODS:
        rs = [r for r in bench.results if r.method == method]
        if not rs:
            continue
        cells_auc, cells_worst = [], []
        for x in layouts:
            errors = [e for r in rs if r.set_name.endswith("/" + x) for e in r.errors.values()]
            cells_auc.append(f"{registration_score(errors):.3f}" if errors else "-")
            cells_worst.append(_fmt(max(errors)) if errors else "-")
        rows.append([method, *cells_auc, *cells_worst])
    text += "\n\nBy layout:\n\n" + markdown(head, rows)
    notes = sorted({r.note for r in bench.results if r.note})
    if notes:
        text += "\n\nFailures: " + "; ".join(notes)
    if bench.impostors:
        left = sum(t.unplaced for t in bench.impostors)
        others = sum(t.others_placed for t in bench.impostors)
        fields = sum(t.fields for t in bench.impostors)
        text += (
            f"\n\nImpostor test: the other eye's field left unplaced in {left}/"
            f"{len(bench.impostors)} sets; the eye's own fields placed {others}/{fields}."
        )
    return text


def to_json(bench: MontageBenchmark) -> dict[str, Any]:
    """JSON-serialisable results (pair errors as ``[i, j, error]``, ``inf`` as null)."""

    def num(v: float) -> float | None:
        return None if not math.isfinite(v) else v

    return {
        "meta": bench.meta,
        "results": [
            {
                "set": r.set_name,
                "method": r.method,
                "fields": r.fields,
                "placed": r.placed,
                "errors": [[i, j, num(e)] for (i, j), e in r.errors.items()],
                "seconds": r.seconds,
                "peak_mib": r.peak_mib,
                "note": r.note,
                "seam": r.seam,
                "seam_raw": r.seam_raw,
            }
            for r in bench.results
        ],
        "impostors": [t.__dict__ for t in bench.impostors],
    }
