"""``fundusfeat compare BASE FOLLOW [MORE...] --out DIR``: what changed between visits.

Two visits write into ``--out``: ``flicker.gif`` (baseline and aligned, normalised
follow-up alternating), ``changes.png`` (baseline with change contours), ``difference.png``
(signed difference colour map with its colour bar), ``checkerboard.png``, ``changes.json``
and ``changes.csv`` (one change a row) and ``report.html`` (one self-contained page: a
swipe/flicker viewer, the changes, the registration's confidence). Three or more visits
write one folder per later visit (``visit2/``, ``visit3/``, ...) with those figures, and a
top-level ``flicker.gif`` of all visits, ``changes.json``, ``changes.csv`` and
``report.html``. DICOM files are put in visit order by their acquisition dates; their
pixel spacing gives areas in mm²; no patient data is written.

Exit codes: 0 every comparison done; 1 a registration failed (no change map for that
visit; the reason on stderr); 2 bad input, before any detection (an unreadable file,
named; a file named twice; a DICOM file without pixel data; an ``--out`` that is a file
or not writable; bad arguments).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import cv2

from fundusfeat.cli.options import (
    UsageError,
    add_detector_options,
    distinct_paths,
    make_detector,
    prepare_out_dir,
    read_image_arg,
    registration_options,
)


def add_compare_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``fundusfeat compare``."""
    from fundusfeat.pipeline.changes import ChangeParams

    p = subparsers.add_parser(
        "compare",
        help="what changed between visits (change map, flicker, HTML viewer; DICOM)",
        description="Register each follow-up visit to the baseline (falling back to the "
        "previous visit), normalise its illumination and colour to the baseline's and "
        "find the regions that changed.",
    )
    p.add_argument("images", nargs="+", type=Path, help="baseline, follow-up [, more visits]")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--frame", type=int, help="frame of multi-frame DICOM files (0-based; default: none)"
    )
    p.add_argument(
        "--keep-order",
        action="store_true",
        help="keep the order given (default: DICOM files by acquisition date)",
    )
    defaults = ChangeParams()
    p.add_argument(
        "--high", type=float, help=f"seed threshold (noise std devs; default {defaults.high:g})"
    )
    p.add_argument(
        "--low", type=float, help=f"region threshold (noise std devs; default {defaults.low:g})"
    )
    add_detector_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run_compare)
    return p


def _visit_info(path: Path, index: int, info: Any) -> Any:
    """The report's :class:`VisitInfo` of a visit (``info``: its DICOM header or None)."""
    from fundusfeat.io.report_html import VisitInfo

    spacing, date = None, ""
    if info is not None:
        spacing = info.pixel_spacing
        date = info.acquired.isoformat(sep=" ") if info.acquired else ""
    return VisitInfo(label=f"visit {index}", name=path.name, date=date, pixel_spacing=spacing)


def _params(args: argparse.Namespace) -> Any:
    from dataclasses import replace

    from fundusfeat.pipeline.changes import ChangeParams

    params = ChangeParams()
    options = {"high": args.high, "low": args.low}
    try:
        return replace(params, **{k: v for k, v in options.items() if v is not None})
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _write(path: Path, image: Any) -> None:
    if not cv2.imwrite(str(path), image):
        raise UsageError(f"cannot write {str(path)!r}")


def _change_rows(result: Any, visit: Any, spacing: Any) -> list[dict[str, Any]]:
    from fundusfeat.io.report_html import area_mm2

    rows = []
    for k, change in enumerate(result.changes, 1):
        row = {"visit": visit.label, "file": visit.name, "change": k, **change.to_dict()}
        mm2 = area_mm2(change.area, spacing)
        row["area_mm2"] = None if mm2 is None else round(mm2, 5)
        rows.append(row)
    return rows


def _summary(result: Any, visit: Any, spacing: Any) -> dict[str, Any]:
    reg = result.registration
    return {
        "visit": visit.label,
        "file": visit.name,
        "date": visit.date or None,
        "success": bool(result.success),
        "reason": result.reason,
        "confidence": round(float(reg.confidence), 4),
        "inliers": int(reg.num_inliers),
        "transform": reg.transform.to_dict() if result.success and reg.transform else None,
        "timings_s": {k: round(float(v), 3) for k, v in result.timings.items()},
        "changes": _change_rows(result, visit, spacing) if result.success else [],
    }


