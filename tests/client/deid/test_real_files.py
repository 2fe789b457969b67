"""Acceptance on a PACS-like export of real files (tests/client/deid/conftest.py) with the defaults:
every file, image or not, is written or rejected for a documented reason; what comes out parses,
keeps the stored bits of its pixels (unless its burned-in text was masked), carries only valid keyed
UIDs that still point at each other across objects, and holds no planted PHI - no name, ID, date or
time - and no original value of any attribute the profile does not keep; nor does the report."""

from __future__ import annotations

import datetime as dt
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from client.deid import DeidOptions, deidentify_folder, patient_pseudonym, pseudonymize_uid
from client.deid.burned_in import burned_in_reason
from client.deid.encode import encode_dataset
from client.deid.engine import Deidentifier
from client.deid.profile import KEEP, RECURSE, compile_rules
from client.deid.pseudonyms import KeyedPseudonyms

# The inputs include deliberately odd files (invalid UIDs, wrong VRs): pydicom warns about them.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SECRET = bytes(range(1, 33))  # the conftest's secret
PHI_FOLDER = "SMITHWICK_JOHNATHAN_MRN99812345"  # the conftest's patient-named folder
UID_FORMAT = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
KEYS = KeyedPseudonyms(SECRET)
RULES = compile_rules(DeidOptions())
ALLOWED_REJECTIONS = {
    "burned-in text",
    "DICOMDIR",
    "truncated",
    "invalid",
    "truncated or corrupt",
    "encapsulated document",
    "raw data",
    "waveform with free text",
}
REFUSED_KINDS = ("PDF_", "RAW_", "ECG_")  # the generated objects that must be refused
REFUSED_REASONS = ("encapsulated document:", "raw data:", "waveform with free text:")


def _values(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, MultiValue | list | tuple):
        return [str(v) for v in value if v not in (None, "")]
    return [str(value)]


def _walk(ds: Dataset) -> Iterator[tuple[int, str, Any]]:
    for elem in ds:
        yield elem.tag, elem.VR, elem.value
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _walk(item)


def _kept_by_profile(tag: int, vr: str) -> bool:
    """Whether the default profile keeps this attribute's value unchanged (table or VR rule)."""
    group = tag >> 16
    if group & 1 or 0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF:
        return False
    rule = RULES.get(tag)
    if rule is not None:
        return rule.action in (KEEP, RECURSE)
    return vr not in ("PN", "DA", "DT", "UI", "UN")


