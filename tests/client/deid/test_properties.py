"""Invariants, checked with hypothesis on a real CT slice carrying generated PHI.

- de-identifying twice gives the same bytes as de-identifying once (a fixed point);
- two files that shared a UID still share one, and references between them still resolve;
- dates of one patient keep their intervals, across files;
- no generated name survives.
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import warnings
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from client.deid import Deidentifier, DeidOptions
from client.deid.encode import encode_dataset

SECRET = bytes(range(100, 132))
SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

OPTION_SETS = [
    DeidOptions(),
    DeidOptions.for_profile("basic"),
    DeidOptions(clean_descriptors=True, retain_safe_private=True),
    DeidOptions(retain_device_identity=True, retain_institution_identity=True),
]


def _background() -> bytes:
    """Bytes that are in the output whatever the PHI: the CT file itself and its de-identified forms
    (dummy values such as ``ANONYMIZED``, the method description). A generated "name" that is a
    substring of these (``ANON``, ``AXIAL``) is not PHI that survived."""
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    blobs = [Path(path).read_bytes()]
    for options in OPTION_SETS:
        ds = pydicom.dcmread(path)
        Deidentifier(SECRET, options).deidentify(ds)
        blobs.append(encode_dataset(ds))
    return b"\0".join(blobs)


BACKGROUND = _background()
names = st.text(alphabet=st.characters(min_codepoint=65, max_codepoint=90), min_size=4, max_size=12).filter(
    lambda n: n.encode() not in BACKGROUND and n[::-1].encode() not in BACKGROUND
)
dates = st.dates(min_value=dt.date(1950, 1, 1), max_value=dt.date(2035, 12, 31))
uids = st.lists(st.integers(min_value=1, max_value=10**9 - 1), min_size=3, max_size=5).map(
    lambda parts: "1.2.826.0.1." + ".".join(map(str, parts))
)
option_sets = st.sampled_from(OPTION_SETS)


@pytest.fixture(scope="module")
def ct() -> Dataset:
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    return pydicom.dcmread(path)


def _reread(blob: bytes) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(blob))


def _with_phi(
    ct: Dataset, name: str, patient_id: str, day: dt.date, sop: str, time: str = "101500"
) -> Dataset:
    ds = copy.deepcopy(ct)
    ds.PatientName = f"{name}^{name[::-1]}"
    ds.PatientID = patient_id
    ds.StudyDate = ds.SeriesDate = day.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = time
    ds.AcquisitionDateTime = day.strftime("%Y%m%d") + time
    ds.StudyDescription = f"CT HEAD for {name}"
    ds.SOPInstanceUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    return ds


@SETTINGS
@given(name=names, day=dates, sop=uids, options=option_sets)
def test_deidentifying_twice_is_deidentifying_once(
    ct: Dataset, name: str, day: dt.date, sop: str, options: DeidOptions
) -> None:
    deid = Deidentifier(SECRET, options)
    ds = _with_phi(ct, name, "ID" + name, day, sop)
    deid.deidentify(ds)
    once = encode_dataset(ds)
    again = _reread(once)
    deid.deidentify(again)
    assert encode_dataset(again) == once
    assert name.encode() not in once and name[::-1].encode() not in once


@SETTINGS
@given(study=uids, frame=uids, first=uids, second=uids, day=dates)
def test_shared_uids_stay_shared_and_references_resolve(
    ct: Dataset, study: str, frame: str, first: str, second: str, day: dt.date
) -> None:
    if first == second:
        return
    deid = Deidentifier(SECRET)
    a = _with_phi(ct, "ALPHA", "P1", day, first)
    b = _with_phi(ct, "BETA", "P2", day, second)
    for ds in (a, b):
        ds.StudyInstanceUID = study
        ds.FrameOfReferenceUID = frame
    reference = Dataset()
    reference.ReferencedSOPClassUID = a.SOPClassUID
    reference.ReferencedSOPInstanceUID = first
    b.SourceImageSequence = Sequence([reference])
    deid.deidentify(a)
    deid.deidentify(b)
    assert a.StudyInstanceUID == b.StudyInstanceUID != study
    assert a.FrameOfReferenceUID == b.FrameOfReferenceUID != frame
    assert a.SOPInstanceUID != b.SOPInstanceUID
    assert b.SourceImageSequence[0].ReferencedSOPInstanceUID == a.SOPInstanceUID
    assert b.SourceImageSequence[0].ReferencedSOPClassUID == a.SOPClassUID  # a DICOM-defined UID


@SETTINGS
@given(
    patient=names,
    first=st.datetimes(min_value=dt.datetime(1950, 1, 1), max_value=dt.datetime(2035, 12, 31)),
    gap=st.integers(min_value=0, max_value=4000 * 86_400),
    sop_a=uids,
    sop_b=uids,
)
def test_instants_of_a_patient_keep_their_intervals(
    ct: Dataset, patient: str, first: dt.datetime, gap: int, sop_a: str, sop_b: str
) -> None:
    first = first.replace(microsecond=0)
    second = first + dt.timedelta(seconds=gap)
    deid = Deidentifier(SECRET)
    a = _with_phi(ct, "ALPHA", patient, first.date(), sop_a, first.strftime("%H%M%S"))
    b = _with_phi(ct, "ALPHA", patient, second.date(), sop_b, second.strftime("%H%M%S"))
    deid.deidentify(a)
    deid.deidentify(b)

    def instant(date: str, time: str) -> dt.datetime:
        return dt.datetime.strptime(date + time, "%Y%m%d%H%M%S")

    moved_a, moved_b = instant(a.StudyDate, a.StudyTime), instant(b.StudyDate, b.StudyTime)
    assert moved_b - moved_a == second - first  # to the second, across midnights
    assert moved_a < first  # shifted back, never by zero
    assert instant(a.SeriesDate, a.SeriesTime) == moved_a
    assert a.AcquisitionDateTime == moved_a.strftime("%Y%m%d%H%M%S")  # DT moves as the pair does
    assert a.PatientID == b.PatientID != patient
