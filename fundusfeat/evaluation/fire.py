"""Loader for the FIRE dataset (Fundus Image Registration, Hernandez-Matas et al. 2017).

Layout as distributed::

    DIR/Images/{A,P,S}NN_1.jpg, {A,P,S}NN_2.jpg          2912 x 2912 colour photographs
    DIR/Ground Truth/control_points_{A,P,S}NN_1_2.txt    one row per control point:
                                                         "x_fixed y_fixed x_moving y_moving"

Image ``_1`` is the fixed image (our ``img1``) and ``_2`` the moving one (``img2``).
Control points are pixel ``(x, y)`` in the original images. The category is the first
letter of the pair name: S (high overlap), P (low overlap), A (anatomical changes).
"""

from __future__ import annotations

import logging
import re
from functools import partial
from pathlib import Path

import numpy as np

from fundusfeat.evaluation.pairs import EvalPair
from fundusfeat.io.images import read_image

logger = logging.getLogger(__name__)

IMAGES_DIR = "Images"
GROUND_TRUTH_DIR = "Ground Truth"
_GT_NAME = re.compile(r"^control_points_([A-Za-z]+\d+)_1_2\.txt$")


def read_control_points(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse a FIRE ground-truth file.

    Args:
        path: a ``control_points_XNN_1_2.txt`` file; rows of four numbers
            ``x_fixed y_fixed x_moving y_moving`` separated by spaces, tabs or commas.
            Blank lines are skipped.

    Returns:
        ``(points_fixed, points_moving)``: two (N, 2) float64 arrays, N >= 1.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: for a row that is not four finite numbers, or no rows at all.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FIRE ground-truth file not found: {path}")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.replace(",", " ").split()
        if not fields:
            continue
        try:
            values = [float(v) for v in fields]
        except ValueError:
            values = []
        if len(values) != 4 or not np.all(np.isfinite(values)):
            raise ValueError(
                f"{path}:{number}: expected 4 numbers 'x_fixed y_fixed x_moving y_moving', "
                f"got {line.strip()!r}"
            )
        rows.append(values)
    if not rows:
        raise ValueError(f"{path}: no control points")
    points = np.asarray(rows, dtype=np.float64)
    return points[:, :2], points[:, 2:]


def _load_images(image1: Path, image2: Path) -> tuple[np.ndarray, np.ndarray]:
    return read_image(image1), read_image(image2)


def _find_image(images: Path, stem: str) -> Path:
    for suffix in (".jpg", ".JPG", ".jpeg", ".png", ".tif"):
        candidate = images / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"FIRE image not found: {images / stem}.jpg")


def load_fire(directory: str | Path) -> list[EvalPair]:
    """List the pairs of a FIRE directory (images are read lazily by ``EvalPair.load``).

    Args:
        directory: the dataset root containing ``Images/`` and ``Ground Truth/``.

    Returns:
        The pairs sorted by name, one per ground-truth file.

    Raises:
        FileNotFoundError: if the directory, either sub-folder, or an image named by a
            ground-truth file is missing, or no ground-truth file is found.
        ValueError: if a ground-truth file is malformed.
    """
    root = Path(directory)
    images, truth = root / IMAGES_DIR, root / GROUND_TRUTH_DIR
    for folder in (root, images, truth):
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder} is not a directory; expected the FIRE layout "
                f"DIR/{IMAGES_DIR}/ and DIR/{GROUND_TRUTH_DIR}/"
            )
    pairs = []
    for gt in sorted(truth.iterdir()):
        match = _GT_NAME.match(gt.name)
        if match is None:
            logger.debug("skipping %s (not a control_points_XNN_1_2.txt file)", gt)
            continue
        name = match.group(1)
        fixed, moving = read_control_points(gt)
        image1, image2 = _find_image(images, f"{name}_1"), _find_image(images, f"{name}_2")
        pairs.append(
            EvalPair(
                name=name,
                category=name[0].upper(),
                points_fixed=fixed,
                points_moving=moving,
                load=partial(_load_images, image1, image2),
            )
        )
    if not pairs:
        raise FileNotFoundError(f"no control_points_XNN_1_2.txt files in {truth}")
    logger.info("FIRE: %d pairs in %s", len(pairs), root)
    return pairs
