"""The input of :func:`fundusfeat.pipeline.batch.register_dataset`: a table of image pairs.

A CSV table (columns ``image1,image2`` and any others, paths relative to the table) or a
folder of FIRE-style ``<name>_1.<ext>`` / ``<name>_2.<ext>`` images becomes a list of
:class:`Pair`; columns beyond ``image1,image2`` travel with each pair into its output row.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fundusfeat.io.images import IMAGE_SUFFIXES

_CSV_FIELD_LIMIT = 2**31 - 1


class BatchInputError(ValueError):
    """The table of pairs, the output, the cache or an option cannot be used at all
    (exit code 2)."""


@dataclass(frozen=True)
class Pair:
    """One row of the input: the two image paths as written and as resolved.

    Attributes:
        image1, image2: the paths as the table gives them.
        path1, path2: resolved paths.
        problem: why the row is unusable ("" when it is fine).
        index: the row's position in the table (0 = the first row after the header).
        extra: ``(column, value)`` of the table's other columns, in the table's order
            (carried into the output row, :func:`fundusfeat.pipeline.rows.result_row`).
    """

    image1: str
    image2: str
    path1: Path | None
    path2: Path | None
    problem: str = ""
    index: int = 0
    extra: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return self.image1, self.image2


def read_pairs(source: str | Path) -> list[Pair]:
    """The pairs of a CSV table (columns ``image1,image2``, paths relative to the table,
    any other columns carried as :attr:`Pair.extra`; UTF-8 with or without a byte-order
    mark) or of a folder of FIRE-style ``<name>_1.<ext>`` / ``<name>_2.<ext>`` images,
    each with its ``index``.

    Raises:
        BatchInputError: no such table or folder, or a header without both columns.
    """
    source = Path(source)
    if source.is_dir():
        images = {p.stem: p for p in sorted(source.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
        stems = [s for s in sorted(images) if s.endswith("_1") and s[:-2] + "_2" in images]
        if not stems:
            raise BatchInputError(f"{source}: no <name>_1 / <name>_2 image pairs in this folder")
        return [
            Pair(
                images[s].name,
                images[s[:-2] + "_2"].name,
                images[s],
                images[s[:-2] + "_2"],
                index=i,
            )
            for i, s in enumerate(stems)
        ]
    if not source.is_file():
        raise BatchInputError(f"no such pairs table or folder: {source}")
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    try:
        with source.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip() for f in (reader.fieldnames or [])]
            if "image1" not in fields or "image2" not in fields:
                raise BatchInputError(
                    f"{source}: the header must name the columns image1,image2, got {fields}"
                )
            reader.fieldnames = fields
            others = list(dict.fromkeys(f for f in fields if f and f not in ("image1", "image2")))
            out = []
            for number, row in enumerate(reader, start=2):
                a, b = ((row.get(k) or "").strip() for k in ("image1", "image2"))
                i = len(out)
                extra = tuple((name, _text(row.get(name))) for name in others)
                if not a or not b:
                    why = f"line {number}: malformed row (needs image1 and image2)"
                    out.append(Pair(a, b, None, None, why, index=i, extra=extra))
                    continue
                p1, p2 = _resolve(source.parent, a), _resolve(source.parent, b)
                out.append(Pair(a, b, p1, p2, index=i, extra=extra))
    except UnicodeDecodeError as err:
        raise BatchInputError(f"{source}: not a UTF-8 CSV table ({err})") from err
    except csv.Error as err:
        raise BatchInputError(f"{source}: not a CSV table ({err})") from err
    if not out:
        raise BatchInputError(f"{source}: no pairs (a header and no rows)")
    return out


def _text(value: object) -> str:
    """A cell as text (a missing cell is empty; surplus cells, which csv gathers in a
    list, are joined back with commas)."""
    if value is None:
        return ""
    return ",".join(value) if isinstance(value, list) else str(value)


def _resolve(base: Path, text: str) -> Path:
    path = Path(text)
    return path if path.is_absolute() else base / path


def table_digest(table: Sequence[Pair]) -> str:
    """sha256 of a table's rows (the paths as written, each row's problem and its other
    columns, where it has any)."""
    text = json.dumps(
        [[p.image1, p.image2, p.problem] + ([list(p.extra)] if p.extra else []) for p in table]
    )
    return hashlib.sha256(text.encode()).hexdigest()
