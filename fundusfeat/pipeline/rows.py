"""The output of :func:`fundusfeat.pipeline.batch.register_dataset`: one CSV row per pair.

:data:`COLUMNS` and :func:`result_row`: a pair and its
:class:`~fundusfeat.pipeline.register.RegistrationResult` (or the reason it has none) as
the text of one row, every float written as the shortest text that reads back to it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import numpy as np

from fundusfeat.pipeline.register import RegistrationResult
from fundusfeat.pipeline.table import Pair

COLUMNS = (
    "index",
    "image1",
    "image2",
    "success",
    "failure",
    "reason",
    "num_keypoints1",
    "num_keypoints2",
    "num_matches",
    "num_inliers",
    "confidence",
    "model",
    "H",
    "transform",
)
"""Columns of the output CSV.

``index``: the pair's row in the input (0 = the first row after the header; rows are
written as they finish, so sort by it for input order). ``success``: ``True``/``False``.
``failure``: "" on success, ``refused`` (registered, but the verification did not accept
it, or too few matches: rerunning gives the same), ``input`` (a missing, empty,
undecodable or too small image, a malformed row) or ``error`` (a runtime error, a lost
worker); ``input`` and ``error`` rows are redone by ``retry_failed``. ``reason``: why it
failed. ``num_keypoints1/2``, ``num_matches``, ``num_inliers``: as
``fundusfeat register --json`` (empty when not computed). ``confidence``: the
verification's confidence. ``model``: the transform model. ``H``: the best homography,
9 numbers, row-major (``H[0,0] H[0,1] ... H[2,2]``), mapping image-1 pixels to image-2
pixels (``p2 ~ H @ [x1, y1, 1]``, OpenCV's pixel convention), empty when not registered.
``transform``: the transform's JSON (``Transform.to_dict``). Every float is written the
same way: the shortest text that reads back to the same float64 (Python's ``repr``)."""

FAILURE_KINDS = ("refused", "input", "error")
"""Values of the ``failure`` column of a failed row."""

RETRYABLE = ("input", "error")
"""Failure kinds whose cause can change, redone by ``retry_failed``."""

_LRU_SIZE = 8
_CSV_FIELD_LIMIT = 2**31 - 1


def _number(value: float) -> str:
    """A float as the shortest text that reads back to the same float64."""
    return repr(float(value))


def extra_column(name: str) -> str:
    """The output column of an input column beyond ``image1,image2``: its own name, or
    ``input_<name>`` where that is one of :data:`COLUMNS`."""
    return f"input_{name}" if name in COLUMNS else name


def output_columns(table: Sequence[Pair]) -> tuple[str, ...]:
    """:data:`COLUMNS`, then the table's other input columns (:func:`extra_column`)."""
    names = [extra_column(name) for name, _ in table[0].extra] if table else []
    return (*COLUMNS, *names)


def result_row(
    pair: Pair, result: RegistrationResult | None, problem: str = "", kind: str = "input"
) -> dict[str, str]:
    """The output row of a pair (a failed row of failure ``kind`` when ``result`` is
    None; see :data:`COLUMNS`), then the pair's other input columns."""
    row = _registration_row(pair, result, problem, kind)
    row.update((extra_column(name), value) for name, value in pair.extra)
    return row


def _registration_row(
    pair: Pair, result: RegistrationResult | None, problem: str, kind: str
) -> dict[str, str]:
    if result is None:
        row = dict.fromkeys(COLUMNS, "")
        row.update(
            index=str(pair.index),
            image1=pair.image1,
            image2=pair.image2,
            success="False",
            failure=kind,
            reason=problem,
        )
        return row
    H = "" if result.H is None else " ".join(_number(v) for v in np.asarray(result.H).ravel())
    transform = "" if result.transform is None else json.dumps(result.transform.to_dict())
    return {
        "index": str(pair.index),
        "image1": pair.image1,
        "image2": pair.image2,
        "success": str(bool(result.success)),
        "failure": "" if result.success else "refused",
        "reason": result.reason,
        "num_keypoints1": str(len(result.keypoints1)),
        "num_keypoints2": str(len(result.keypoints2)),
        "num_matches": str(len(result.matches)),
        "num_inliers": str(int(result.num_inliers)),
        "confidence": _number(result.confidence),
        "model": "" if result.transform is None else result.transform.model,
        "H": H,
        "transform": transform,
    }


def reason_kind(reason: str) -> str:
    """The kind of a failure reason: its text before any number, ``(`` or ``:`` (after a
    ``line N:`` prefix), e.g. "low confidence", "too few inliers", "malformed row"."""
    reason = re.sub(r"^line \d+: ", "", reason)
    return re.split(r"[:(\d]", reason, maxsplit=1)[0].strip() or reason
