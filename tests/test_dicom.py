"""DICOM ophthalmic photographs in: RGB / YBR_FULL_422 / MONOCHROME2, 8 and 16 bit,
multi-frame files, no pixel data, no patient data kept, visit order by date."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import FileDataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

from fundusfeat.io.dicom import (  # noqa: E402
    is_dicom,
    read_dicom,
    read_dicom_info,
    visit_order,
)
from fundusfeat.io.images import read_image  # noqa: E402

OPHTHALMIC_PHOTOGRAPHY_8BIT = "1.2.840.10008.5.1.4.1.1.77.1.5.1"


def _dataset(path: Path) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = OPHTHALMIC_PHOTOGRAPHY_8BIT
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = OPHTHALMIC_PHOTOGRAPHY_8BIT
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OP"
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "SECRET-123"
    ds.PatientBirthDate = "19500101"
    return ds


def _gradient(h: int = 24, w: int = 32) -> np.ndarray:
    """(h, w, 3) uint8 RGB with distinct channels."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 90)], -1).astype(
        np.uint8
    )


def write_rgb(
    path: Path,
    rgb: np.ndarray,
    *,
    bits: int = 8,
    frames: int = 1,
    date: str = "20240105",
    time: str = "101500",
    spacing: tuple[float, float] | None = (0.01, 0.012),
    pixels: bool = True,
) -> Path:
    """A DICOM file of ``rgb`` ((h, w, 3) RGB at ``bits`` bits stored)."""
    ds = _dataset(path)
    h, w = rgb.shape[:2]
    ds.Rows, ds.Columns = h, w
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8 if bits <= 8 else 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.AcquisitionDate, ds.AcquisitionTime = date, time
    ds.ImageLaterality = "R"
    if spacing is not None:
        ds.PixelSpacing = list(spacing)
    arr = rgb.astype(np.uint8 if bits <= 8 else np.uint16)
    if frames > 1:
        ds.NumberOfFrames = frames
        arr = np.stack([arr] * frames)
    if pixels:
        ds.PixelData = arr.tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def test_rgb_8bit_reads_as_bgr(tmp_path):
    rgb = _gradient()
    path = write_rgb(tmp_path / "visit.dcm", rgb)
    assert is_dicom(path)
    img = read_dicom(path)
    assert img.dtype == np.uint8 and img.shape == (24, 32, 3)
    np.testing.assert_array_equal(img, rgb[..., ::-1])
    # read_image dispatches by content, whatever the file's name
    renamed = path.rename(tmp_path / "visit_without_suffix")
    np.testing.assert_array_equal(read_image(renamed), rgb[..., ::-1])


def test_16bit_is_scaled_by_bits_stored(tmp_path):
    rgb8 = _gradient()
    rgb12 = (rgb8.astype(np.uint32) * 4095 // 255).astype(np.uint16)
    img = read_dicom(write_rgb(tmp_path / "v12.dcm", rgb12, bits=12))
    assert img.dtype == np.uint8
    assert np.abs(img.astype(int) - rgb8[..., ::-1].astype(int)).max() <= 1
    rgb16 = (rgb8.astype(np.uint32) * 65535 // 255).astype(np.uint16)
    img16 = read_dicom(write_rgb(tmp_path / "v16.dcm", rgb16, bits=16))
    assert np.abs(img16.astype(int) - rgb8[..., ::-1].astype(int)).max() <= 1


def test_ybr_full_422_is_converted_to_bgr(tmp_path):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:] = (200, 60, 40)  # a reddish flat image: 4:2:2 subsampling loses nothing
    ycrcb = cv2.cvtColor(rgb[None, :, :, :][0], cv2.COLOR_RGB2YCrCb)  # Y, Cr, Cb
    y, cr, cb = ycrcb[..., 0], ycrcb[..., 1], ycrcb[..., 2]
    # YBR_FULL_422 stores Y0 Y1 Cb Cr per two pixels (PS3.5 8.2.1)
    packed = np.empty((16, 8, 4), np.uint8)
    packed[..., 0], packed[..., 1] = y[:, 0::2], y[:, 1::2]
    packed[..., 2], packed[..., 3] = cb[:, 0::2], cr[:, 0::2]
    path = tmp_path / "ybr.dcm"
    ds = _dataset(path)
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 16, 16, 3
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = packed.tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    img = read_dicom(path)
    assert img.shape == (16, 16, 3)
    assert np.abs(img.astype(int) - np.array([40, 60, 200])).max() <= 3, img[0, 0]


def test_monochrome2_gives_three_equal_channels(tmp_path):
    path = tmp_path / "mono.dcm"
    ds = _dataset(path)
    gray = _gradient()[..., 0]
    ds.Rows, ds.Columns, ds.SamplesPerPixel = *gray.shape, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = gray.tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    img = read_dicom(path)
    for c in range(3):
        np.testing.assert_array_equal(img[..., c], gray)


def test_multi_frame_needs_a_frame(tmp_path):
    path = write_rgb(tmp_path / "multi.dcm", _gradient(), frames=3)
    with pytest.raises(ValueError, match="3 frames"):
        read_dicom(path)
    np.testing.assert_array_equal(read_dicom(path, frame=2), _gradient()[..., ::-1])
    with pytest.raises(ValueError, match="frame"):
        read_dicom(path, frame=3)
    with pytest.raises(TypeError, match="frame"):
        read_dicom(path, frame="1")


def test_no_pixel_data_is_a_clear_error(tmp_path):
    path = write_rgb(tmp_path / "header.dcm", _gradient(), pixels=False)
    with pytest.raises(ValueError, match="without pixel data"):
        read_image(path)


def test_a_non_dicom_dcm_file_names_the_file(tmp_path):
    path = tmp_path / "fake.dcm"
    path.write_bytes(b"not a dicom file at all")
    with pytest.raises(ValueError, match="fake.dcm"):
        read_image(path)


def test_info_keeps_no_patient_data(tmp_path):
    path = write_rgb(tmp_path / "v.dcm", _gradient(), date="20230301", time="093000.5")
    info = read_dicom_info(path)
    assert info.pixel_spacing == (0.01, 0.012)
    assert info.acquired.isoformat() == "2023-03-01T09:30:00.500000"
    assert info.laterality == "R" and info.frames == 1 and info.shape == (24, 32)
    text = repr(info) + repr(info.to_dict())
    for secret in ("Doe", "Jane", "SECRET", "1950"):
        assert secret not in text


def test_visit_order_by_acquisition_date(tmp_path):
    a = write_rgb(tmp_path / "a.dcm", _gradient(), date="20240301")
    b = write_rgb(tmp_path / "b.dcm", _gradient(), date="20220115")
    c = write_rgb(tmp_path / "c.dcm", _gradient(), date="20230610", time="")
    assert visit_order([a, b, c]) == [1, 2, 0]
    png = tmp_path / "d.png"
    cv2.imwrite(str(png), _gradient())
    assert visit_order([a, png, b]) == [0, 1, 2]  # not all DICOM: the order given
