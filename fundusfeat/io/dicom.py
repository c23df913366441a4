"""DICOM ophthalmic photographs in (optional extra ``dicom``: ``pip install fundusfeat[dicom]``).

Read with :mod:`pydicom`: RGB, YBR_FULL, YBR_FULL_422 and MONOCHROME1/2 photometric
interpretations, 8 to 16 bits stored (scaled to uint8 by ``BitsStored``), one frame or
one chosen frame of a multi-frame file. The pixels come out as ``(H, W, 3)`` uint8 BGR like
:func:`fundusfeat.io.images.read_image`. What fundusfeat keeps of the header is
:class:`DicomInfo`: pixel spacing, acquisition date and time, laterality and the number of
frames. Patient data (name, identifiers, birth date, ...) is never read into it, so it is
never written into outputs.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
"""File suffixes treated as DICOM (a file with ``DICM`` at byte 128 is DICOM whatever its name)."""

_PREAMBLE = 128


def is_dicom(path: str | Path, data: bytes | None = None) -> bool:
    """Whether ``path`` (or its bytes ``data``) is a DICOM Part-10 file (``DICM`` at 128)."""
    if data is None:
        try:
            with open(path, "rb") as fh:
                data = fh.read(_PREAMBLE + 4)
        except OSError:
            return False
    return data[_PREAMBLE : _PREAMBLE + 4] == b"DICM"


def _pydicom() -> Any:
    try:
        import pydicom
    except ImportError as err:  # pragma: no cover - the extra is installed in CI
        raise ImportError("reading DICOM needs pydicom: pip install 'fundusfeat[dicom]'") from err
    return pydicom


@dataclass(frozen=True)
class DicomInfo:
    """What fundusfeat uses of a DICOM header (no patient data).

    Attributes:
        pixel_spacing: ``(row, column)`` spacing in mm per pixel (``PixelSpacing``, else
            ``ImagerPixelSpacing``), or None.
        acquired: acquisition date and time (``AcquisitionDateTime``, else
            ``AcquisitionDate`` + ``AcquisitionTime``, else the content, series or study
            date), or None.
        laterality: ``"R"``, ``"L"`` or ``""`` (``ImageLaterality``, else ``Laterality``).
        frames: number of frames.
        photometric: the photometric interpretation, e.g. ``"RGB"``.
        bits_stored: bits per sample.
        shape: ``(rows, columns)``.
    """

    pixel_spacing: tuple[float, float] | None
    acquired: _dt.datetime | None
    laterality: str
    frames: int
    photometric: str
    bits_stored: int
    shape: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields (the date as ISO 8601)."""
        return {
            "pixel_spacing_mm": list(self.pixel_spacing) if self.pixel_spacing else None,
            "acquired": self.acquired.isoformat() if self.acquired else None,
            "laterality": self.laterality,
            "frames": self.frames,
            "photometric": self.photometric,
            "bits_stored": self.bits_stored,
            "shape": list(self.shape),
        }


def _parse_datetime(date: str, time: str = "") -> _dt.datetime | None:
    """DICOM DA (``YYYYMMDD``) + TM (``HHMMSS.FFFFFF``, parts optional) or DT, or None."""
    date = str(date or "").strip()
    time = str(time or "").strip()
    if len(date) > 8 and not time:  # DT: YYYYMMDDHHMMSS.FFFFFF&ZZXX
        date, time = date[:8], date[8:]
    for sign in "+-":
        time = time.split(sign, 1)[0]
    if len(date) != 8 or not date.isdigit():
        return None
    try:
        day = _dt.datetime.strptime(date, "%Y%m%d")
    except ValueError:
        return None
    whole, _, frac = time.partition(".")
    whole = whole.replace(":", "")
    if not whole.isdigit() and whole:
        return day
    hh, mm, ss = int(whole[0:2] or 0), int(whole[2:4] or 0), int(whole[4:6] or 0)
    micro = int((frac + "000000")[:6]) if frac.isdigit() else 0
    try:
        return day.replace(hour=hh, minute=mm, second=ss, microsecond=micro)
    except ValueError:
        return day


def _info(ds: Any) -> DicomInfo:
    spacing = None
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(key)
        if value is not None and len(value) == 2:
            try:
                row, col = float(value[0]), float(value[1])
            except (TypeError, ValueError):
                continue
            if row > 0 and col > 0:
                spacing = (row, col)
                break
    acquired = None
    if ds.get("AcquisitionDateTime"):
        acquired = _parse_datetime(ds.AcquisitionDateTime)
    for date_key, time_key in (
        ("AcquisitionDate", "AcquisitionTime"),
        ("ContentDate", "ContentTime"),
        ("SeriesDate", "SeriesTime"),
        ("StudyDate", "StudyTime"),
    ):
        if acquired is None and ds.get(date_key):
            acquired = _parse_datetime(ds.get(date_key), ds.get(time_key, ""))
    laterality = str(ds.get("ImageLaterality", "") or ds.get("Laterality", "") or "").upper()
    return DicomInfo(
        pixel_spacing=spacing,
        acquired=acquired,
        laterality=laterality if laterality in ("R", "L", "B") else "",
        frames=int(ds.get("NumberOfFrames", 1) or 1),
        photometric=str(ds.get("PhotometricInterpretation", "")),
        bits_stored=int(ds.get("BitsStored", ds.get("BitsAllocated", 8)) or 8),
        shape=(int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)),
    )


