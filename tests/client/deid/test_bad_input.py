"""Bad input: each bad file gets a clear reason in the report, the run goes on, --strict decides the exit."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from client.deid import DeidOptions, deidentify_folder
from common.errors import InputError


def _testfile(name: str) -> Path:
    path = get_testdata_file(name)
    assert path is not None, name
    return Path(path)


@pytest.fixture()
def messy_folder(tmp_path: Path) -> Path:
    """A PACS export gone wrong, next to one good file with a name planted in it."""
    root = tmp_path / "in"
    (root / "Doe^John" / "series 1").mkdir(parents=True)
    good = pydicom.dcmread(_testfile("CT_small.dcm"))
    good.PatientName = "Smithwick^Johnathan"
    good.save_as(root / "Doe^John" / "series 1" / "IM0001")  # no extension
    raw = _testfile("CT_small.dcm").read_bytes()
    (root / "truncated_pixels.dcm").write_bytes(raw[: len(raw) * 6 // 10])
    (root / "truncated_header.dcm").write_bytes(raw[:1000])
    (root / "notes.txt").write_text("Johnathan Smithwick, MRN 99812345\n")
    (root / "scan.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    (root / "empty.dcm").write_bytes(b"")
    shutil.copy(_testfile("DICOMDIR"), root / "DICOMDIR")
    shutil.copy(_testfile("rtplan.dcm"), root / "plan.dcm")
    (root / "unreadable.dcm").symlink_to("/proc/self/mem")  # opens, but every read fails (EIO)
    return root


EXPECTED = {
    "truncated_pixels.dcm": "truncated:",
    "truncated_header.dcm": "truncated",
    "notes.txt": "not DICOM:",
    "scan.png": "not DICOM:",
    "empty.dcm": "not DICOM: the file is empty",
    "DICOMDIR": "DICOMDIR:",
    "unreadable.dcm": "unreadable:",
}


def test_each_bad_file_has_a_reason_and_the_run_continues(
    messy_folder: Path, tmp_path: Path, secret: bytes
) -> None:
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = deidentify_folder(messy_folder, out, secret, DeidOptions(), workers=1)
    reasons = {r.path: r.reason for r in report.rejections}
    assert set(reasons) == set(EXPECTED)
    for path, start in EXPECTED.items():
        assert reasons[path].startswith(start), (path, reasons[path])
    assert report.files_written == 2  # the image and the RT plan (non-image objects are cleaned too)
    assert len(list(out.rglob("*.dcm"))) == 2
    assert report.exit_code == 0
    document = report.to_json()
    assert "Smithwick" not in document and "Johnathan" not in document and "99812345" not in document
    assert json.loads(document)["rejection_counts"]["not DICOM"] == 3


def test_strict_turns_rejections_into_a_failing_exit_code(
    messy_folder: Path, tmp_path: Path, secret: bytes
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = deidentify_folder(
            messy_folder, tmp_path / "out", secret, DeidOptions(), strict=True, workers=1
        )
    assert report.exit_code == InputError.exit_code
    assert report.files_written == 2


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_a_file_without_read_permission_is_unreadable(tmp_path: Path, secret: bytes) -> None:
    root = tmp_path / "in"
    root.mkdir()
    locked = root / "locked.dcm"
    shutil.copy(_testfile("CT_small.dcm"), locked)
    locked.chmod(0)
    report = deidentify_folder(root, tmp_path / "out", secret, DeidOptions())
    assert report.rejections[0].reason == "unreadable: permission denied"


def test_output_inside_input_is_not_read_back(tmp_path: Path, secret: bytes) -> None:
    root = tmp_path / "in"
    root.mkdir()
    shutil.copy(_testfile("CT_small.dcm"), root / "a.dcm")
    first = deidentify_folder(root, root / "out", secret, DeidOptions())
    second = deidentify_folder(root, root / "out", secret, DeidOptions())
    assert first.files_seen == second.files_seen == 1
