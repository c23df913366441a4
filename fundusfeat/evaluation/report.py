"""Per-method summaries of an evaluation run, as a markdown table and as JSON."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fundusfeat.evaluation.metrics import (
    FIRE_CATEGORIES,
    MAX_THRESHOLD,
    SUCCESS_THRESHOLDS,
    Conventions,
    Score,
    score_conventions,
    success_curve,
)
from fundusfeat.evaluation.runner import PairResult


@dataclass(frozen=True)
class MethodReport:
    """All the numbers of one method.

    Attributes:
        method: method name.
        scores: the Registration Score under both conventions.
        seconds_per_pair: mean registration time per pair (seconds).
        results: the per-pair results.
    """

    method: str
    scores: Conventions
    seconds_per_pair: float
    results: tuple[PairResult, ...]

    @property
    def errors(self) -> np.ndarray:
        """(num_pairs,) float64 per-pair errors in pixels (``inf`` = failed)."""
        return np.asarray([r.error for r in self.results], dtype=np.float64)


def summarize(results: Sequence[PairResult]) -> list[MethodReport]:
    """Group per-pair results by method (first-seen order) and score each method."""
    methods = list(dict.fromkeys(r.method for r in results))
    reports = []
    for method in methods:
        rows = tuple(r for r in results if r.method == method)
        scores = score_conventions(
            [r.pair for r in rows], [r.category for r in rows], [r.error for r in rows]
        )
        seconds = float(np.mean([r.seconds for r in rows]))
        reports.append(MethodReport(method, scores, seconds, rows))
    return reports


def markdown(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table: a header row, the separator, one line per row (cells as str)."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(value: float, digits: int = 3) -> str:
    if math.isnan(value):
        return "-"
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def _category_cell(scores: Conventions, category: str) -> str:
    score = scores.by_category.get(category)
    return "-" if score is None else f"{_fmt(score.auc)} (n={score.num_pairs})"


def markdown_table(reports: Sequence[MethodReport]) -> str:
    """A markdown table with one row per method.

    Columns: pooled AUC (the paper's convention), per-category AUC (S, P, A with pair
    counts), mAUC (SuperRetina's convention: mean of the category AUCs, P37 excluded),
    median error (px), success rates at 5/10/25 px, failures and seconds per pair.
    """
    rates = [f"<={t:g}px" for t in SUCCESS_THRESHOLDS]
    head = ["method", "AUC", *FIRE_CATEGORIES, "mAUC", "median px", *rates, "failed", "s/pair"]
    rows = []
    for rep in reports:
        pooled = rep.scores.pooled
        rows.append(
            [
                rep.method,
                _fmt(pooled.auc),
                *(_category_cell(rep.scores, c) for c in FIRE_CATEGORIES),
                _fmt(rep.scores.mauc),
                _fmt(pooled.median_error, 2),
                *(_fmt(pooled.success[t]) for t in SUCCESS_THRESHOLDS),
                f"{pooled.num_failures}/{pooled.num_pairs}",
                _fmt(rep.seconds_per_pair, 2),
            ]
        )
    return markdown(head, rows)


CONFIDENCE_BINS = (0.0, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 1.0)
"""Bin edges of :func:`confidence_histogram` (the last bin includes 1)."""


def confidence_histogram(
    values: dict[str, Sequence[float]],
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a histogram table: one row per label, one column per bin of
    :data:`CONFIDENCE_BINS` (counts; non-finite values left out), plus min and max."""
    edges = CONFIDENCE_BINS
    header = [
        "pairs",
        *(
            f"[{a:g}, {b:g}{']' if b == 1 else ')'}"
            for a, b in zip(edges[:-1], edges[1:], strict=True)
        ),
    ]
    header += ["min", "max"]
    rows = []
    for label, vals in values.items():
        v = np.asarray([x for x in vals if math.isfinite(x)], dtype=np.float64)
        counts, _ = np.histogram(v, bins=edges)
        extremes = [f"{v.min():.3f}", f"{v.max():.3f}"] if len(v) else ["-", "-"]
        rows.append([f"{label} (n={len(v)})", *map(str, counts), *extremes])
    return header, rows


def json_record(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with infinite and NaN floats as JSON can hold them (see _json_float)."""
    return {k: _json_float(v) if isinstance(v, float) else v for k, v in record.items()}


def _json_float(value: float) -> float | str | None:
    """JSON has no inf/nan: inf -> "inf", nan -> None."""
    if math.isnan(value):
        return None
    return "inf" if math.isinf(value) else float(value)


def _score_json(score: Score) -> dict[str, Any]:
    return {
        "auc": _json_float(score.auc),
        "num_pairs": score.num_pairs,
        "num_failures": score.num_failures,
        "median_error_px": _json_float(score.median_error),
        "success": {f"{t:g}px": _json_float(v) for t, v in score.success.items()},
    }


def to_json(reports: Sequence[MethodReport], meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON-ready dict: ``meta``, per-method scores, success curves and per-pair rows.

    Infinite values are written as the string ``"inf"``.
    """
    thresholds = np.linspace(0.0, MAX_THRESHOLD, 26)
    methods = []
    for rep in reports:
        methods.append(
            {
                "method": rep.method,
                "paper": {
                    "pooled": _score_json(rep.scores.pooled),
                    "by_category": {c: _score_json(s) for c, s in rep.scores.by_category.items()},
                },
                "superretina": {
                    "mauc": _json_float(rep.scores.mauc),
                    "categories": list(rep.scores.mauc_categories),
                },
                "seconds_per_pair": rep.seconds_per_pair,
                "success_curve": {
                    "thresholds_px": thresholds.tolist(),
                    "success": success_curve(rep.errors, thresholds).tolist(),
                },
                "pairs": [
                    {
                        "pair": r.pair,
                        "category": r.category,
                        "error_px": _json_float(r.error),
                        "success": r.success,
                        "reason": r.reason,
                        "num_matches": r.num_matches,
                        "num_inliers": r.num_inliers,
                        "seconds": r.seconds,
                        "model": r.model,
                        "confidence": _json_float(r.confidence),
                    }
                    for r in rep.results
                ],
            }
        )
    return {"meta": dict(meta or {}), "methods": methods}
