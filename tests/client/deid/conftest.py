"""Shared fixtures for the de-identification tests: real scanner files and planted PHI.

The real files are every file shipped by pydicom's test data and by the ``pydicom-data`` package,
reached offline through ``pydicom.data.get_testdata_files()``. Into copies of them the tests plant
their own PHI - names, IDs, dates, addresses, free text with a name inside, private tags, nested
sequences, curves, overlays, an unknown public tag - and then look for it in the output bytes.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_files
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

SECRET = bytes(range(1, 33))

#: Strings planted into the files; none may appear anywhere in a de-identified output.
PHI_NAME = "Smithwick^Johnathan"
PHI_STRINGS = (
    "Smithwick",
    "Johnathan",
    "MRN99812345",
    "99812345",
    "Wallaby Way",
    "Saint Elsewhere",
    "Kildare",
    "ACC7781234",
    "555-0199",
    "Zorblatt",
    "Quenby",
    "Oakhaven",
)


def all_test_files() -> list[Path]:
    """Every regular file of pydicom's test data and of pydicom-data, sorted."""
    return sorted({Path(f) for f in get_testdata_files() if os.path.isfile(f)})


def read_ok(path: Path) -> Dataset | None:
    """The data set if pydicom can read the file (default options), else ``None``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(path)
        except Exception:
            return None


@pytest.fixture(scope="session")
def secret() -> bytes:
    """The site secret used throughout the tests."""
    return SECRET


@pytest.fixture(scope="session")
def phi_strings() -> tuple[str, ...]:
    """The planted strings that must never survive."""
    return PHI_STRINGS


@pytest.fixture(scope="session")
def read_dicom() -> Callable[[Path], Dataset | None]:
    """:func:`read_ok` as a fixture (test modules cannot import conftest under importlib mode)."""
    return read_ok


@pytest.fixture(scope="session")
def readable_files() -> list[Path]:
    """The test files pydicom reads without ``force``."""
    return [path for path in all_test_files() if read_ok(path) is not None]


def plant_phi(ds: Dataset, index: int) -> None:
    """Plant PHI everywhere a scanner or a PACS might put it, in place."""
    ds.PatientName = PHI_NAME
    ds.PatientID = "MRN99812345"
    ds.PatientBirthDate = "19610423"
    ds.PatientAddress = "42 Wallaby Way, Sydney"
    ds.PatientTelephoneNumbers = "555-0199"
    ds.OtherPatientIDs = "MRN99812345-OLD"
    ds.InstitutionName = "Saint Elsewhere Hospital"
    ds.InstitutionAddress = "1 Oakhaven Road"
    ds.ReferringPhysicianName = "Kildare^James"
    ds.AccessionNumber = "ACC7781234"
    ds.StudyDate = "20230105"
    ds.SeriesDate = "20230105"
    ds.AcquisitionDate = "20230106"
    ds.StudyTime = ds.SeriesTime = "143015"
    ds.AcquisitionTime = "091502.250"
    ds.StudyDescription = "CT chest for Johnathan Smithwick MRN99812345"
    ds.ImageComments = "Patient Zorblatt called 555-0199 about results"
    ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.77.{index + 1}"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    # a request sequence with free text and identifiers inside
    request = Dataset()
    request.RequestedProcedureDescription = "Follow-up for Quenby"
    request.AccessionNumber = "ACC7781234"
    request.RequestedProcedureID = "RP-99812345"
    ds.RequestAttributesSequence = Sequence([request])
    # three levels down in sequences the table does not name
    deepest = Dataset()
    deepest.OperatorsName = "Quenby^Ann"
    deepest.PersonName = PHI_NAME
    deepest.PatientID = "MRN99812345"
    deepest.ContentDate = "20230107"
    deepest.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    deepest.ReferencedSOPClassUID = ds.SOPClassUID
    middle = Dataset()
    middle.ReferencedInstanceSequence = Sequence([deepest])
    middle.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.99.1"
    ds.ReferencedSeriesSequence = Sequence([middle])
    # a private block with a name, and a private sequence with a person inside
    block = ds.private_block(0x0011, "ACME PHI STORE", create=True)
    block.add_new(0x01, "LO", "Zorblatt Johnathan")
    inner = Dataset()
    inner.PatientName = "Oakhaven^Quenby"
    block.add_new(0x02, "SQ", Sequence([inner]))
    # curves and overlays (retired groups), and a public tag no dictionary knows
    ds.add_new(0x50000022, "LO", "Curve by Kildare")
    ds.add_new(0x60104000, "LT", "Overlay note: Smithwick")
    ds.add_new(0x00709999, "UN", b"Smithwick private UN value ")


@pytest.fixture(scope="session")
def planted_dir(tmp_path_factory: pytest.TempPathFactory, readable_files: list[Path]) -> Path:
    """Copies of every readable test file with PHI planted (unchanged when pydicom cannot re-write it)."""
    root = tmp_path_factory.mktemp("planted")
    for index, path in enumerate(readable_files):
        ds = read_ok(path)
        assert ds is not None
        target = root / f"{index:03d}_{path.name}"
        planted = False
        if "SOPClassUID" in ds and "PixelData" in ds and "TransferSyntaxUID" in ds.file_meta:
            work = copy.deepcopy(ds)
            try:
                plant_phi(work, index)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    work.save_as(target)
                planted = True
            except Exception:
                target.unlink(missing_ok=True)
        if not planted:
            target.write_bytes(path.read_bytes())
    return root
