"""montage(): many fields of one eye on one canvas, jointly consistent.

The stages, each a small function over plain data (:mod:`.field_graph`,
:mod:`fundusfeat.geometry.joint_fit`, :mod:`.canvas`):

1. each field detected once (identical copies of a field are flagged, not detected);
2. candidate pairs registered from those features and verified with the calibrated
   confidence of :func:`fundusfeat.register`: the verified edges;
3. reference = the best-connected field unless given; start homographies (field px ->
   reference px) from a maximum-confidence spanning tree;
4. a joint robust least-squares fit of every field's transform to the reference frame over
   the inliers of every edge; edges that stay inconsistent are dropped and the fit is
   repeated; a field no longer connected to the reference is unplaced;
5. a field with no verified edge to the reference's group stays unplaced, with a reason
   (an image of another eye is never forced in);
6. the canvas (the reference field undistorted, translated) and the blend.

Coordinates: ``(x, y)`` pixels, the centre of the top-left pixel at (0, 0); every
transform maps field pixels to montage (canvas) pixels.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from fundusfeat.features.feature2d import R2D2Fundus
from fundusfeat.geometry.joint_fit import DEFAULT_DROP_PX, FIELD_MODELS, Edge, fit_jointly
from fundusfeat.geometry.transforms import ProjectiveTransform, Transform, from_dict
from fundusfeat.io.arrays import to_uint8
from fundusfeat.io.images import read_image
from fundusfeat.io.progress import Progress
from fundusfeat.io.validation import validate_image
from fundusfeat.pipeline.canvas import MAX_CANVAS_PIXELS, blend, canvas_bounds, shifted
from fundusfeat.pipeline.field_graph import (
    candidate_pairs,
    choose_reference,
    duplicates,
    spanning_tree,
    verify_pairs,
)
from fundusfeat.pipeline.register import (
    Options,
    RegistrationResult,
    check_detector,
    check_matcher,
    default_matcher,
    deprecated_model,
    image_features,
)

MONTAGE_MODELS = ("auto", *FIELD_MODELS)
"""Per-field models of :func:`montage`; ``"auto"`` is :data:`AUTO_MODEL`."""

AUTO_MODEL = "quadratic"
"""The per-field model that ``transform_model="auto"`` fits (see docs/benchmarks.md, Montage)."""


@dataclass(frozen=True)
class MontageEdge:
    """A verified pairwise registration of the montage.

    Attributes:
        i, j: fields (the registration maps field i -> field j, ``i < j``).
        confidence: its calibrated confidence.
        inliers: its number of inliers.
        residual: median distance (montage px) between its inliers mapped through the two
            fields' jointly fitted transforms (NaN when a field is unplaced).
        used: False when the joint fit dropped it as inconsistent.
        in_tree: True when it is an edge of the spanning tree that gave the start.
    """

    i: int
    j: int
    confidence: float
    inliers: int
    residual: float
    used: bool = True
    in_tree: bool = False


@dataclass(frozen=True)
class MontageResult:
    """Outcome of :func:`montage`.

    Attributes:
        transforms: one per input: a ``Transform`` from field px to montage px (``apply``,
            ``inverse``, ``warp``, ``to_dict``), or None when the field is not placed.
        reasons: one per input: ``"ok"``, ``"duplicate of field k"``, or why it is unplaced.
        image: ``(H, W, 3)`` uint8 BGR blended montage (``(0, 0, 3)`` without blending).
        mask: ``(H, W)`` bool, True where the montage shows a field.
        reference: index of the reference field (its transform is a translation).
        edges: the verified pairwise registrations (:class:`MontageEdge`).
        size: ``(width, height)`` of the canvas.
        model: the per-field model of the joint fit.
        timings: seconds of ``detect``, ``register``, ``fit``, ``blend`` and ``total``.
        tree_transforms: one per input: the spanning-tree start (pairwise homographies
            composed along the tree, field px -> montage px) before the joint fit, or None
            (not in :meth:`to_dict`).
        labels: ``(H, W)`` int32, the input index of the field each montage pixel comes
            from (the seams), -1 outside; ``(0, 0)`` without blending (not in
            :meth:`to_dict`).
    """

    transforms: list[Transform | None]
    reasons: list[str]
    image: np.ndarray
    mask: np.ndarray
    reference: int
    edges: list[MontageEdge]
    size: tuple[int, int]
    model: str = "homography"
    timings: dict[str, float] = field(default_factory=dict)
    tree_transforms: list[Transform | None] = field(default_factory=list)
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int32))

    @property
    def placed(self) -> list[bool]:
        """One per input: True when the field has a transform."""
        return [t is not None for t in self.transforms]

    @property
    def success(self) -> bool:
        """True when every field is placed."""
        return all(self.placed)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable transforms, reasons, edges, reference, canvas size and timings."""
        return {
            "reference": self.reference,
            "size": list(self.size),
            "model": self.model,
            "transforms": [None if t is None else t.to_dict() for t in self.transforms],
            "reasons": list(self.reasons),
            "edges": [_edge_dict(e) for e in self.edges],
            "timings": dict(self.timings),
        }

    def to_json(self, path: str | Path | None = None) -> str:
        """:meth:`to_dict` as JSON text (also written to ``path`` when given)."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MontageResult:
        """Rebuild from :meth:`to_dict` (the image is not stored: ``image`` and ``mask``
        are empty).

        Raises:
            ValueError: a malformed entry.
        """
        try:
            width, height = (int(v) for v in data["size"])
            edges = [
                MontageEdge(
                    int(e["i"]),
                    int(e["j"]),
                    float(e["confidence"]),
                    int(e["inliers"]),
                    float("nan") if e["residual"] is None else float(e["residual"]),
                    bool(e["used"]),
                    bool(e.get("in_tree", False)),
                )
                for e in data["edges"]
            ]
            return cls(
                transforms=[None if t is None else from_dict(t) for t in data["transforms"]],
                reasons=[str(r) for r in data["reasons"]],
                image=np.zeros((0, 0, 3), np.uint8),
                mask=np.zeros((0, 0), bool),
                reference=int(data["reference"]),
                edges=edges,
                size=(width, height),
                model=str(data.get("model", "homography")),
                timings={k: float(v) for k, v in data.get("timings", {}).items()},
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"not a montage description: {err}") from err

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> MontageResult:
        """Rebuild from :meth:`to_json` text or a file holding it."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text_or_path).read_text(encoding="utf-8")
        return cls.from_dict(json.loads(text))


