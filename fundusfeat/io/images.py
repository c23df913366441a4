"""Reading images and image sets (CLI, evaluation and training).

An image set is an image file, a directory (its image files, sorted by name, without
annotation masks named ``*_overlay.*`` / ``*_mask.*``) or a ``.txt`` list: one path per
line, ``#`` starts a comment, relative paths are relative to the list's folder
(``training/splits/val.txt`` is such a list).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".ppm", ".dcm", ".dicom"}
)
MASK_STEMS = ("_overlay", "_mask")

_JPEG_START, _JPEG_SCAN, _JPEG_END = b"\xff\xd8", b"\xff\xda", b"\xff\xd9"
_PNG_SIGNATURE, _PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"


def integrity_problem(data: bytes) -> str | None:
    """Why encoded image bytes are truncated or corrupt, or None when they look whole.

    OpenCV decodes a truncated JPEG or PNG without an error (the missing rows come out
    grey), so the container is checked first: a JPEG must have its end-of-image marker
    after its last scan, a PNG its ``IEND`` chunk. Other formats are left to OpenCV.
    """
    if data.startswith(_JPEG_START):
        if data.rfind(_JPEG_END) < data.rfind(_JPEG_SCAN) or _JPEG_END not in data:
            return "truncated or corrupt JPEG (no end-of-image marker after its last scan)"
    elif data.startswith(_PNG_SIGNATURE) and _PNG_END not in data[-64:]:
        return "truncated or corrupt PNG (no IEND chunk at its end)"
    return None


def read_image(path: str | Path, frame: int | None = None) -> np.ndarray:
    """Read a colour image as (H, W, 3) uint8 BGR.

    A DICOM file (``DICM`` at byte 128, or a ``.dcm``/``.dicom`` name) is read with
    :func:`fundusfeat.io.dicom.read_dicom` (optional extra ``dicom``); ``frame`` chooses
    the frame of a multi-frame DICOM file and is ignored for other formats.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if it is a folder, empty (0 bytes), truncated or corrupt
            (:func:`integrity_problem`) or OpenCV cannot decode it (the message names the
            file).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"not an image: {path} is a folder")
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    data = path.read_bytes()
    if not data:
        raise ValueError(f"not a readable image: {path}: empty file (0 bytes)")
    from fundusfeat.io.dicom import DICOM_SUFFIXES, is_dicom, read_dicom

    if is_dicom(path, data) or path.suffix.lower() in DICOM_SUFFIXES:
        return read_dicom(path, frame=frame)
    problem = integrity_problem(data)
    if problem is not None:
        raise ValueError(f"not a readable image: {path}: {problem}")
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as err:  # OpenCV asserts on some malformed buffers
        raise ValueError(f"not a readable image: {path}: decode error: {err.msg}") from err
    if img is None:
        raise ValueError(f"not a readable image: {path}")
    return img


def read_image_list(path: str | Path) -> list[Path]:
    """Paths named by a ``.txt`` list (comments and blank lines skipped).

    Raises:
        FileNotFoundError: if the list or a listed file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image list not found: {path}")
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        item = Path(entry) if Path(entry).is_absolute() else path.parent / entry
        if not item.is_file():
            raise FileNotFoundError(f"{path}:{number}: listed image not found: {item}")
        out.append(item)
    return out


def expand_image_args(args: Iterable[str | Path], unique: bool = True) -> list[Path]:
    """Expand files, directories and ``.txt`` lists into a list of image paths.

    Order is kept (directories sorted by file name); duplicates are dropped unless
    ``unique`` is False.

    Raises:
        FileNotFoundError: for a path that does not exist.
        ValueError: if nothing is left.
    """
    args = list(args)
    out: list[Path] = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            out += sorted(
                p
                for p in path.iterdir()
                if p.suffix.lower() in IMAGE_SUFFIXES and not p.stem.endswith(MASK_STEMS)
            )
        elif path.suffix.lower() == ".txt":
            out += read_image_list(path)
        elif path.is_file():
            out.append(path)
        else:
            raise FileNotFoundError(f"no such image, directory or list: {path}")
    found = list(dict.fromkeys(p.resolve() for p in out)) if unique else out
    if not found:
        raise ValueError("no images found in: " + ", ".join(map(str, args)))
    return found
