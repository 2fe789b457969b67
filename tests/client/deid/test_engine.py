"""The engine on real files: nested sequences, private blocks, retired groups, file meta, options."""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Iterator

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from client.deid import Deidentifier, DeidOptions, DeidRejected, pseudonymize_uid
from client.deid.encode import encode_dataset
from client.deid.engine import IMPLEMENTATION_CLASS_UID
from client.deid.pseudonyms import KeyedPseudonyms


def _read(name: str) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = get_testdata_file(name)
        assert path is not None, name
        return pydicom.dcmread(path)


def _elements(ds: Dataset) -> Iterator[pydicom.DataElement]:
    for elem in ds:
        yield elem
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _elements(item)


def test_rt_plan_nested_sequences_are_cleaned_at_every_depth(secret: bytes) -> None:
    ds = _read("rtplan.dcm")
    before = [e for e in _elements(ds) if e.VR == "UI"]
    referenced = str(ds.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID)
    Deidentifier(secret, DeidOptions(require_pixel_data=False)).deidentify(ds)
    keys = KeyedPseudonyms(secret)
    for elem in _elements(ds):
        assert not elem.tag.is_private
        if elem.VR == "PN":
            assert elem.value in ("", None, "ANONYMIZED")
        if elem.VR == "UI" and elem.value:
            assert str(elem.value).startswith("1.2.840.10008.") or keys.is_own_uid(str(elem.value))
    new = ds.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID
    assert new == pseudonymize_uid(secret, referenced)
    assert len(before) > 5


def test_private_blocks_go_and_safe_private_stays_only_when_asked(secret: bytes) -> None:
    ds = _read("CT_small.dcm")
    block = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    block.add_new(0x0C, "IS", "1000")  # B_value: on the safe list
    block.add_new(0x10, "LO", "Technologist Quenby")  # not on the list
    nested = Dataset()
    nested.add_new(0x00290010, "LO", "ACME")
    nested.add_new(0x00291001, "LO", "Quenby")
    ds.ReferencedImageSequence = Sequence([nested])
    plain, safe = copy.deepcopy(ds), copy.deepcopy(ds)

    Deidentifier(secret).deidentify(plain)
    assert not any(e.tag.is_private for e in _elements(plain))

    Deidentifier(secret, DeidOptions(retain_safe_private=True)).deidentify(safe)
    kept = {e.tag: e.value for e in _elements(safe) if e.tag.is_private}
    creator_tag = block.get_tag(0x0C) & 0xFFFF0000 | (block.get_tag(0x0C) & 0xFF00) >> 8
    assert kept == {block.get_tag(0x0C): "1000", creator_tag: "SIEMENS MR HEADER"}
    codes = {item.CodeValue for item in safe.DeidentificationMethodCodeSequence}
    assert "113111" in codes


def test_overlays_curves_and_unknown_public_tags_are_removed(secret: bytes) -> None:
    ds = _read("MR-SIEMENS-DICOM-WithOverlays.dcm")
    assert any(0x6000 <= e.tag.group <= 0x60FF for e in ds)
    ds.add_new(0x50000010, "US", 2)
    ds.add_new(0x00709999, "UN", b"Quenby")
    outcome = Deidentifier(secret).deidentify(ds)
    assert not any(0x5000 <= e.tag.group <= 0x50FF or 0x6000 <= e.tag.group <= 0x60FF for e in ds)
    assert 0x00709999 not in ds
    assert outcome.actions["Overlay (60xx)"]["removed"] > 0