def _edge_dict(edge: MontageEdge) -> dict[str, Any]:
    out = asdict(edge)
    if not np.isfinite(out["residual"]):
        out["residual"] = None  # JSON has no NaN
    return out


# ------------------------------------------------------------------------------ stages
def _load(images: Sequence[Any]) -> list[np.ndarray]:
    """Validated ``(H, W, 3)`` uint8 BGR fields (paths read; gray images come back as
    three channels from :func:`validate_image`)."""
    if isinstance(images, (str, Path, np.ndarray)) or not isinstance(images, Sequence):
        raise TypeError("images must be a sequence of arrays or paths")
    if len(images) < 2:
        raise ValueError(f"images: a montage needs at least 2 images, got {len(images)}")
    out = []
    for k, img in enumerate(images):
        if isinstance(img, (str, Path)):
            img = read_image(img)
        out.append(to_uint8(validate_image(img, f"images[{k}]")))
    return out


def _group(n: int, edges: Sequence[Edge], reference: int) -> set[int]:
    """The fields connected to ``reference`` by ``edges``."""
    if not edges:
        return {reference}
    rows, cols = [e.i for e in edges], [e.j for e in edges]
    graph = csr_matrix((np.ones(len(edges)), (rows, cols)), shape=(n, n))
    labels = connected_components(graph, directed=False)[1]
    return {k for k in range(n) if labels[k] == labels[reference]}


@dataclass(frozen=True)
class Placement:
    """Stages 3-4 of :func:`montage`, in the reference field's pixels.

    Attributes:
        transforms: ``{field: Transform}`` field px -> reference px (joint fit).
        start: ``{field: (3, 3)}`` spanning-tree start homographies.
        parents: ``{field: parent}`` of the spanning tree.
        dropped: indices (into the edges) of the edges dropped as inconsistent.
        residuals: ``{edge index: median residual px}`` of the edges between placed fields.
    """

    transforms: dict[int, Transform]
    start: dict[int, np.ndarray]
    parents: dict[int, int]
    dropped: set[int]
    residuals: dict[int, float]


