"""A synthetic longitudinal cohort on disk: visits of each eye and a table of all pairs.

Each source photograph is an eye; each visit is the photograph under an independent
random ``easy`` warp and photometric change (a follow-up: the camera a little elsewhere,
other light). The table pairs every two visits of an eye (``v (v - 1) / 2`` pairs per
eye, each image in ``v - 1`` pairs), as a study that registers all visits to each other
does. It feeds ``fundusfeat register-batch`` benchmarks and tests.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from fundusfeat.evaluation.synthetic import PRESETS, make_synthetic_pair
from fundusfeat.io.arrays import resize_long_side

STREAM_TAG = 0xC0407
"""Second entropy word of the cohort's seed sequence."""


def make_cohort(
    sources: Sequence[np.ndarray],
    visits: int,
    folder: str | Path,
    seed: int = 0,
    long_side: int | None = 768,
) -> Path:
    """Write the visits as JPEG files and ``pairs.csv`` (columns ``image1,image2``).

    Args:
        sources: (H, W, 3) uint8 BGR photographs, one per eye.
        visits: visits per eye (>= 2).
        folder: where the files go (created).
        seed: the cohort's seed.
        long_side: visits are resized to this long side (None: the source size).

    Returns:
        The path of ``pairs.csv``.
    """
    if visits < 2 or not sources:
        raise ValueError("a cohort needs at least one eye and two visits")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    seeds = np.random.SeedSequence([int(seed), STREAM_TAG]).spawn(len(sources) * visits)
    rows = []
    for eye, source in enumerate(sources):
        if long_side is not None:
            source = resize_long_side(source, long_side)[0]
        names = []
        for visit in range(visits):
            image = make_synthetic_pair(source, PRESETS["easy"], seeds[eye * visits + visit]).image2
            name = f"eye{eye:02d}_visit{visit:02d}.jpg"
            if not cv2.imwrite(str(folder / name), image, [cv2.IMWRITE_JPEG_QUALITY, 92]):
                raise OSError(f"cannot write {folder / name}")
            names.append(name)
        rows += list(itertools.combinations(names, 2))
    table = folder / "pairs.csv"
    with table.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image1", "image2"])
        writer.writerows(rows)
    return table
