"""`fedscan site init / ingest / inspect` through the real CLI on a real synthetic export."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from simulations.cohort import CohortSpec, generate_cohort


def fedscan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "common.cli", *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("export")
    (cohort,) = generate_cohort(root, CohortSpec(n_sites=1, slices_per_site=40, image_size=96, seed=3))
    return cohort


def test_init_creates_private_keys_and_refuses_to_overwrite(tmp_path: Path) -> None:
    site_dir = tmp_path / "site-a"
    first = fedscan("site", "init", "--site-dir", str(site_dir), "--site-id", "site-a")
    assert first.returncode == 0, first.stderr
    for key in (site_dir / "keys").iterdir():
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((site_dir / "keys").stat().st_mode) == 0o700
    again = fedscan("site", "init", "--site-dir", str(site_dir), "--site-id", "site-a")
    assert again.returncode != 0 and "refusing to overwrite" in again.stderr


def test_ingest_then_inspect_counts_match(tmp_path: Path, export) -> None:  # type: ignore[no-untyped-def]
    site_dir = tmp_path / "site"
    assert fedscan("site", "init", "--site-dir", str(site_dir), "--site-id", "s1").returncode == 0
    ingest = fedscan(
        "site",
        "ingest",
        "--site-dir",
        str(site_dir),
        "--input",
        str(export.dicom_dir),
        "--labels",
        str(export.labels_csv),
        "--json",
    )
    assert ingest.returncode == 0, ingest.stderr
    report = json.loads(ingest.stdout)
    assert report["files_seen"] == export.n_files
    assert report["records_added"] == export.n_files and not report["rejected"]
    assert report["per_label"].get("1", 0) == export.n_positive
    inspect = fedscan("site", "inspect", "--site-dir", str(site_dir), "--json")
    assert inspect.returncode == 0, inspect.stderr
    body = json.loads(inspect.stdout)
    assert body["records"] == export.n_files
    assert sum(body["splits"].values()) == export.n_files
    assert body["labels"].get("1", 0) == export.n_positive


def test_world_readable_key_is_refused(tmp_path: Path, export) -> None:  # type: ignore[no-untyped-def]
    site_dir = tmp_path / "site"
    assert fedscan("site", "init", "--site-dir", str(site_dir), "--site-id", "s1").returncode == 0
    os.chmod(site_dir / "keys" / "site.key", 0o644)
    result = fedscan("site", "ingest", "--site-dir", str(site_dir), "--input", str(export.dicom_dir))
    assert result.returncode != 0
    assert "site.key" in result.stderr and "Traceback" not in result.stderr