def _write_tables(folder: Path, summaries: list[dict[str, Any]], visits: list[Any]) -> None:
    data = {
        "baseline": {
            "file": visits[0].name,
            "date": visits[0].date or None,
            "pixel_spacing_mm": list(visits[0].pixel_spacing) if visits[0].pixel_spacing else None,
        },
        "visits": summaries,
    }
    (folder / "changes.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    columns = ["visit", "file", "change", "x", "y", "area_px", "area_mm2", "bbox"]
    columns += ["polarity", "contrast", "score"]
    with (folder / "changes.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for summary in summaries:
            for row in summary["changes"]:
                w.writerow({**row, "bbox": " ".join(map(str, row["bbox"]))})


def _write_visit(folder: Path, result: Any, base: Any, visit: Any) -> None:
    """The figures of one successful comparison into ``folder``."""
    from fundusfeat.io import compare_figures as fig
    from fundusfeat.io.report_html import report_html

    folder.mkdir(parents=True, exist_ok=True)
    fig.write_flicker_gif(folder / "flicker.gif", fig.flicker_frames([result]))
    _write(folder / "changes.png", fig.changes_figure(result))
    _write(folder / "difference.png", fig.difference_figure(result))
    _write(folder / "checkerboard.png", fig.checkerboard_figure(result))
    page = report_html([result], [base, visit])
    (folder / "report.html").write_text(page, encoding="utf-8")


def _order(paths: list[Path], keep: bool) -> tuple[list[Path], list[Any]]:
    """The visits in date order (as given with ``keep``) and their DICOM headers (None
    for other files), each header read once."""
    from fundusfeat.io.dicom import visit_infos, visit_order

    try:
        infos = visit_infos(paths)
    except (ValueError, ImportError) as err:
        raise UsageError(f"cannot read a DICOM header: {err}") from err
    except FileNotFoundError as err:
        raise UsageError(f"cannot order the visits: {err}") from err
    order = list(range(len(paths))) if keep else visit_order(paths, infos)
    return [paths[k] for k in order], [infos[k] for k in order]


def run_compare(args: argparse.Namespace) -> int:
    """Run ``fundusfeat compare``; returns the exit code."""
    from fundusfeat.io import compare_figures as fig
    from fundusfeat.io.report_html import report_html
    from fundusfeat.pipeline.changes import compare_series

    if len(args.images) < 2:
        raise UsageError(f"compare needs at least 2 images, got {len(args.images)}")
    if args.frame is not None and args.frame < 0:
        raise UsageError(f"--frame: expected >= 0, got {args.frame}")
    params = _params(args)
    prepare_out_dir(args.out)
    paths, infos = _order(distinct_paths(list(args.images)), args.keep_order)
    images = [read_image_arg(p, frame=args.frame) for p in paths]
    visits = [_visit_info(p, k + 1, infos[k]) for k, p in enumerate(paths)]
    detector = make_detector(args)
    if not args.quiet:
        print(f"comparing {len(paths) - 1} visit(s) with {paths[0].name}", file=sys.stderr)
    try:
        results = compare_series(
            images, params=params, detector=detector, **registration_options(args)
        )
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from exc
    spacing = visits[0].pixel_spacing
    summaries = [_summary(r, v, spacing) for r, v in zip(results, visits[1:], strict=True)]
    series = len(results) > 1
    written = []
    for k, (res, visit) in enumerate(zip(results, visits[1:], strict=True), start=2):
        if not res.success:
            print(f"{visit.name}: no change map: {res.reason}", file=sys.stderr)
            continue
        folder = args.out / f"visit{k}" if series else args.out
        _write_visit(folder, res, visits[0], visit)
        written.append(folder)
        reg = res.registration
        print(
            f"{visit.name}: {len(res.changes)} change(s), confidence {reg.confidence:.3f}, "
            f"{reg.num_inliers} inliers; registration {res.timings.get('register', 0):.2f} s, "
            f"comparison {res.timings.get('align', 0) + res.timings.get('detect', 0):.2f} s"
        )
    if series and written:
        fig.write_flicker_gif(args.out / "flicker.gif", fig.flicker_frames(results))
    if series:
        ok = [(r, v) for r, v in zip(results, visits[1:], strict=True) if r.success]
        if ok:
            page = report_html([r for r, _ in ok], [visits[0]] + [v for _, v in ok])
            (args.out / "report.html").write_text(page, encoding="utf-8")
    _write_tables(args.out, summaries, visits)
    print(f"wrote {args.out}")
    return 0 if all(r.success for r in results) else 1