def place_fields(
    n: int, edges: Sequence[Edge], reference: int, model: str, drop_px: float
) -> Placement:
    """Stages 3-4: spanning-tree start and joint fit of the reference's group; an edge
    the fit drops may disconnect fields, which are then left out and the group refitted."""
    active = list(range(len(edges)))
    dropped: set[int] = set()
    while True:
        group = _group(n, [edges[e] for e in active], reference)
        inside = [e for e in active if edges[e].i in group and edges[e].j in group]
        start, parents = spanning_tree(n, [edges[e] for e in inside], reference)
        fit = fit_jointly(
            start,
            [edges[e] for e in inside],
            reference,
            model=model,
            drop_px=drop_px,
        )
        if not fit.dropped:
            break
        gone = {inside[d] for d in fit.dropped}
        dropped |= gone
        active = [e for e in active if e not in gone]
        if _group(n, [edges[e] for e in active], reference) == group:
            break  # the fit already left them out and every field stays connected
    residuals = {inside[d]: r for d, r in fit.residuals.items()}
    for e in dropped - set(residuals):
        if edges[e].i in fit.transforms and edges[e].j in fit.transforms:
            t_i, t_j = fit.transforms[edges[e].i], fit.transforms[edges[e].j]
            diff = t_i.apply(edges[e].points_i) - t_j.apply(edges[e].points_j)
            residuals[e] = float(np.median(np.linalg.norm(diff, axis=1)))
    return Placement(fit.transforms, start, parents, dropped, residuals)


def _unplaced_reason(k: int, results: dict[tuple[int, int], RegistrationResult]) -> str:
    """Why field ``k`` has no place: its most confident pair's reason."""
    tried = {pair: res for pair, res in results.items() if k in pair}
    if not tried:
        return "no candidate pair"
    (i, j), res = max(tried.items(), key=lambda item: item[1].confidence)
    other = j if i == k else i
    if res.success:
        return f"its verified edges do not reach the reference (best: field {other})"
    return f"no verified edge (best: field {other}: {res.reason})"


def _reasons(
    n: int, placed: set[int], dup: dict[int, int], results: dict, dropped_only: set[int]
) -> list[str]:
    out = []
    for k in range(n):
        if k in dup:
            state = "" if dup[k] in placed else ", not placed"
            out.append(f"duplicate of field {dup[k]}{state}")
        elif k in placed:
            out.append("ok")
        elif k in dropped_only:
            out.append("its edges were inconsistent with the joint fit (dropped)")
        else:
            out.append(_unplaced_reason(k, results))
    return out


