"""Figures of a comparison of visits: flicker frames, change contours, difference map.

Every function takes a :class:`~fundusfeat.pipeline.changes.ComparisonResult` that
succeeded and returns ``(h, w, 3)`` uint8 BGR images at the comparison's analysis
resolution (``result.factors`` maps baseline px to those pixels), or writes a file. The
figures hold image pixels only: no patient data, no file names.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

DIFFERENCE_RANGE = 8.0
"""The colour map of ``difference.png`` spans -8 .. +8 robust standard deviations."""

FLICKER_MS = 700
"""Duration of one frame of ``flicker.gif`` (milliseconds)."""

CHANGE_COLOURS = {"brighter": (0, 215, 255), "darker": (255, 80, 255)}
"""Contour colour (BGR) by polarity: yellow for brighter, magenta for darker."""


def _require_success(result: Any) -> None:
    if not getattr(result, "success", False) or result.aligned is None:
        raise ValueError("result: a failed comparison has no figures")


def to_uint8(image: np.ndarray) -> np.ndarray:
    """``(h, w, 3)`` float in [0, 1] -> uint8 (rounded, clipped)."""
    return np.clip(np.asarray(image, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def flicker_frames(results: Sequence[Any]) -> list[np.ndarray]:
    """The baseline, then every aligned and normalised visit (uint8 BGR, baseline frame).

    Args:
        results: successful comparisons of the same baseline (one per later visit), in
            visit order; failed ones are skipped.

    Raises:
        ValueError: if none succeeded.
    """
    done = [r for r in results if getattr(r, "success", False) and r.aligned is not None]
    if not done:
        raise ValueError("results: no successful comparison to flicker")
    return [to_uint8(done[0].baseline)] + [to_uint8(r.aligned) for r in done]


def write_flicker_gif(
    path: str | Path, frames: Sequence[np.ndarray], duration_ms: int = FLICKER_MS
) -> None:
    """Write ``frames`` (uint8 BGR, one size) as a looping GIF (``cv2.imwriteanimation``).

    Raises:
        ValueError: fewer than two frames, frames of different sizes, or the file cannot
            be written.
    """
    if len(frames) < 2:
        raise ValueError(f"frames: a flicker needs at least 2 frames, got {len(frames)}")
    if len({f.shape for f in frames}) != 1:
        raise ValueError("frames: all frames must have the same shape")
    anim = cv2.Animation()
    anim.frames = [np.ascontiguousarray(f) for f in frames]
    anim.durations = [int(duration_ms)] * len(frames)
    anim.loop_count = 0
    if not cv2.imwriteanimation(str(path), anim):
        raise ValueError(f"path: cannot write {str(path)!r}")


def changes_figure(result: Any, thickness: int = 2) -> np.ndarray:
    """The baseline with each change's contour (yellow brighter, magenta darker) and rank.

    Contours come from ``result.change_mask`` (baseline px) resized to the analysis
    resolution; the number next to a region is its rank in ``result.changes``.
    """
    _require_success(result)
    canvas = to_uint8(result.baseline)
    h, w = canvas.shape[:2]
    sx, sy = result.factors
    mask = cv2.resize(result.change_mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    n, labels = cv2.connectedComponents(mask)
    for rank, change in enumerate(result.changes, start=1):
        x = int(round((change.x + 0.5) * sx - 0.5))
        y = int(round((change.y + 0.5) * sy - 0.5))
        colour = CHANGE_COLOURS.get(change.polarity, (0, 255, 0))
        label = labels[min(max(y, 0), h - 1), min(max(x, 0), w - 1)] if n > 1 else 0
        if label > 0:
            region = (labels == label).astype(np.uint8)
            contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(canvas, contours, -1, colour, thickness, cv2.LINE_AA)
        else:
            bx, by, bw, bh = change.bbox
            r = max(4, int(0.5 * max(bw * sx, bh * sy)) + 3)
            cv2.circle(canvas, (x, y), r, colour, thickness, cv2.LINE_AA)
        bx, by, bw, bh = change.bbox
        org = (int((bx + bw) * sx) + 3, max(12, int(by * sy)))
        cv2.putText(canvas, str(rank), org, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3)
        cv2.putText(canvas, str(rank), org, cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1)
    return canvas


def diverging_lut() -> np.ndarray:
    """``(256, 3)`` uint8 BGR: blue (darker) - white (no change) - red (brighter)."""
    t = np.linspace(-1.0, 1.0, 256)
    blue = np.array([180, 60, 20], np.float64)  # BGR
    red = np.array([30, 40, 200], np.float64)
    white = np.array([255, 255, 255], np.float64)
    neg = white + (blue - white) * np.clip(-t, 0, 1)[:, None]
    pos = white + (red - white) * np.clip(t, 0, 1)[:, None]
    lut = np.where((t < 0)[:, None], neg, pos)
    return np.clip(lut + 0.5, 0, 255).astype(np.uint8)


def difference_figure(result: Any, span: float = DIFFERENCE_RANGE) -> np.ndarray:
    """The signed difference as a diverging colour map with its colour bar on the right.

    Blue is darker in the follow-up, red brighter, white no change; the bar is labelled in
    robust standard deviations (``-span .. +span``); outside the overlap is grey.
    """
    _require_success(result)
    if span <= 0:
        raise ValueError(f"span: expected > 0, got {span}")
    z = np.asarray(result.difference, np.float32)
    idx = np.clip((z / span + 1.0) * 127.5, 0, 255).astype(np.uint8)
    lut = diverging_lut()
    image = lut[idx]
    image[~result.overlap] = (96, 96, 96)
    h = image.shape[0]
    bar_w, margin, text_w = max(16, h // 40), 12, 70
    bar = np.full((h, margin + bar_w + text_w, 3), 255, np.uint8)
    top, bottom = int(0.1 * h), int(0.9 * h)
    rows = np.linspace(255, 0, bottom - top).astype(np.uint8)
    bar[top:bottom, margin : margin + bar_w] = lut[rows][:, None, :]
    cv2.rectangle(bar, (margin, top), (margin + bar_w - 1, bottom - 1), (0, 0, 0), 1)
    for value in (span, span / 2, 0.0, -span / 2, -span):
        y = int(round(top + (span - value) / (2 * span) * (bottom - top - 1)))
        cv2.line(bar, (margin + bar_w, y), (margin + bar_w + 4, y), (0, 0, 0), 1)
        cv2.putText(
            bar,
            f"{value:+.0f}" if value else "0",
            (margin + bar_w + 7, y + 5),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
    cv2.putText(bar, "sd", (margin, top - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    return np.hstack([image, bar])


def checkerboard_figure(result: Any, tiles: int = 8) -> np.ndarray:
    """Baseline and aligned follow-up in alternating tiles (vessels continue across)."""
    from fundusfeat.io.figures import checkerboard

    _require_success(result)
    return checkerboard(to_uint8(result.baseline), to_uint8(result.aligned), tiles=tiles)
