"""Site ingest on real scanner files: every file of pydicom's test data and of pydicom-data, in one folder.

Each copy gets its own (0008,0018) SOP Instance UID (the test sets ship one image in many transfer
syntaxes under one UID, which ingest would rightly count once), so that every modality and transfer
syntax goes through the whole pipeline. Two sites ingest the folder: one with the default burned-in
policy (reject), one that masks, so that ultrasound and secondary captures are decoded too.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import uid
from pydicom.data import get_testdata_files
from pydicom.dataset import Dataset

from client.deid import pseudonymize_uid
from client.deid.burned_in import burned_in_reason
from client.discovery import non_image_reason
from client.ingest import IngestReport, ingest_folder
from client.label_objects import LABEL_OBJECT_CLASSES
from client.pixels import PixelSettings, prepare_frames
from client.site import SiteDir
from client.site_init import init_site, load_deid_secret
from client.site_keys import load_site_key
from client.store import RecordEntry, iter_records

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SIZE = 32
ALLOWED = {
    "not DICOM",
    "truncated",
    "truncated or corrupt",
    "unreadable",
    "DICOMDIR",
    "not an image",
    "no pixel data",
    "invalid",
    "burned-in text",
    "recognizable visual features",
    "cannot decode pixels",
    "cannot convert pixels",
    "duplicate",
}
PIXEL_FAILURES = {"cannot decode pixels", "cannot convert pixels", "burned-in text"}


def _read(path: Path) -> Dataset | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(path)
        except Exception:
            return None


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Dataset | None]]:
    """Copies of every test file (unique SOP Instance UIDs where pydicom can re-write them), and
    the header of each copy as pydicom reads it (None if it cannot)."""
    root = tmp_path_factory.mktemp("real") / "export"
    root.mkdir()
    headers: dict[str, Dataset | None] = {}
    sources = sorted({Path(f) for f in get_testdata_files() if os.path.isfile(f)})
    for index, source in enumerate(sources):
        name = f"{index:03d}_{source.name}"
        target = root / name
        ds = _read(source)
        rewritten = False
        if ds is not None and "SOPInstanceUID" in ds and "TransferSyntaxUID" in ds.file_meta:
            work = copy.deepcopy(ds)
            work.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.4242.{index + 1}"
            work.file_meta.MediaStorageSOPInstanceUID = work.SOPInstanceUID
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    work.save_as(target)
                rewritten = True
            except Exception:
                target.unlink(missing_ok=True)
        if not rewritten:
            target.write_bytes(source.read_bytes())
        headers[name] = _read(target)
    return root, headers


def _ingest(root: Path, export: Path, options: list[str]) -> tuple[SiteDir, IngestReport]:
    site = init_site(root, root.name)
    text = site.config_file.read_text().replace("image_size = 64", f"image_size = {SIZE}")
    quoted = ", ".join(f'"{o}"' for o in options)
    text = "\n".join(
        f"options = [{quoted}]" if ln.startswith("options = ") else ln for ln in text.splitlines()
    )
    site.config_file.write_text(text + "\n")
    return site, ingest_folder(site, export, None, keep_unlabelled=True, workers=2)


def _read_forced(path: Path) -> Dataset | None:
    try:
        return pydicom.dcmread(path, force=True, stop_before_pixels=True)
    except Exception:
        return None


def _records_by_sop(site: SiteDir) -> dict[str, list[tuple[RecordEntry, np.ndarray]]]:
    out: dict[str, list[tuple[RecordEntry, np.ndarray]]] = defaultdict(list)
    for entry, pixels in iter_records(site.store_dir, load_site_key(site)):
        out[entry.sop].append((entry, pixels))
    return out


def _is_image(ds: Dataset | None) -> bool:
    return (
        ds is not None
        and "SOPInstanceUID" in ds
        and "SOPClassUID" in ds
        and non_image_reason(str(ds.SOPClassUID)) is None
        and any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    )


@pytest.fixture(scope="module")
def strict(
    tmp_path_factory: pytest.TempPathFactory, export: tuple[Path, dict]
) -> tuple[SiteDir, IngestReport]:  # type: ignore[type-arg]
    root = tmp_path_factory.mktemp("sites")
    # burned-in=reject: this site is about rejections (OCR has its own tests in tests/client/deid)
    options = ["retain-modified-dates", "retain-patient-characteristics", "burned-in=reject"]
    return _ingest(root / "strict", export[0], options)


@pytest.fixture(scope="module")
def masking(
    tmp_path_factory: pytest.TempPathFactory, export: tuple[Path, dict]
) -> tuple[SiteDir, IngestReport]:  # type: ignore[type-arg]
    root = tmp_path_factory.mktemp("sites")
    return _ingest(
        root / "masking",
        export[0],
        ["retain-modified-dates", "retain-patient-characteristics", "burned-in=mask", "mask-region=0,0,1,1"],
    )


def test_every_file_is_a_record_or_rejected_with_a_reason(
    export: tuple[Path, dict[str, Dataset | None]], strict: tuple[SiteDir, IngestReport]
) -> None:
    folder, headers = export
    site, report = strict
    assert report.files_seen == len(headers)
    rejected = dict(report.rejected)
    assert report.files_added + len(rejected) + report.label_objects_kept == report.files_seen
    assert report.label_objects_kept >= 5  # pydicom's segmentations and structure set
    assert {r.partition(":")[0] for r in rejected.values()} <= ALLOWED
    records = _records_by_sop(site)
    secret = load_deid_secret(site)
    for name, ds in headers.items():
        forced = ds if ds is not None else _read_forced(folder / name)  # ingest reads bare data sets too
        if forced is not None and str(forced.get("SOPClassUID", "")) in LABEL_OBJECT_CLASSES:
            assert name not in rejected, f"{name} holds labels, yet was rejected"
            continue
        if ds is None or "SOPInstanceUID" not in ds:
            assert name in rejected, f"{name} cannot be read by pydicom, yet was stored"
            continue
        if not _is_image(ds):
            assert name in rejected, f"{name} is not an image, yet was stored"
            sop_class = str(ds.get("SOPClassUID", ""))
            if non_image_reason(sop_class):
                assert rejected[name].startswith("not an image"), rejected[name]
            continue
        if burned_in_reason(ds):
            assert rejected.get(name, "").partition(":")[0] in ("burned-in text", "truncated", "invalid")
            continue
        if name in rejected:
            assert rejected[name].partition(":")[0] in ALLOWED - {"not an image", "burned-in text"}
            continue
        stored = records[pseudonymize_uid(secret, str(ds.SOPInstanceUID))]
        assert stored, f"{name} was accepted but has no record"
        for entry, pixels in stored:
            assert pixels.dtype == np.float32 and pixels.shape == (SIZE, SIZE)
            assert np.isfinite(pixels).all() and pixels.min() >= 0.0 and pixels.max() <= 1.0
            assert entry.meta["modality"] == str(ds.get("Modality", "")).strip()
            assert entry.meta["transfer_syntax"] == str(ds.file_meta.TransferSyntaxUID)
    categories = report.rejected_by_reason
    for expected in ("not DICOM", "DICOMDIR", "not an image", "no pixel data", "truncated", "burned-in text"):
        assert categories[expected] > 0, f"the test data no longer exercises {expected!r}"


def test_records_equal_the_pixel_pipeline_on_the_original_file(
    export: tuple[Path, dict[str, Dataset | None]], strict: tuple[SiteDir, IngestReport]
) -> None:
    """De-identification does not touch what the pixel pipeline reads: records match prepare_frames."""
    folder, headers = export
    site, _ = strict
    records = _records_by_sop(site)
    secret = load_deid_secret(site)
    compared = 0
    for name, ds in headers.items():
        if not _is_image(ds) or ds is None:
            continue
        stored = records.get(pseudonymize_uid(secret, str(ds.SOPInstanceUID)))
        if not stored or compared >= 25:
            continue
        expected = prepare_frames(ds, PixelSettings(size=SIZE))
        for entry, pixels in stored:
            np.testing.assert_allclose(pixels, expected[entry.frame], atol=1e-6, err_msg=name)
        compared += 1
    assert compared >= 20


def test_every_modality_and_transfer_syntax_is_ingested(
    export: tuple[Path, dict[str, Dataset | None]], masking: tuple[SiteDir, IngestReport]
) -> None:
    folder, headers = export
    site, report = masking
    rejected = dict(report.rejected)
    for reason in rejected.values():  # masked, unless the pixels to mask do not even decode
        assert not reason.startswith("burned-in text") or "could not be decoded" in reason, reason
    candidates: dict[str, set[str]] = defaultdict(set)  # transfer syntax -> image files
    modalities: dict[str, set[str]] = defaultdict(set)
    for name, ds in headers.items():
        if _is_image(ds) and ds is not None:
            candidates[str(ds.file_meta.TransferSyntaxUID)].add(name)
            modalities[str(ds.get("Modality", "")).strip()].add(name)
    stored = _records_by_sop(site)
    syntaxes = {e.meta["transfer_syntax"] for entries in stored.values() for e, _ in entries}
    stored_modalities = {e.meta["modality"] for entries in stored.values() for e, _ in entries}
    for syntax, names in candidates.items():
        reasons = {rejected.get(n, "").partition(":")[0] for n in names}
        if syntax not in syntaxes:  # then no file of it decodes, and each says why
            assert reasons <= PIXEL_FAILURES | {"truncated", "invalid"}, (syntax, reasons)
    for modality, names in modalities.items():
        if modality not in stored_modalities:
            assert all(n in rejected for n in names), modality
    must = {
        uid.ExplicitVRLittleEndian,
        uid.ImplicitVRLittleEndian,
        uid.ExplicitVRBigEndian,
        uid.DeflatedExplicitVRLittleEndian,
        uid.RLELossless,
        uid.JPEGBaseline8Bit,
        uid.JPEGExtended12Bit,
        uid.JPEGLosslessSV1,
        uid.JPEGLSLossless,
        uid.JPEGLSNearLossless,
        uid.JPEG2000Lossless,
        uid.JPEG2000,
    }
    assert must <= syntaxes, sorted(uid.UID(s).name for s in must - syntaxes)
    assert {"CT", "MR", "CR", "US", "NM", "OT"} <= stored_modalities
    print(f"\n{len(syntaxes)} transfer syntaxes, modalities {sorted(stored_modalities)}")
