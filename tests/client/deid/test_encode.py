"""The fast encoder writes exactly what pydicom's ``save_as(enforce_file_format=True)`` writes."""

from __future__ import annotations

import io
import warnings

import pydicom
import pytest
from pydicom.data import get_testdata_file

from client.deid import Deidentifier, DeidOptions
from client.deid.encode import encode_dataset

NAMES = [
    "CT_small.dcm",  # explicit VR little endian, private tags
    "MR_small_implicit.dcm",  # implicit VR
    "MR_small_bigendian.dcm",  # explicit VR big endian
    "emri_small_jpeg_2k_lossless.dcm",  # encapsulated, enhanced MR functional groups
    "eCT_Supplemental.dcm",  # large nested sequences
    "rtdose_rle.dcm",  # RLE, multi-frame
    "MR2_J2KR.dcm",  # pydicom-data, JPEG 2000
    "liver.dcm",  # segmentation, nested sequences
    "test-SR.dcm",  # structured report, deep content tree (emptied) and references
    "rtplan.dcm",  # implicit VR, nested beam sequences
]


@pytest.mark.parametrize("name", NAMES)
def test_fast_path_matches_pydicom_byte_for_byte(name: str, secret: bytes) -> None:
    path = get_testdata_file(name)
    assert path is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        reference = pydicom.dcmread(path)
    deid = Deidentifier(secret, DeidOptions(require_pixel_data=False))
    deid.deidentify(ds)
    deid.deidentify(reference)
    buffer = io.BytesIO()
    reference.save_as(buffer, enforce_file_format=True)
    assert encode_dataset(ds) == buffer.getvalue()


def test_implicit_data_under_an_explicit_transfer_syntax_is_written(secret: bytes) -> None:
    """SC_rgb_jpeg.dcm declares explicit VR but is encoded implicit; pydicom cannot re-write it as is."""
    path = get_testdata_file("SC_rgb_jpeg.dcm")
    assert path is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        blob = encode_dataset(ds)
        again = pydicom.dcmread(io.BytesIO(blob))
    assert again.PixelData == ds.PixelData
    assert again.Modality == "OT"
