"""``report.html``: one self-contained page comparing visits (images embedded).

The page holds, per later visit: a swipe viewer (the aligned follow-up over the baseline,
revealed up to the slider's position; a flicker button alternates the two), the change
map, the difference map with its colour bar, the checkerboard, the list of changes
(position in baseline px; area in px and, when the pixel spacing is known, in mm²) and
the registration's confidence. Images are JPEG/PNG data URIs, so the file needs nothing
else and works offline. No patient data is written: visits are labelled by their number,
file name (base name only) and acquisition date when known.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from fundusfeat.io.compare_figures import (
    changes_figure,
    checkerboard_figure,
    difference_figure,
    to_uint8,
)


@dataclass(frozen=True)
class VisitInfo:
    """What the report says about one visit (no patient data).

    Attributes:
        label: e.g. ``"visit 2"``.
        name: the file's base name, or ``""``.
        date: acquisition date/time as text, or ``""``.
        pixel_spacing: ``(row, col)`` mm per baseline pixel, or None.
    """

    label: str
    name: str = ""
    date: str = ""
    pixel_spacing: tuple[float, float] | None = None


def data_uri(image: np.ndarray, kind: str = ".jpg", quality: int = 90) -> str:
    """A ``data:`` URI of ``image`` (uint8 BGR) encoded as JPEG or PNG."""
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if kind == ".jpg" else []
    ok, buf = cv2.imencode(kind, image, params)
    if not ok:
        raise ValueError(f"image: cannot encode as {kind}")
    mime = "image/jpeg" if kind == ".jpg" else "image/png"
    return f"data:{mime};base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def area_mm2(area_px: float, spacing: tuple[float, float] | None) -> float | None:
    """Area in mm² of ``area_px`` baseline pixels, or None without a pixel spacing."""
    if spacing is None:
        return None
    return float(area_px) * float(spacing[0]) * float(spacing[1])


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1100px}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:2em}
.viewer{position:relative;display:inline-block;max-width:100%;line-height:0}
.viewer img{max-width:100%;height:auto;display:block}
.viewer img.top{position:absolute;left:0;top:0}
.viewer svg{position:absolute;left:0;top:0;width:100%;height:100%;pointer-events:none}
.controls{margin:.6em 0} .controls input[type=range]{width:60%;vertical-align:middle}
table{border-collapse:collapse;margin-top:.6em} td,th{border:1px solid #ccc;padding:2px 8px;
text-align:right} th{background:#f3f3f3}
.figs img{max-width:32%;height:auto;margin-right:1%} .fail{color:#a00;font-weight:bold}
.meta{color:#555}
"""

_SCRIPT = """
(function(){
  function setup(v){
    var top=v.querySelector('img.top'), slider=v.parentNode.querySelector('input.swipe');
    var button=v.parentNode.querySelector('button.flicker'), timer=null, shown=true;
    function swipe(){ top.style.clipPath='inset(0 '+(100-Number(slider.value))+'% 0 0)'; }
    slider.addEventListener('input', swipe);
    button.addEventListener('click', function(){
      if(timer){ clearInterval(timer); timer=null; top.style.visibility='visible';
                 button.textContent='flicker'; return; }
      button.textContent='stop'; top.style.clipPath='none';
      timer=setInterval(function(){ shown=!shown;
        top.style.visibility=shown?'visible':'hidden'; }, FLICKER_MS);
    });
    swipe();
  }
  var vs=document.querySelectorAll('.viewer');
  for(var i=0;i<vs.length;i++){ setup(vs[i]); }
})();
"""


