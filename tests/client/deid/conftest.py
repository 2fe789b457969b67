"""Shared fixtures for the de-identification tests: a PACS-like export of real files with planted PHI.

The real files are every file shipped by pydicom's test data and by the ``pydicom-data`` package,
reached offline through ``pydicom.data.get_testdata_files()`` (images from many scanners, SR, SEG, RT
plans, dose and structure sets, an ECG, DICOMDIRs, broken files). Into copies of them the tests plant
their own PHI - names, IDs, dates and times, addresses, free text with a name inside, a name inside
attributes the profile keeps (a Code Meaning), private tags, nested sequences, curves, overlays, an
unknown public tag - and file and folder names made of the patient's name and MRN. Next to them go the
non-image objects an export holds (SR, KOS, PR, SEG, RTSTRUCT, an encapsulated PDF, raw data, an ECG
with typed annotations; :mod:`simulations.export_objects`) built around some of the planted images.
Then the tests look for the PHI in every byte the de-identifier writes.
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
#: The folder most planted files are exported into: named after the patient, as exports often are.
PHI_FOLDER = "SMITHWICK_JOHNATHAN_MRN99812345"
#: Cine loops larger than this (frames x rows x columns) are left out of the CI folder: OCR on every
#: frame of a 120-frame loop takes minutes here (benchmarks/bench_ocr.py measures speed).
MAX_SUSPECT_PIXELS = 2_000_000
PHI_STRINGS = (
    "20230105",
    "2023-01-05",
    "143015",
    "14:30:15",
    "091502",
    "Oakhaven Road",
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
    # a name and the MRN inside an attribute the Basic Profile keeps
    procedure = Dataset()
    procedure.CodeValue, procedure.CodingSchemeDesignator = "CTCHEST", "99LOCAL"
    procedure.CodeMeaning = "CT chest Smithwick MRN99812345"
    ds.ProcedureCodeSequence = Sequence([procedure])
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


def _too_big_to_ocr(ds: Dataset) -> bool:
    from client.deid.burned_in import burned_in_reason

    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        size = frames * int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0)
    except (TypeError, ValueError):
        return False
    return size > MAX_SUSPECT_PIXELS and burned_in_reason(ds, trust_annotation_no=False) is not None


@pytest.fixture(scope="session")
def planted_dir(tmp_path_factory: pytest.TempPathFactory, readable_files: list[Path]) -> Path:
    """The export: every readable test file with PHI planted (copied unchanged when pydicom cannot
    re-write it), most under a folder named after the patient, plus the non-image objects."""
    import numpy as np

    from simulations.export_objects import NON_IMAGE_BUILDERS, ExportIdentity

    root = tmp_path_factory.mktemp("planted")
    (root / PHI_FOLDER).mkdir()
    sources: list[Dataset] = []
    for index, path in enumerate(readable_files):
        ds = read_ok(path)
        assert ds is not None
        if _too_big_to_ocr(ds):
            continue
        folder = root / PHI_FOLDER if index % 3 else root
        target = folder / f"{index:03d}_{path.name}"
        planted = False
        if "SOPClassUID" in ds and "TransferSyntaxUID" in ds.file_meta:
            work = copy.deepcopy(ds)
            try:
                plant_phi(work, index)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    work.save_as(target)
                planted = True
                if "PixelData" in work and "Rows" in work and len(sources) < 6 and work.Modality == "CT":
                    sources.append(work)
            except Exception:
                target.unlink(missing_ok=True)
        if not planted:
            target.write_bytes(path.read_bytes())
    who = ExportIdentity(
        observer="Kildare^James",
        operator="Quenby^Ann",
        content_date="20230105",
        content_time="143015",
        free_text="Johnathan Smithwick (MRN99812345) seen 2023-01-05 14:30:15, call 555-0199",
    )
    rng = np.random.default_rng(26)
    for number, source in enumerate(sources):
        for kind, build in NON_IMAGE_BUILDERS.items():
            if kind in ("PDF", "RAW", "ECG") and number > 1:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                build(source, who, rng).save_as(
                    root / PHI_FOLDER / f"{kind}_{number}_Smithwick.dcm", enforce_file_format=True
                )
    return root