@pytest.fixture(scope="module")
def default_run(planted_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("deid-default")
    report = deidentify_folder(planted_dir, out, SECRET, DeidOptions(), workers=2)
    return out, report


def _inputs(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _stored_bits(ds: Dataset) -> bytes:
    """The pixel data with every bit outside Bits Stored/High Bit cleared (native data), else as is."""
    import numpy as np

    data = ds.PixelData
    bits, stored = int(ds.get("BitsAllocated", 8)), int(ds.get("BitsStored", 8))
    if ds.file_meta.TransferSyntaxUID.is_compressed or bits not in (16, 32) or stored >= bits:
        return bytes(data)
    high = int(ds.get("HighBit", stored - 1))
    order = "<" if ds.file_meta.TransferSyntaxUID.is_little_endian else ">"
    usable = len(data) - len(data) % (bits // 8)
    values = np.frombuffer(data[:usable], dtype=f"{order}u{bits // 8}")
    mask = ((1 << stored) - 1) << (high - stored + 1)
    return (values & values.dtype.type(mask)).astype(values.dtype).tobytes() + bytes(data[usable:])


def _output_for(out: Path, ds: Dataset) -> Path | None:
    sop = ds.get("SOPInstanceUID") or ds.file_meta.get("MediaStorageSOPInstanceUID")
    new_sop = pseudonymize_uid(SECRET, str(sop))
    found = list(out.glob(f"*/*/{new_sop}.dcm"))
    return found[0] if found else None


def test_every_file_is_written_or_rejected_with_a_documented_reason(
    planted_dir: Path, default_run: tuple[Path, Any], read_dicom: Any
) -> None:
    read_ok = read_dicom
    out, report = default_run
    inputs = _inputs(planted_dir)
    assert len(inputs) >= 226  # the size of the export the issue was found on
    assert report.files_seen == len(inputs)
    assert report.files_written + report.files_rejected == report.files_seen
    assert {r.category for r in report.rejections} <= ALLOWED_REJECTIONS
    assert report.duplicates == 0
    rejected = {r.path: r.reason for r in report.rejections}
    non_images = 0
    for path in inputs:
        name = path.relative_to(planted_dir).as_posix()
        ds = read_ok(path)
        assert ds is not None
        if path.name.startswith(REFUSED_KINDS):
            assert name in rejected, f"{name} was not refused"
            continue
        if rejected.get(name, "").startswith(REFUSED_REASONS):  # pydicom's ECG has typed annotations
            continue
        readable = "SOPInstanceUID" in ds and "TransferSyntaxUID" in ds.file_meta
        broken = "truncated" in name or "too_short" in name or "DICOMDIR" in name
        if not readable or broken or "burned-in" in rejected.get(name, ""):
            continue
        assert name not in rejected, f"{name} was rejected: {rejected[name]}"
        assert _output_for(out, ds) is not None
        non_images += "PixelData" not in ds
    assert non_images >= 30  # SR, KOS, PR, SEG, RTSTRUCT, RT plans and doses: written, not refused
    # an ultrasound export is cleaned, not rejected wholesale: few burned-in rejections remain
    burned = [r for r in report.rejections if r.category == "burned-in text"]
    assert report.files_masked >= 15 and len(burned) <= 5, [r.reason for r in burned]


def test_outputs_parse_keep_pixels_and_carry_valid_keyed_uids(
    planted_dir: Path, default_run: tuple[Path, Any], read_dicom: Any
) -> None:
    read_ok = read_dicom
    out, report = default_run
    checked = images = 0
    for source in _inputs(planted_dir):
        ds_in = read_ok(source)
        assert ds_in is not None
        target = _output_for(out, ds_in)
        if target is None:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds_out = pydicom.dcmread(target)  # parseable, with a DICM file meta header
        checked += 1
        assert ds_out.file_meta.MediaStorageSOPInstanceUID == ds_out.SOPInstanceUID
        assert ds_out.file_meta.MediaStorageSOPClassUID == ds_out.SOPClassUID
        assert ds_out.PatientIdentityRemoved == "YES"
        codes = {item.CodeValue for item in ds_out.DeidentificationMethodCodeSequence}
        masked = "113101" in codes
        assert codes - {"113101"} == {"113100", "113104", "113107", "113108"}
        if "PixelData" in ds_in and not masked:  # the stored values, bit for bit
            images += 1
            assert ds_out.file_meta.TransferSyntaxUID == ds_in.file_meta.TransferSyntaxUID
            assert _stored_bits(ds_out) == _stored_bits(ds_in), source.name
            assert ds_out.PixelData == _stored_bits(ds_in), source.name  # nothing above High Bit
        for tag, vr, value in _walk(ds_out):
            assert not (tag >> 16) & 1, f"private tag {tag:08X} left in {source.name}"
            group = tag >> 16
            assert not (0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF), f"{tag:08X} left"
            if vr == "UI":
                for uid in _values(value):
                    assert len(uid) <= 64 and UID_FORMAT.fullmatch(uid), (source.name, uid)
                    assert uid.startswith("1.2.840.10008.") or KEYS.is_own_uid(uid), (source.name, uid)
        for meta_elem in ds_out.file_meta:
            if meta_elem.VR == "UI":
                assert UID_FORMAT.fullmatch(str(meta_elem.value))
    assert checked == report.files_written
    assert checked >= 150 and images >= 80


def test_references_between_objects_still_resolve(planted_dir: Path, default_run: tuple[Path, Any]) -> None:
    """SR, KOS, PR, SEG and RTSTRUCT name their image by its new UID, and that image is in the output."""
    out, _ = default_run
    written = {p.stem: p for p in out.rglob("*.dcm")}
    seen = 0
    for source in sorted((planted_dir / PHI_FOLDER).glob("*_Smithwick.dcm")):
        if source.name.startswith(REFUSED_KINDS):
            continue
        ds_in = pydicom.dcmread(source)
        target = written.get(pseudonymize_uid(SECRET, str(ds_in.SOPInstanceUID)))
        assert target is not None, source.name
        ds_out = pydicom.dcmread(target)
        before = {str(e.value) for e in ds_in.iterall() if e.keyword == "ReferencedSOPInstanceUID"}
        after = {str(e.value) for e in ds_out.iterall() if e.keyword == "ReferencedSOPInstanceUID"}
        assert after == {pseudonymize_uid(SECRET, uid) for uid in before} and after
        assert any(uid in written for uid in after), source.name  # the referenced image was written
        assert ds_out.StudyInstanceUID == pseudonymize_uid(SECRET, str(ds_in.StudyInstanceUID))
        assert ds_out.PatientID == patient_pseudonym(SECRET, "MRN99812345")
        seen += 1
    assert seen == 30


def test_no_planted_phi_and_no_original_value_survives(
    planted_dir: Path, default_run: tuple[Path, Any], read_dicom: Any, phi_strings: tuple[str, ...]
) -> None:
    read_ok = read_dicom
    out, report = default_run
    phi = [s.encode("ascii") for s in phi_strings]
    document = report.to_json().lower()
    for needle in (*phi_strings, PHI_FOLDER, "Kildare", "Quenby"):
        assert needle.lower() not in document, needle  # the report names no file and no value
    for target in (p for p in out.rglob("*") if p.is_file()):  # every file the run wrote
        blob = target.read_bytes().lower()
        for needle in (*phi, PHI_FOLDER.encode(), b"kildare", b"quenby"):
            assert needle.lower() not in blob, (needle, target.name)
    for source in _inputs(planted_dir):
        ds_in = read_ok(source)
        assert ds_in is not None
        target = _output_for(out, ds_in)
        if target is None:
            continue
        blob = target.read_bytes()
        lowered = blob.lower()
        for needle in phi:
            assert needle.lower() not in lowered, f"{needle!r} survived in the output of {source.name}"
        kept_values = {
            v for tag, vr, value in _walk(ds_in) if _kept_by_profile(tag, vr) for v in _values(value)
        }
        for tag, vr, value in _walk(ds_in):
            if vr in ("SQ", "OB", "OW", "UN") or _kept_by_profile(tag, vr):
                continue
            for text in _values(value):
                text = text.strip()
                if vr == "UI" and text.startswith("1.2.840.10008."):
                    continue  # DICOM-defined UIDs (SOP classes, transfer syntaxes) are kept on purpose
                if len(text) < 6 or text == "ANONYMIZED" or any(text in kept for kept in kept_values):
                    continue  # too short to search for, or the same text is also in a kept attribute
                assert text.encode("utf-8", "ignore") not in blob, (source.name, f"{tag:08X}", text)


def test_dates_and_times_shift_by_the_patients_keyed_offset(
    planted_dir: Path, default_run: tuple[Path, Any], read_dicom: Any
) -> None:
    read_ok = read_dicom
    out, _ = default_run
    shift = KEYS.temporal_shift("MRN99812345")
    lone_date = (dt.date(2023, 1, 5) + dt.timedelta(days=shift.days)).strftime("%Y%m%d")
    lone_time = (dt.datetime(2000, 1, 1, 14, 30, 15) + dt.timedelta(seconds=shift.seconds)).strftime("%H%M%S")
    study = dt.datetime(2023, 1, 5, 14, 30, 15) + dt.timedelta(seconds=shift.total_seconds)
    acquired = dt.datetime(2023, 1, 6, 9, 15, 2) + dt.timedelta(seconds=shift.total_seconds)
    seen = reports = 0
    for source in _inputs(planted_dir):
        ds_in = read_ok(source)
        if ds_in is None or str(ds_in.get("PatientID", "")) != "MRN99812345":
            continue
        if source.name.startswith("SR_"):  # content items: a lone date moves by days, a lone time mod 24 h
            target = _output_for(out, ds_in)
            assert target is not None
            items = {i.ValueType: i for i in pydicom.dcmread(target).ContentSequence}
            assert items["DATE"].Date == lone_date and items["TIME"].Time == lone_time
            assert items["DATETIME"].DateTime == study.strftime("%Y%m%d%H%M%S")
            assert items["TEXT"].TextValue == "ANONYMIZED" and items["PNAME"].PersonName == "ANONYMIZED"
            reports += 1
            continue
        if ds_in.get("StudyTime") != "143015" or ds_in.get("AcquisitionTime") != "091502.250":
            continue
        target = _output_for(out, ds_in)
        if target is None:
            continue
        ds_out = pydicom.dcmread(target)
        assert ds_out.PatientID == patient_pseudonym(SECRET, "MRN99812345")
        assert (ds_out.StudyDate, ds_out.StudyTime) == (study.strftime("%Y%m%d"), study.strftime("%H%M%S"))
        assert ds_out.SeriesTime == ds_out.StudyTime != "143015"
        assert ds_out.AcquisitionDate == acquired.strftime("%Y%m%d")
        assert ds_out.AcquisitionTime == acquired.strftime("%H%M%S") + ".250"
        assert ds_out.PatientName == "" and ds_out.PatientBirthDate == ""
        seen += 1
    assert seen >= 50 and reports == 6


def test_suspect_files_are_masked_when_the_site_asks(
    tmp_path: Path, readable_files: list[Path], read_dicom: Any
) -> None:
    """Burned-in suspects (US, OT, secondary captures) come out under the mask policy, blanked where told."""
    import numpy as np

    read_ok = read_dicom
    region = (0, 0, 8, 4)
    deid = Deidentifier(SECRET, DeidOptions(burned_in="mask", mask_regions=(region,)))
    masked = 0
    for path in readable_files:
        ds = read_ok(path)
        if ds is None or "PixelData" not in ds or "SOPInstanceUID" not in ds or burned_in_reason(ds) is None:
            continue
        if "TransferSyntaxUID" not in ds.file_meta:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                before = ds.pixel_array.copy()
            except Exception:
                continue  # no decoder here for this syntax: the engine rejects it (tested below)
            deid.deidentify(ds)
            target = tmp_path / f"{masked}.dcm"
            target.write_bytes(encode_dataset(ds))
            after = pydicom.dcmread(target).pixel_array
        assert after.shape == before.shape
        view_before = before if int(ds.get("NumberOfFrames", 1) or 1) > 1 else before[np.newaxis]
        view_after = after if int(ds.get("NumberOfFrames", 1) or 1) > 1 else after[np.newaxis]
        assert not view_after[:, :4, :8].any()
        keep = np.ones(view_after.shape[:3], dtype=bool)
        keep[:, :4, :8] = False
        assert np.array_equal(view_after[keep], view_before[keep]), path.name
        codes = {item.CodeValue for item in ds.DeidentificationMethodCodeSequence}
        assert "113101" in codes
        masked += 1
    assert masked >= 30


def test_deidentifying_the_output_again_changes_no_byte(
    default_run: tuple[Path, Any], tmp_path: Path
) -> None:
    out, report = default_run
    again = deidentify_folder(out, tmp_path / "again", SECRET, DeidOptions(), workers=2)
    assert again.files_masked == 0  # this secret's cleaned outputs are not OCR'd again
    assert again.files_written == report.files_written and again.files_rejected == 0
    for first in out.rglob("*.dcm"):
        second = tmp_path / "again" / first.relative_to(out)
        assert second.read_bytes() == first.read_bytes(), first.name
