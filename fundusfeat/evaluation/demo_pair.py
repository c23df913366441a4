"""How the embedded demo pair (:mod:`fundusfeat.io.demo`) was made: a fixed warp and
photometric change of one fundus photograph, deterministic, so the pair is reproducible.

Coordinates: pixel (x, y), the centre of the top-left pixel at (0, 0). ``H`` maps points
of view A onto view B: ``p_b ~ H @ [x_a, y_a, 1]``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from fundusfeat.geometry.homography import about_centre
from fundusfeat.io.arrays import resize_long_side, to_uint8
from fundusfeat.io.demo import DEMO_SIZE, FILE_A, FILE_B, FILE_META
from fundusfeat.training.warps import Photometric, apply_photometric

JPEG_QUALITY = 90


@dataclass(frozen=True)
class DemoPairSpec:
    """The fixed warp and photometric change that turn view A into view B.

    Attributes:
        rotation_deg: in-plane rotation about the image centre (degrees, counter-clockwise
            as displayed, the sign convention of ``cv2.getRotationMatrix2D``).
        scale: isotropic scale about the image centre.
        translation: (tx, ty) shift as a fraction of (width, height).
        perspective: (px, py) perspective coefficients times the long side.
        gamma: exponent applied to intensities in [0, 1] (< 1 brightens mid-tones).
        contrast: contrast factor about the mean intensity.
        brightness: additive offset in [0, 1] units.
        color_gain: per-channel (B, G, R) gain, a colour cast.
        blur_sigma: Gaussian blur sigma (pixels).
    """

    rotation_deg: float = 10.0
    scale: float = 0.95
    translation: tuple[float, float] = (0.05, -0.04)
    perspective: tuple[float, float] = (0.04, -0.03)
    gamma: float = 0.8
    contrast: float = 1.15
    brightness: float = 0.03
    color_gain: tuple[float, float, float] = (0.85, 1.0, 1.08)
    blur_sigma: float = 1.0


DEMO_SPEC = DemoPairSpec()


def demo_homography(width: int, height: int, spec: DemoPairSpec = DEMO_SPEC) -> np.ndarray:
    """The demo warp for an image of ``width`` x ``height`` pixels.

    Returns:
        (3, 3) float64 homography mapping view-A pixels to view-B pixels, ``H[2, 2] == 1``.
    """
    rotation_scale = np.eye(3)
    rotation_scale[:2] = cv2.getRotationMatrix2D((0.0, 0.0), spec.rotation_deg, spec.scale)
    tilt = np.eye(3)
    tilt[2, :2] = np.asarray(spec.perspective) / float(max(width, height))
    shift = (spec.translation[0] * width, spec.translation[1] * height)
    return about_centre(rotation_scale @ tilt, width, height, shift)


def _photometric(image: np.ndarray, spec: DemoPairSpec) -> np.ndarray:
    """Apply the fixed photometric change to a (H, W, 3) uint8 BGR image; returns uint8."""
    change = Photometric(
        gamma=spec.gamma,
        contrast=spec.contrast,
        offset=spec.brightness,
        cast=spec.color_gain,
        blur_sigma=spec.blur_sigma,
    )
    return to_uint8(apply_photometric(image, change))


def make_demo_pair(
    image: np.ndarray, spec: DemoPairSpec = DEMO_SPEC, long_side: int = DEMO_SIZE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Make the demo pair from a colour fundus photograph (deterministic, no randomness).

    Args:
        image: (H, W, 3) uint8 BGR photograph (e.g. ``cv2.imread`` of
            ``skimage.data.retina``'s file).
        spec: the warp and photometric change.
        long_side: view A is ``image`` resized to this long side (INTER_AREA to shrink).

    Returns:
        ``(a, b, H)``: view A and view B, both (h, w, 3) uint8 BGR of the same size,
        and the (3, 3) float64 homography mapping A pixels to B pixels.

    Raises:
        ValueError: if ``image`` is not an (H, W, 3) uint8 array.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError("image: expected an (H, W, 3) uint8 BGR array")
    if image.shape[2] != 3:
        raise ValueError(f"image: expected 3 channels, got shape {image.shape}")
    a = image.copy() if max(image.shape[:2]) == long_side else resize_long_side(image, long_side)[0]
    h, w = a.shape[:2]
    H = demo_homography(w, h, spec)
    warped = cv2.warpPerspective(
        a, H, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    return a, _photometric(warped, spec), H


def save_demo_pair(image: np.ndarray, directory: str | Path) -> None:
    """Make the demo pair from ``image`` and write the three data files into ``directory``.

    This is how ``fundusfeat/data`` was made, from ``../shared/data/retina.jpg``::

        python -c "import cv2; from fundusfeat.evaluation.demo_pair import save_demo_pair; \\
            save_demo_pair(cv2.imread('../shared/data/retina.jpg'), 'fundusfeat/data')"
    """
    a, b, H = make_demo_pair(image)
    directory = Path(directory)
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    for name, img in ((FILE_A, a), (FILE_B, b)):
        if not cv2.imwrite(str(directory / name), img, params):
            raise OSError(f"could not write {directory / name}")
    meta = {
        "H": H.tolist(),
        "H_convention": "maps retina_a.jpg pixels (x, y) onto retina_b.jpg pixels",
        "width": a.shape[1],
        "height": a.shape[0],
        "spec": asdict(DEMO_SPEC),
        "source": "skimage.data.retina (Wikimedia Commons), CC0",
    }
    (directory / FILE_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
