"""The embedded demo pair: two views of one fundus photograph with a known homography.

``fundusfeat/data/retina_a.jpg`` is scikit-image's CC0 retina photograph resized to a long
side of :data:`DEMO_SIZE` pixels; ``retina_b.jpg`` is the same image under a fixed,
moderate projective warp and a fixed photometric change; ``demo_pair.json`` stores the
true homography. :mod:`fundusfeat.evaluation.demo_pair` is the code that made them.

Coordinates: pixel (x, y), x before y, the centre of the top-left pixel at (0, 0) (the
convention of ``cv2.warpPerspective``). ``H`` maps points of image A onto image B:
``p_b ~ H @ [x_a, y_a, 1]``.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

DEMO_SIZE = 768
"""Long side (pixels) of the embedded demo images."""

FILE_A, FILE_B, FILE_META = "retina_a.jpg", "retina_b.jpg", "demo_pair.json"


def photograph_path() -> Path:
    """The path of the embedded photograph (view A of the demo pair, scikit-image's CC0
    retina at 768 px): the image set that benchmark commands and examples fall back to
    when given none, so they run on a clone without the held-out images."""
    return Path(str(resources.files("fundusfeat").joinpath("data", FILE_A)))


def _read_data(name: str) -> bytes:
    return resources.files("fundusfeat").joinpath("data", name).read_bytes()


def _decode(name: str) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(_read_data(name), np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"fundusfeat/data/{name} is not a readable image")
    return img


def load_demo_pair() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Load the embedded demo pair.

    Returns:
        ``(img1, img2, H_true)``: view A and view B as (768, 768, 3) uint8 BGR (as
        ``cv2.imread`` gives) and the (3, 3) float64 homography mapping img1 pixels
        onto img2 pixels.
    """
    meta = json.loads(_read_data(FILE_META).decode("utf-8"))
    return _decode(FILE_A), _decode(FILE_B), np.asarray(meta["H"], dtype=np.float64)