def test_file_meta_is_rebuilt_and_consistent(secret: bytes) -> None:
    ds = _read("CT_small.dcm")
    ds.file_meta.SourceApplicationEntityTitle = "QUENBY_WS"
    original_sop = str(ds.SOPInstanceUID)
    ds.preamble = b"Quenby".ljust(128, b"\x00")
    outcome = Deidentifier(secret).deidentify(ds)
    meta = ds.file_meta
    assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID == pseudonymize_uid(secret, original_sop)
    assert meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert "SourceApplicationEntityTitle" not in meta
    assert outcome.actions["SourceApplicationEntityTitle"] == {"removed": 1}
    blob = encode_dataset(ds)
    assert b"Quenby" not in blob and b"QUENBY" not in blob
    again = pydicom.dcmread(io.BytesIO(blob))
    assert again.file_meta.MediaStorageSOPInstanceUID == again.SOPInstanceUID


def test_marking_and_type_2_attributes(secret: bytes) -> None:
    ds = _read("CT_small.dcm")
    for keyword in ("PatientName", "StudyID", "AccessionNumber"):
        if keyword in ds:
            delattr(ds, keyword)
    del ds.StudyInstanceUID
    Deidentifier(secret, DeidOptions.for_profile("basic")).deidentify(ds)
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"
    assert [i.CodeValue for i in ds.DeidentificationMethodCodeSequence] == ["113100"]
    assert ds.PatientName == "" and ds.StudyID == "" and ds.AccessionNumber == ""
    assert KeyedPseudonyms(secret).is_own_uid(str(ds.StudyInstanceUID))
    assert "StudyDate" in ds and ds.StudyDate == ""


def test_options_keep_what_they_name(secret: bytes) -> None:
    ds = _read("CT_small.dcm")
    ds.InstitutionName = "Saint Elsewhere"
    ds.DeviceSerialNumber = "SN-1234"
    ds.StudyDescription = "CT HEAD for Quenby 2023-01-01"
    options = DeidOptions(
        retain_device_identity=True, retain_institution_identity=True, clean_descriptors=True
    )
    Deidentifier(secret, options).deidentify(ds)
    assert ds.InstitutionName == "Saint Elsewhere"
    assert ds.DeviceSerialNumber == "SN-1234"
    assert ds.StudyDescription == "CT HEAD"


def test_without_options_identity_and_descriptors_go(secret: bytes) -> None:
    ds = _read("CT_small.dcm")
    ds.InstitutionName = "Saint Elsewhere"
    ds.StudyDescription = "CT HEAD for Quenby"
    ds.PatientAge = "045Y"
    Deidentifier(secret, DeidOptions.for_profile("basic")).deidentify(ds)
    assert ds.InstitutionName == "ANONYMIZED"
    assert "StudyDescription" not in ds
    assert "PatientAge" not in ds


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("US1_UNCR.dcm", "burned-in text: modality US"),
        ("SC_rgb.dcm", "burned-in text: modality OT"),
    ],
)
def test_rejections_leave_the_data_set_alone(secret: bytes, name: str, reason: str) -> None:
    ds = _read(name)
    before = copy.deepcopy(ds)
    with pytest.raises(DeidRejected, match=reason) as info:
        Deidentifier(secret, DeidOptions(burned_in="reject")).deidentify(ds)
    assert info.value.exit_code == 3
    assert ds == before


def test_burned_in_annotation_yes_and_visual_features_are_rejected(secret: bytes) -> None:
    ds = _read("CT_small.dcm")
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(DeidRejected, match="Burned In Annotation is YES"):
        Deidentifier(secret, DeidOptions(burned_in="reject")).deidentify(ds)
    ds.RecognizableVisualFeatures = "YES"
    with pytest.raises(DeidRejected, match="Recognizable Visual Features"):
        Deidentifier(secret, DeidOptions(burned_in="mask", mask_regions=((0, 0, 1, 1),))).deidentify(ds)


def test_outcome_names_no_values(secret: bytes) -> None:
    ds = _read("CT_small.dcm")
    ds.PatientName = "Quenby^Ann"
    outcome = Deidentifier(secret).deidentify(ds)
    text = repr(outcome.actions)
    assert "Quenby" not in text
    assert outcome.actions["PatientName"] == {"emptied": 1}
    assert outcome.patient_id == ds.PatientID and outcome.dates_shifted