def _fmt(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _changes_table(result: Any, spacing: tuple[float, float] | None) -> str:
    if not result.changes:
        return "<p>No change found.</p>"
    head = ["#", "x (px)", "y (px)", "area (px)"]
    if spacing is not None:
        head.append("area (mm²)")
    head += ["polarity", "contrast", "score (sd)"]
    rows = ["<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for k, c in enumerate(result.changes, start=1):
        cells = [str(k), f"{c.x:.1f}", f"{c.y:.1f}", f"{c.area:.0f}"]
        if spacing is not None:
            cells.append(_fmt(area_mm2(c.area, spacing), 4))
        cells += [html.escape(c.polarity), f"{c.contrast:+.3f}", f"{c.score:.1f}"]
        rows.append("<tr>" + "".join(f"<td>{v}</td>" for v in cells) + "</tr>")
    return "<table class='changes'>" + "".join(rows) + "</table>"


def _markers(result: Any) -> str:
    h, w = result.baseline.shape[:2]
    sx, sy = result.factors
    items = []
    for c in result.changes:
        _, _, bw, bh = c.bbox
        r = max(6.0, 0.5 * max(bw * sx, bh * sy) + 4)
        x, y = (c.x + 0.5) * sx - 0.5, (c.y + 0.5) * sy - 0.5
        colour = "#ffd700" if c.polarity == "brighter" else "#ff50ff"
        items.append(
            f"<circle cx='{x:.1f}' cy='{y:.1f}' r='{r:.1f}' fill='none' "
            f"stroke='{colour}' stroke-width='2'/>"
        )
    return (
        f"<svg viewBox='0 0 {w} {h}' preserveAspectRatio='none' class='markers'>"
        + "".join(items)
        + "</svg>"
    )


def _visit_section(index: int, result: Any, baseline: VisitInfo, visit: VisitInfo) -> str:
    title = html.escape(visit.label)
    meta = ", ".join(html.escape(v) for v in (visit.name, visit.date) if v)
    reg = result.registration
    out = [f"<section class='visit' id='visit{index}'><h2>{title} against the baseline</h2>"]
    if meta:
        out.append(f"<p class='meta'>{meta}</p>")
    conf = float(getattr(reg, "confidence", 0.0))
    inliers = int(getattr(reg, "num_inliers", 0) or 0)
    model = getattr(getattr(reg, "transform", None), "model", "") or ""
    out.append(
        f"<p>Registration: confidence <b class='confidence'>{conf:.3f}</b>, "
        f"{inliers} inliers{', model ' + html.escape(model) if model else ''}; "
        f"{html.escape(str(result.reason))}.</p>"
    )
    if not result.success:
        out.append(
            "<p class='fail'>The registration failed: no change map for this visit.</p></section>"
        )
        return "".join(out)
    base = data_uri(to_uint8(result.baseline))
    aligned = data_uri(to_uint8(result.aligned))
    out.append(
        "<div class='controls'><label>baseline &#8596; follow-up "
        f"<input type='range' class='swipe' min='0' max='100' value='50' "
        f"aria-label='swipe {title}'></label> "
        "<button type='button' class='flicker'>flicker</button></div>"
        "<div class='viewer'>"
        f"<img class='base' alt='baseline' src='{base}'>"
        f"<img class='top' alt='{title} aligned' src='{aligned}'>"
        f"{_markers(result)}</div>"
    )
    n = len(result.changes)
    out.append(f"<p><b class='n-changes'>{n}</b> change{'s' if n != 1 else ''} found.</p>")
    out.append(_changes_table(result, baseline.pixel_spacing))
    out.append(
        "<div class='figs'>"
        f"<img alt='changes' src='{data_uri(changes_figure(result))}'>"
        f"<img alt='difference' src='{data_uri(difference_figure(result), '.png')}'>"
        f"<img alt='checkerboard' src='{data_uri(checkerboard_figure(result))}'>"
        "</div><p class='meta'>Change contours (yellow brighter, magenta darker in the "
        "follow-up); the signed difference in robust standard deviations (blue darker, "
        "red brighter); the checkerboard of baseline and aligned follow-up.</p>"
    )
    out.append("</section>")
    return "".join(out)


def report_html(
    results: Sequence[Any],
    visits: Sequence[VisitInfo],
    *,
    title: str = "fundusfeat: comparison of visits",
    flicker_ms: int = 700,
) -> str:
    """The self-contained page of a comparison (series).

    Args:
        results: one :class:`~fundusfeat.pipeline.changes.ComparisonResult` per later
            visit (``compare`` or ``compare_series``).
        visits: ``len(results) + 1`` :class:`VisitInfo`, the baseline first.
        title: the page's title.
        flicker_ms: flicker period (milliseconds).

    Returns:
        The HTML text (UTF-8, no external resources).
    """
    if len(visits) != len(results) + 1:
        raise ValueError(
            f"visits: expected {len(results) + 1} (the baseline first), got {len(visits)}"
        )
    base = visits[0]
    spacing = (
        f"; pixel spacing {base.pixel_spacing[0]:.4g} x {base.pixel_spacing[1]:.4g} mm"
        if base.pixel_spacing
        else ""
    )
    meta = ", ".join(html.escape(v) for v in (base.name, base.date) if v)
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='meta'>Baseline: {meta or 'visit 1'}{spacing}. Positions are baseline "
        "pixels (x right, y down).</p>",
    ]
    for k, (res, visit) in enumerate(zip(results, visits[1:], strict=True), start=2):
        body.append(_visit_section(k, res, base, visit))
    script = _SCRIPT.replace("FLICKER_MS", str(int(flicker_ms)))
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        + "".join(body)
        + f"<script>{script}</script></body></html>\n"
    )
