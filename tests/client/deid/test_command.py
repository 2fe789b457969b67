"""The command body and ``python -m client.deid``: secret lookup, exit codes, JSON, the report file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from client.deid.__main__ import main
from client.deid.command import SECRET_ENV, deidentify_command, load_secret, report_path
from client.deid.pseudonyms import KeyedPseudonyms
from common.errors import ConfigError, InputError, KeyMaterialError
from simulations.export_objects import ExportIdentity, encapsulated_pdf

REJECTED_NAME = "Smithwick^Johnathan/request.pdf.dcm"  # exports name files after patients


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    root.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm"):
        path = get_testdata_file(name)
        assert path is not None
        shutil.copy(path, root / name)
    source = pydicom.dcmread(root / "CT_small.dcm")
    who = ExportIdentity("Kildare^James", "Quenby^Ann", "20230107", "101530", "scanned request")
    pdf = encapsulated_pdf(source, who, np.random.default_rng(1))
    (root / REJECTED_NAME).parent.mkdir()
    pdf.save_as(root / REJECTED_NAME, enforce_file_format=True)
    return root


@pytest.fixture()
def env_secret(monkeypatch: pytest.MonkeyPatch, secret: bytes) -> bytes:
    monkeypatch.setenv(SECRET_ENV, secret.hex())
    return secret


def test_json_output_report_file_and_exit_codes(
    folder: Path, tmp_path: Path, env_secret: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = deidentify_command(folder, out, None, "fedscan", [], False, 1, True)
    assert code == 0
    document = json.loads(capsys.readouterr().out)
    assert document["files_written"] == 3 and document["files_rejected"] == 1
    [rejection] = document["rejections"]
    assert rejection["reason"].startswith("encapsulated document: ")
    assert rejection["file"] == KeyedPseudonyms(env_secret).file_key(REJECTED_NAME)
    written = Path(document["report_file"])
    assert written == tmp_path / "out.deid-report.json"
    assert json.loads(written.read_text())["files_seen"] == 4
    assert written.stat().st_mode & 0o777 == 0o600
    # the path names the patient: neither the report file nor the JSON printed holds it
    assert "Smithwick" not in written.read_text() and "Johnathan" not in json.dumps(document)

    options = ["clean-descriptors"]
    strict = deidentify_command(folder, tmp_path / "out2", None, "basic", options, True, 1, True)
    assert strict == InputError.exit_code


def test_summary_table_is_printed(
    folder: Path, tmp_path: Path, env_secret: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    assert deidentify_command(folder, tmp_path / "out", None, "fedscan", [], False, None, False) == 0
    text = capsys.readouterr().out
    assert "files written" in text and "encapsulated document" in text
    assert REJECTED_NAME in text  # the operator's console shows the path


def test_missing_or_bad_secret_and_options(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    with pytest.raises(ConfigError, match="--site-dir"):
        deidentify_command(folder, tmp_path / "out", None, "fedscan", [], False, None, True)
    monkeypatch.setenv(SECRET_ENV, "not hex")
    with pytest.raises(ConfigError, match="hexadecimal"):
        load_secret(None)
    with pytest.raises(KeyMaterialError, match="site init"):
        load_secret(tmp_path / "site")
    monkeypatch.setenv(SECRET_ENV, "00" * 32)
    with pytest.raises(ConfigError, match="Unknown de-identification option"):
        deidentify_command(folder, tmp_path / "out", None, "fedscan", ["keep-names"], False, None, True)
    with pytest.raises(InputError, match="does not exist"):
        deidentify_command(tmp_path / "nowhere", tmp_path / "out", None, "fedscan", [], False, None, True)


def test_reports_go_to_the_site_reports_folder(tmp_path: Path) -> None:
    path = report_path(tmp_path / "site", tmp_path / "out")
    assert path.parent == tmp_path / "site" / "reports" and path.name.startswith("deid-")


def test_module_entry_point_maps_errors_to_one_line(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    assert main([str(folder), str(tmp_path / "out")]) == ConfigError.exit_code
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_python_dash_m_help_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "client.deid", "--help"], capture_output=True, text=True, check=True
    )
    assert "--option" in result.stdout and "example:" in result.stdout