# ------------------------------------------------------------------------------- API
def montage(
    images: Sequence[Any],
    *,
    reference: int | None = None,
    detector: Any = None,
    matcher: Any = None,
    transform_model: str = "auto",
    threshold: float | None = None,
    drop_px: float = DEFAULT_DROP_PX,
    max_pixels: int = MAX_CANVAS_PIXELS,
    blend_fields: bool = True,
    progress: Progress | None = None,
    model: str | None = None,
) -> MontageResult:
    """Place many fields of one eye on one canvas, jointly consistent.

    Args:
        images: two or more fields: ``(H, W[, 3])`` arrays (uint8 BGR, gray, or float in
            [0, 1]) or paths.
        reference: index of the field whose frame the montage keeps (undistorted, only
            translated); None: the best-connected field.
        detector: ``R2D2Fundus`` (default ``R2D2Fundus.create()``) or any
            ``cv2.Feature2D``; each field is detected once.
        matcher: as in :func:`fundusfeat.register`.
        transform_model: per-field model of the joint fit: ``"homography"``,
            ``"quadratic"`` or ``"auto"`` (:data:`AUTO_MODEL`). Pairwise registrations
            choose their own model as :func:`fundusfeat.register` does.
        threshold: confidence of a verified edge (default: :func:`fundusfeat.register`'s).
        drop_px: an edge whose median residual after the joint fit exceeds this (and 3x
            the median over all edges) is dropped and the fit repeated.
        max_pixels: bound on the canvas area (width x height).
        blend_fields: False skips the canvas image (transforms and edges only).
        progress: ``callback(done, total, label)`` after each detection and pair.
        model: deprecated name of ``transform_model`` (``model`` names the network in
            ``R2D2Fundus.create``).

    Returns:
        :class:`MontageResult`.

    Raises:
        TypeError: ``images`` not a sequence, a bad image, detector or matcher.
        ValueError: fewer than two images, a bad argument, or a canvas above ``max_pixels``.
    """
    t_start = time.perf_counter()
    transform_model = deprecated_model(model, transform_model, "montage")
    if transform_model not in MONTAGE_MODELS:
        raise ValueError(
            f"transform_model must be one of {MONTAGE_MODELS}, got {transform_model!r}"
        )
    field_model = AUTO_MODEL if transform_model == "auto" else transform_model
    imgs = _load(images)
    n = len(imgs)
    if reference is not None and (
        isinstance(reference, bool)
        or not isinstance(reference, (int, np.integer))
        or not 0 <= reference < n
    ):
        raise ValueError(f"reference must be a field index in [0, {n}), got {reference!r}")
    opts = Options() if threshold is None else Options(threshold=threshold)
    detector = check_detector(detector if detector is not None else R2D2Fundus.create())
    matcher = check_matcher(matcher) or default_matcher(detector)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    dup = duplicates(imgs)
    unique = [k for k in range(n) if k not in dup]
    feats = image_features(detector, [imgs[k] for k in unique], [None] * len(unique))
    timings["detect"] = time.perf_counter() - t0
    if progress is not None:
        progress(0, 1, f"detected {len(unique)} fields")

    t0 = time.perf_counter()
    local_pairs = candidate_pairs(feats, matcher)
    local_edges, local_results = verify_pairs(feats, local_pairs, matcher, opts, progress)
    edges = [replace(e, i=unique[e.i], j=unique[e.j]) for e in local_edges]
    results = {(unique[i], unique[j]): r for (i, j), r in local_results.items()}
    timings["register"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if reference is None:
        ref = unique[choose_reference(len(unique), local_edges)]
    else:
        ref = dup.get(int(reference), int(reference))
    placement = place_fields(n, edges, ref, field_model, drop_px)
    fitted, dropped, residuals = placement.transforms, placement.dropped, placement.residuals
    timings["fit"] = time.perf_counter() - t0

    placed = set(fitted)
    with_edges = {k for e in edges for k in (e.i, e.j)}
    kept = {k for n_e, e in enumerate(edges) if n_e not in dropped for k in (e.i, e.j)}
    reasons = _reasons(n, placed, dup, results, (with_edges - kept) - placed)
    fovs = {k: feats[unique.index(k)].fov.mask for k in placed}
    order = sorted(placed)
    offset, size = canvas_bounds([fitted[k] for k in order], [fovs[k] for k in order], max_pixels)
    to_canvas = {k: shifted(fitted[k], offset) for k in order}
    transforms = [to_canvas.get(dup.get(k, k)) for k in range(n)]
    tree = {k: shifted(ProjectiveTransform(h), offset) for k, h in placement.start.items()}
    tree_transforms = [tree.get(dup.get(k, k)) for k in range(n)]

    t0 = time.perf_counter()
    if blend_fields:
        image, mask, local = blend(
            [imgs[k] for k in order],
            [fovs[k] for k in order],
            [to_canvas[k] for k in order],
            size,
            reference=order.index(ref),
            labels=True,
        )
        labels = np.where(local >= 0, np.asarray(order, np.int32)[np.maximum(local, 0)], -1)
    else:
        image, mask = np.zeros((0, 0, 3), np.uint8), np.zeros((0, 0), bool)
        labels = np.zeros((0, 0), np.int32)
    timings["blend"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    medges = [
        MontageEdge(
            e.i,
            e.j,
            e.confidence,
            e.inliers,
            residuals.get(k, float("nan")),
            k not in dropped and k in residuals,
            placement.parents.get(e.i) == e.j or placement.parents.get(e.j) == e.i,
        )
        for k, e in enumerate(edges)
    ]
    return MontageResult(
        transforms,
        reasons,
        image,
        mask,
        ref,
        medges,
        size,
        field_model,
        timings,
        tree_transforms,
        labels.astype(np.int32),
    )
