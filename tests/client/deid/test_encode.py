"""The fast encoder writes exactly what pydicom's ``save_as(enforce_file_format=True)`` writes."""

from __future__ import annotations

import io
import warnings

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

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


@pytest.mark.parametrize(
    "transfer_syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]
)
def test_decoded_values_are_written_as_pydicom_writes_them(transfer_syntax: str) -> None:
    """Values the encoder writes itself (empty, ASCII, UIDs, integers) next to ones it hands over."""
    ds = FileDataset("decoded.dcm", Dataset(), file_meta=FileMetaDataset(), preamble=b"\x00" * 128)
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.file_meta.MediaStorageSOPInstanceUID = "2.25.123"
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = "2.25.123"  # odd length: NUL padded
    ds.StudyDate = "20230105"
    ds.Modality = "CT"
    ds.PatientName = ""  # empty person name
    ds.ReferringPhysicianName = "Doe^Jo"  # person name with components: pydicom's path
    ds.PatientID = "PSEUDO1"  # odd length: space padded
    ds.InstitutionName = "Hôpital Lariboisière"  # not ASCII: pydicom's path, UTF-8
    ds.StudyDescription = None  # no value
    ds.ImageType = ["ORIGINAL", "PRIMARY"]  # several values: pydicom's path
    ds.Rows, ds.Columns = 512, 300  # US, in the file's byte order
    ds.add_new(0x00280106, "SS", -1024)  # a signed integer
    ds.ReferencedFrameNumber = 7  # IS from an int
    ds.add_new(0x00181160, "SH", "")  # empty short string
    ds.PixelRepresentation = 1
    syntax = UID(transfer_syntax)
    # as if read from a file in this transfer syntax, so that the encoder's own path is taken
    ds.set_original_encoding(syntax.is_implicit_VR, syntax.is_little_endian, "utf-8")
    expected = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(expected, enforce_file_format=True)
    assert encode_dataset(ds) == expected.getvalue()
    ds.add_new(0x00280011, "US", 70000)  # out of range for US: refused, as pydicom refuses it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(OSError, match="0028,0011"):
            encode_dataset(ds)