def _open(path: str | Path, *, pixels: bool) -> Any:
    pydicom = _pydicom()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        return pydicom.dcmread(str(path), stop_before_pixels=not pixels)
    except Exception as err:  # pydicom raises InvalidDicomError, OSError, ValueError...
        raise ValueError(f"not a readable DICOM file: {path}: {err}") from err


def read_dicom_info(path: str | Path) -> DicomInfo:
    """The :class:`DicomInfo` of a DICOM file (pixels not read).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if it is not a readable DICOM file.
    """
    return _info(_open(path, pixels=False))


def _to_uint8(arr: np.ndarray, bits: int) -> np.ndarray:
    if arr.dtype == np.uint8 and bits <= 8:
        return arr
    top = float(2 ** min(max(bits, 1), 16) - 1)
    scaled = np.asarray(arr, np.float64) * (255.0 / top)
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


def read_dicom(path: str | Path, frame: int | None = None) -> np.ndarray:
    """Read a DICOM photograph as ``(H, W, 3)`` uint8 BGR.

    Args:
        path: a DICOM file.
        frame: which frame of a multi-frame file (0-based); None for a single-frame file.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: not a readable DICOM file, no pixel data, a multi-frame file without
            ``frame`` (the message gives the number of frames), ``frame`` out of range, or an
            unsupported photometric interpretation. Every message names the file.
        TypeError: ``frame`` is not an int.
    """
    if frame is not None and (isinstance(frame, bool) or not isinstance(frame, int | np.integer)):
        raise TypeError(f"frame: expected int or None, got {type(frame).__name__}")
    ds = _open(path, pixels=True)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ValueError(f"not a readable image: {path}: DICOM file without pixel data")
    info = _info(ds)
    if info.frames > 1 and frame is None:
        raise ValueError(
            f"{path}: multi-frame DICOM ({info.frames} frames): choose one with "
            "frame= (CLI: --frame N, 0-based)"
        )
    if frame is not None and not 0 <= int(frame) < info.frames:
        raise ValueError(f"frame: expected 0 <= frame < {info.frames} for {path}, got {frame}")
    try:
        arr = np.asarray(ds.pixel_array)
    except Exception as err:  # missing decoder for a compressed transfer syntax, bad length
        raise ValueError(f"not a readable image: {path}: cannot decode pixel data: {err}") from err
    if info.frames > 1:
        arr = arr[int(frame or 0)]
    photometric = info.photometric.upper()
    if photometric.startswith("YBR") and arr.ndim == 3:
        # pydicom >= 3 already converts YBR to RGB in pixel_array; older versions do not.
        if not _converted_to_rgb(ds):
            from pydicom.pixels import convert_color_space

            arr = convert_color_space(arr, photometric, "RGB")
        photometric = "RGB"
    if arr.ndim == 2:
        gray = _to_uint8(arr, info.bits_stored)
        if photometric == "MONOCHROME1":
            gray = 255 - gray
        return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(
            f"not a readable image: {path}: unsupported pixel layout {arr.shape} "
            f"({info.photometric})"
        )
    if photometric not in ("RGB", "YBR_FULL", "YBR_FULL_422"):
        raise ValueError(f"not a readable image: {path}: unsupported photometric {photometric}")
    rgb = _to_uint8(arr, info.bits_stored)
    return np.ascontiguousarray(rgb[..., ::-1])


def _converted_to_rgb(ds: Any) -> bool:
    """Whether this pydicom's ``pixel_array`` converts YBR to RGB itself (pydicom >= 3)."""
    pydicom = _pydicom()
    major = int(str(pydicom.__version__).split(".")[0])
    return major >= 3


def visit_infos(paths: Sequence[str | Path]) -> list[DicomInfo | None]:
    """:func:`read_dicom_info` of each DICOM file among ``paths`` (None for other files),
    each header read once."""
    return [read_dicom_info(p) if is_dicom(p) else None for p in paths]


def visit_order(
    paths: Sequence[str | Path], infos: Sequence[DicomInfo | None] | None = None
) -> list[int]:
    """Indices of ``paths`` in visit order.

    DICOM files are ordered by their acquisition date and time (:class:`DicomInfo`); the
    order is kept as given when any file is not DICOM or has no date (a stable sort keeps
    files of the same date in the given order).

    Args:
        paths: the files.
        infos: their :func:`visit_infos` when already read (None reads them).

    Returns:
        A permutation of ``range(len(paths))``.
    """
    infos = visit_infos(paths) if infos is None else infos
    if any(info is None or info.acquired is None for info in infos):
        return list(range(len(paths)))
    return sorted(range(len(paths)), key=lambda k: infos[k].acquired)


def dicom_paths(paths: Iterable[str | Path]) -> list[Path]:
    """The DICOM files among ``paths`` (by content, not by name)."""
    return [Path(p) for p in paths if is_dicom(p)]
