"""The field-graph figure of a montage: which pairs registered, and their residuals.

Drawn from a :class:`~fundusfeat.pipeline.montage.MontageResult` (its ``image``,
``transforms``, ``edges`` and ``reasons``), never recomputed: on the shrunk montage, each
placed field's centre is a numbered node; each verified edge a line (green: used by the
joint fit, red: dropped as inconsistent; thicker: in the spanning tree) labelled with its
median residual after the fit in montage pixels; unplaced fields are listed in the legend.

Coordinates: ``(x, y)`` pixels, the centre of the top-left pixel at (0, 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from fundusfeat.io.figures import MAX_FIGURE_SIDE, shrink, with_legend

_USED, _DROPPED, _NODE = (60, 200, 60), (40, 40, 230), (255, 255, 255)


def field_graph_figure(
    result: Any, field_sizes: Sequence[tuple[int, int]], max_side: int = MAX_FIGURE_SIDE
) -> np.ndarray:
    """The field graph drawn over the montage.

    Args:
        result: a ``MontageResult``.
        field_sizes: ``(width, height)`` of each input field (node = its centre).
        max_side: longest side of the figure (before the legend).

    Returns:
        ``(h, w, 3)`` uint8 BGR figure with a one-line legend.
    """
    width, height = result.size
    base = result.image if result.image.size else np.zeros((height, width, 3), np.uint8)
    img = shrink(base, max_side).copy()
    scale = img.shape[1] / max(base.shape[1], 1)
    centres: dict[int, tuple[int, int]] = {}
    for k, (t, (w, h)) in enumerate(zip(result.transforms, field_sizes, strict=True)):
        if t is not None and result.reasons[k] == "ok":
            x, y = t.apply(np.array([[(w - 1) / 2.0, (h - 1) / 2.0]]))[0] * scale
            centres[k] = (int(round(x)), int(round(y)))
    unit = max(1, img.shape[1] // 500)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for e in result.edges:
        if e.i not in centres or e.j not in centres:
            continue
        a, b = centres[e.i], centres[e.j]
        colour = _USED if e.used else _DROPPED
        cv2.line(img, a, b, colour, unit * (3 if e.in_tree else 1), cv2.LINE_AA)
        label = "-" if not math.isfinite(e.residual) else f"{e.residual:.1f}"
        mid = ((a[0] + b[0]) // 2, (a[1] + b[1]) // 2)
        cv2.putText(img, label, mid, font, 0.4 * unit, (0, 0, 0), 3 * unit, cv2.LINE_AA)
        cv2.putText(img, label, mid, font, 0.4 * unit, colour, unit, cv2.LINE_AA)
    for k, c in centres.items():
        cv2.circle(img, c, 9 * unit, _NODE, -1, cv2.LINE_AA)
        cv2.putText(
            img, str(k), (c[0] - 5 * unit, c[1] + 5 * unit), font, 0.45 * unit, (0, 0, 0), unit
        )
    unplaced = [str(k) for k, t in enumerate(result.transforms) if t is None]
    legend = (
        f"fields (reference {result.reference}); edges: median residual px after the joint "
        "fit, green used, red dropped, thick = spanning tree"
    )
    if unplaced:
        legend += "; unplaced: " + ", ".join(unplaced)
    return with_legend(img, legend)
