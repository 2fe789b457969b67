"""After `fedscan site ingest` and `inspect`, no planted PHI and no pixel data sits anywhere on disk.

The cohort plants fake PHI in headers, sequences, free text and private tags (``SiteCohort.phi_values``
lists every string). The commands run as subprocesses whose temporary folder (TMPDIR) is a fresh
directory, so that any file they create there is found. Then every file of the site directory, of that
temporary folder and anything new directly under the system temporary folder is searched for each
PHI string (UTF-8 and Latin-1, the cohort's two character sets), for a run of raw pixel bytes of an
input slice, and for a run of the preprocessed record of that slice: none may be found.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest

from client.pixels import PixelSettings, prepare_frames
from simulations.cohort import CohortSpec, SiteCohort, generate_cohort

MAX_SCANNED = 256 << 20  # bytes per file; larger files are not ours


def _fedscan(*args: str, tmpdir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TMPDIR": str(tmpdir), "TMP": str(tmpdir), "TEMP": str(tmpdir)}
    return subprocess.run(
        [sys.executable, "-m", "common.cli", *args], capture_output=True, text=True, timeout=300, env=env
    )


def _files(*roots: Path) -> Iterator[Path]:
    for root in roots:
        if root.is_file():
            yield root
        elif root.is_dir():
            for dirpath, _, names in os.walk(root):
                for name in names:
                    path = Path(dirpath) / name
                    if path.is_file() and not path.is_symlink():
                        yield path


def _needles(cohort: SiteCohort) -> dict[str, bytes]:
    needles: dict[str, bytes] = {}
    for value in cohort.phi_values:
        if len(value) < 4:  # a sex code or a two-letter state: too short to mean anything alone
            continue
        for encoding in ("utf-8", "latin-1"):
            with contextlib.suppress(UnicodeEncodeError):  # not every name fits Latin-1
                needles[f"PHI {value!r} ({encoding})"] = value.encode(encoding)
    # Raw pixel bytes of an input slice: 48 bytes from the middle of the image, where it is not flat.
    ds = pydicom.dcmread(cohort.dicom_dir / cohort.files[0].relpath)
    raw = ds.PixelData
    middle = len(raw) // 2
    assert len(set(raw[middle : middle + 48])) > 8
    needles["raw pixel bytes"] = raw[middle : middle + 48]
    # The slice as a record (what the store holds, sealed): 64 bytes of its float32 array.
    (record,) = prepare_frames(ds, PixelSettings(size=32))
    flat = np.ascontiguousarray(record).tobytes()
    needles["record pixel bytes"] = flat[len(flat) // 2 : len(flat) // 2 + 64]
    return needles


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_no_phi_and_no_pixels_on_disk_after_ingest(tmp_path: Path) -> None:
    (cohort,) = generate_cohort(
        tmp_path / "export", CohortSpec(n_sites=1, slices_per_site=24, image_size=64, seed=21)
    )
    assert len(cohort.phi_values) > 20
    site_dir = tmp_path / "site"
    process_tmp = tmp_path / "process-tmp"
    process_tmp.mkdir()
    system_tmp = Path(tempfile.gettempdir())
    before = set(system_tmp.iterdir())
    started = time.time()

    assert (
        _fedscan("site", "init", "--site-dir", str(site_dir), "--site-id", "s", tmpdir=process_tmp).returncode
        == 0
    )
    config = site_dir / "site.toml"
    config.write_text(config.read_text().replace("image_size = 64", "image_size = 32"))
    ingest = _fedscan(
        "site", "ingest", "--site-dir", str(site_dir), "--input", str(cohort.dicom_dir),
        "--labels", str(cohort.labels_csv), "--workers", "2", "--json",
        tmpdir=process_tmp,
    )  # fmt: skip
    assert ingest.returncode == 0, ingest.stderr
    report = json.loads(ingest.stdout)
    assert report["records_added"] == cohort.n_files and not report["rejected"]
    inspect = _fedscan("site", "inspect", "--site-dir", str(site_dir), tmpdir=process_tmp)
    assert inspect.returncode == 0, inspect.stderr

    new_in_system_tmp = [
        p for p in set(system_tmp.iterdir()) - before if p.exists() and p.stat().st_mtime >= started - 1
    ]
    scanned = list(_files(site_dir, process_tmp, *new_in_system_tmp))
    assert any(p.suffix == ".fseal" for p in scanned) and len(scanned) >= 5
    needles = _needles(cohort)
    found = []
    for path in scanned:
        if path.stat().st_size > MAX_SCANNED:
            continue
        data = path.read_bytes()
        found += [f"{what} in {path}" for what, needle in needles.items() if needle in data]
    for name, output in (
        ("ingest output", ingest.stdout + ingest.stderr),
        ("inspect output", inspect.stdout),
    ):
        data = output.encode()
        found += [f"{what} in the {name}" for what, needle in needles.items() if needle in data]
    assert not found, "\n".join(found)

    # Plaintext files in the site directory: the policy, the keys, counts-only report summaries and the
    # audit log (counts, hashes and ids only; scanned for PHI above like every other file).
    plaintext = [p for p in _files(site_dir) if p.suffix != ".fseal"]
    for path in plaintext:
        relative = path.relative_to(site_dir).as_posix()
        assert relative in ("site.toml", "store/.lock") or relative.startswith(
            ("keys/", "reports/ingest-", "audit/")
        ), relative
        if relative.startswith("reports/"):
            text = path.read_text()
            assert not any(f.relpath in text for f in cohort.files), "a plaintext report names input files"
