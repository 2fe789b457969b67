"""Site ingest on synthetic PACS exports: every transfer syntax the generator writes, MONOCHROME1,
multi-frame, RGB ultrasound; labels keyed each supported way; what an export holds besides images;
duplicates and re-runs; the patient-level split."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import UID

from client.deid import pseudonymize_uid
from client.ingest import ingest_folder
from client.ingest_report import StoreSummary, latest_sealed_report
from client.site import SiteDir
from client.site_init import init_site, load_deid_secret
from client.site_keys import load_site_key
from client.store import RecordEntry, StoreWriter, iter_records, read_manifest, store_lock
from common.errors import ConfigError, StoreError
from simulations.cohort import (
    CohortSpec,
    ScannerProfile,
    SiteCohort,
    available_transfer_syntaxes,
    generate_cohort,
)

SIZE = 48  # the cohorts' nominal matrix; small keeps the module fast


def _cohort(root: Path, profile: ScannerProfile, *, slices: int = 10, **spec: object) -> SiteCohort:
    options = {"slices_per_site": slices, "image_size": SIZE, "seed": 5, "slices_per_patient": (1, 3)}
    options.update(spec)
    (cohort,) = generate_cohort(root, CohortSpec(n_sites=1, scanners=(profile,), **options))  # type: ignore[arg-type]
    return cohort


def _site(root: Path, *, options: list[str] | None = None, image_size: int = 32) -> SiteDir:
    site = init_site(root, root.name)
    text = site.config_file.read_text().replace("image_size = 64", f"image_size = {image_size}")
    if options is not None:
        quoted = ", ".join(f'"{o}"' for o in options)
        lines = [
            f"options = [{quoted}]" if line.startswith("options = ") else line for line in text.splitlines()
        ]
        text = "\n".join(lines) + "\n"
    site.config_file.write_text(text)
    return site


def _records(site: SiteDir) -> dict[tuple[str, int], tuple[RecordEntry, np.ndarray]]:
    """(keyed SOP Instance UID, frame) -> (manifest entry, pixels)."""
    return {(e.sop, e.frame): (e, x) for e, x in iter_records(site.store_dir, load_site_key(site))}


def _by_original(site: SiteDir, cohort: SiteCohort) -> dict[str, tuple[RecordEntry, np.ndarray]]:
    """Original SOP Instance UID of each cohort file -> its record (first frame)."""
    secret = load_deid_secret(site)
    records = _records(site)
    return {
        f.sop_instance_uid: records[(pseudonymize_uid(secret, f.sop_instance_uid), 0)] for f in cohort.files
    }


# ---- scanners: transfer syntaxes, photometric interpretations, multi-frame --------------------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[SiteCohort, SiteDir]:
    root = tmp_path_factory.mktemp("reference")
    cohort = _cohort(root / "export", ScannerProfile.for_modality("CT"))
    site = _site(root / "site")
    report = ingest_folder(site, cohort.dicom_dir, cohort.labels_csv)
    assert report.files_added == cohort.n_files and not report.rejected
    return cohort, site


@pytest.mark.parametrize(
    "syntax", [s for s in available_transfer_syntaxes() if s != pydicom.uid.ExplicitVRLittleEndian]
)
def test_lossless_syntaxes_give_the_same_records_as_uncompressed(
    tmp_path: Path, reference: tuple[SiteCohort, SiteDir], syntax: str
) -> None:
    """JPEG-LS, JPEG 2000, RLE, deflated and implicit VR files of the same slices as the reference
    become records equal to the reference's, with their transfer syntax recorded."""
    ref_cohort, ref_site = reference
    cohort = _cohort(tmp_path / "export", ScannerProfile.for_modality("CT", transfer_syntax=syntax))
    site = _site(tmp_path / "site")
    report = ingest_folder(site, cohort.dicom_dir, cohort.labels_csv, workers=2)
    assert not report.rejected and report.records_added == cohort.n_files
    assert report.per_label == Counter(f.label for f in cohort.files)
    expected = _by_original(ref_site, ref_cohort)
    got = _by_original(site, cohort)
    assert set(got) == set(expected)
    for uid, (entry, pixels) in got.items():
        assert entry.meta["transfer_syntax"] == syntax
        assert entry.label == expected[uid][0].label
        np.testing.assert_array_equal(pixels, expected[uid][1])


def test_monochrome1_is_inverted_like_the_same_image_in_monochrome2(tmp_path: Path) -> None:
    """A CR site storing MONOCHROME1 (RLE) and one storing MONOCHROME2 show the same picture."""
    base = ScannerProfile.for_modality("CR")
    assert base.photometric == "MONOCHROME1"
    sites = {}
    for name, profile in (
        ("m1", base.replace(transfer_syntax="rle")),
        ("m2", base.replace(photometric="MONOCHROME2")),
    ):
        cohort = _cohort(tmp_path / f"export-{name}", profile, slices=6)
        site = _site(tmp_path / name)
        report = ingest_folder(site, cohort.dicom_dir, cohort.labels_csv)
        assert report.records_added == cohort.n_files and not report.rejected
        sites[name] = _by_original(site, cohort)
    assert set(sites["m1"]) == set(sites["m2"])
    for uid, (entry, inverted) in sites["m1"].items():
        assert entry.meta["photometric"] == "MONOCHROME1"
        direct = sites["m2"][uid][1]
        assert np.corrcoef(inverted.ravel(), direct.ravel())[0, 1] > 0.99
        assert np.abs(inverted - direct).mean() < 0.02


def test_multiframe_files_follow_the_sites_frame_rule(tmp_path: Path) -> None:
    """Multi-frame MR (written as Multi-frame Grayscale Word Secondary Capture, which the burned-in
    policy holds suspect, so these sites mask a corner): the middle frame, or every frame."""
    cohort = _cohort(
        tmp_path / "export",
        ScannerProfile.for_modality("MR", multiframe=True),
        slices=12,
        slices_per_patient=(3, 4),
    )
    frames = {f.sop_instance_uid: f.n_frames for f in cohort.files}
    assert min(frames.values()) >= 3
    masking = ["burned-in=mask", "mask-region=0,0,2,2"]
    middle = _site(tmp_path / "middle", options=masking)
    report = ingest_folder(middle, cohort.dicom_dir, cohort.labels_csv)
    assert not report.rejected
    assert report.files_added == cohort.n_files and report.records_added == cohort.n_files  # one per file
    for uid, (entry, pixels) in _by_original(middle, cohort).items():
        assert entry.meta["frames"] == frames[uid] and entry.frame == 0
        assert entry.meta["modality"] == "MR" and pixels.shape == (32, 32)

    split = _site(tmp_path / "split", options=masking)  # the rule comes from site.toml
    config = split.config_file.read_text()
    split.config_file.write_text(config.replace('multiframe = "middle"', 'multiframe = "split"'))
    report = ingest_folder(split, cohort.dicom_dir, cohort.labels_csv)
    assert report.records_added == sum(frames.values())
    secret = load_deid_secret(split)
    records = _records(split)
    for f in cohort.files:
        sop = pseudonymize_uid(secret, f.sop_instance_uid)
        assert {frame for s, frame in records if s == sop} == set(range(f.n_frames))
        assert {records[(sop, i)][0].label for i in range(f.n_frames)} == {f.label}


def test_rgb_ultrasound_is_rejected_for_burned_in_text_unless_the_site_masks(tmp_path: Path) -> None:
    profile = ScannerProfile.for_modality("US")
    cohort = _cohort(tmp_path / "export", profile, slices=6)
    options = ["retain-modified-dates", "retain-patient-characteristics", "burned-in=reject"]
    strict = _site(tmp_path / "strict", options=options)
    report = ingest_folder(strict, cohort.dicom_dir, cohort.labels_csv)
    assert report.records_added == 0 and len(report.rejected) == cohort.n_files
    assert all(reason.startswith("burned-in text") for _, reason in report.rejected)
    rows, cols = profile.matrix(SIZE)
    masking = _site(tmp_path / "masking", options=["burned-in=mask", f"mask-region=0,0,{cols},{rows // 5}"])
    report = ingest_folder(masking, cohort.dicom_dir, cohort.labels_csv)
    assert not report.rejected and report.records_added == cohort.n_files
    for entry, pixels in _by_original(masking, cohort).values():
        assert entry.meta["modality"] == "US" and entry.meta["photometric"] in ("RGB", "YBR_FULL")
        assert pixels.min() >= 0.0 and pixels.max() <= 1.0 and pixels.std() > 0.05


# ---- labels ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["path", "sop_instance_uid", "series_instance_uid", "study_instance_uid"])
def test_labels_join_on_each_supported_key(tmp_path: Path, key: str) -> None:
    cohort = _cohort(tmp_path / "export", ScannerProfile.for_modality("CT"), slices=10, label_key=key)
    with cohort.labels_csv.open() as handle:
        assert next(csv.reader(handle)) == [key, "label"]
    site = _site(tmp_path / "site")
    report = ingest_folder(site, cohort.dicom_dir, cohort.labels_csv)
    assert not report.unlabelled and not report.labels_without_file and not report.rejected
    assert report.per_label == Counter(f.label for f in cohort.files)
    for uid, (entry, _) in _by_original(site, cohort).items():
        assert entry.label == next(f.label for f in cohort.files if f.sop_instance_uid == uid)


def test_label_problems_are_reported_by_line_and_unlabelled_files_kept_only_if_asked(tmp_path: Path) -> None:
    cohort = _cohort(tmp_path / "export", ScannerProfile.for_modality("CT"), slices=8)
    files = [f.relpath for f in cohort.files]
    labels = tmp_path / "labels.csv"
    rows = [["path", "label"]]
    rows += [[path, "1"] for path in files[2:]]  # files[0], files[1]: no label
    rows += [[files[2], "0"]]  # conflicts with its first row
    rows += [["missing/IM_ghost.dcm", "1"], ["missing/IM_other.dcm", "0"]]
    with labels.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)

    site = _site(tmp_path / "site")
    report = ingest_folder(site, cohort.dicom_dir, labels)
    assert sorted(report.unlabelled) == sorted(files[:2])
    assert report.conflicting == [files[2]]
    assert report.records_added == len(files) - 3
    last = len(rows)
    assert report.labels_without_file == [
        f"line {last - 1}: no file has this path",
        f"line {last}: no file has this path",
    ]
    conflict_line = rows.index([files[2], "0"]) + 1  # the header is line 1
    assert report.label_conflicts == [f"lines 2, {conflict_line}: different labels for one path"]
    assert "ghost" not in report.to_json()  # label problems name lines, never the keys

    kept = _site(tmp_path / "kept")
    report = ingest_folder(kept, cohort.dicom_dir, labels, keep_unlabelled=True)
    assert report.records_added == len(files) and report.per_label[-1] == 3
    manifest = read_manifest(kept.store_dir, load_site_key(kept))
    assert Counter(e.label for e in manifest.records)[-1] == 3


def test_without_labels_nothing_is_stored_unless_asked(tmp_path: Path) -> None:
    cohort = _cohort(tmp_path / "export", ScannerProfile.for_modality("CT"), slices=4)
    site = _site(tmp_path / "site")
    with pytest.raises(ConfigError, match="--keep-unlabelled"):
        ingest_folder(site, cohort.dicom_dir, None)
    report = ingest_folder(site, cohort.dicom_dir, None, keep_unlabelled=True)
    assert report.per_label == Counter({-1: cohort.n_files})


# ---- what an export holds besides images; duplicates; re-runs ---------------------------------------


def _add_oddities(folder: Path, cohort: SiteCohort) -> dict[str, str]:
    """Put next to the images what PACS exports contain; returns path -> expected reason category."""
    first = cohort.dicom_dir / cohort.files[0].relpath
    extras = folder / "extras"
    extras.mkdir()
    expected = {}
    for name, source, category in (
        ("DICOMDIR", get_testdata_file("DICOMDIR"), "DICOMDIR"),
        ("SR000001", get_testdata_file("reportsi.dcm"), "not an image"),
        ("RT000001", get_testdata_file("rtplan.dcm"), "not an image"),
        ("RT000002", get_testdata_file("rtstruct.dcm"), "kept"),  # contours: sealed for segmentation
    ):
        shutil.copyfile(str(source), extras / name)
        expected[f"extras/{name}"] = category
    (extras / "copy-of-first").write_bytes(first.read_bytes())  # the same instance twice
    expected["extras/copy-of-first"] = "duplicate"
    data = first.read_bytes()
    (extras / "truncated").write_bytes(data[: len(data) // 2])
    expected["extras/truncated"] = "truncated"
    (extras / "notes.txt").write_text("Export of 2026-11-02, 3 studies.\n")
    expected["extras/notes.txt"] = "not DICOM"
    (extras / "empty").write_bytes(b"")
    expected["extras/empty"] = "not DICOM"
    return expected


def test_an_export_with_oddities_reruns_and_additions(tmp_path: Path) -> None:
    cohort = _cohort(
        tmp_path / "export",
        ScannerProfile.for_modality("CT"),
        slices=12,
        layout="nested",  # P<patient>/ST<study>/SE<series>/IM<instance>
        file_extension="",  # no .dcm, as many PACS exports write them
        label_key="sop_instance_uid",  # so that a copy of a file carries the same label
    )
    expected = _add_oddities(cohort.dicom_dir, cohort)
    site = _site(tmp_path / "site")
    # First a partial export: half of the patients' folders are missing.
    partial = tmp_path / "partial"
    shutil.copytree(cohort.dicom_dir, partial)
    held_back = sorted(p for p in partial.iterdir() if p.name.startswith("P"))[::2]
    for folder in held_back:
        shutil.rmtree(folder)
    oddities = {p: c for p, c in expected.items() if c not in ("duplicate", "kept")}
    first = ingest_folder(site, partial, cohort.labels_csv, workers=2)
    assert first.label_objects_kept == 1
    # The first patient's folder is held back, so its copy in extras/ stands for it in this run.
    assert {p: r.partition(":")[0] for p, r in first.rejected} == oddities
    first_count = first.records_added
    assert 0 < first_count < cohort.n_files

    report = ingest_folder(site, cohort.dicom_dir, cohort.labels_csv, workers=2)
    assert report.files_seen == cohort.n_files + len(expected)
    # the original of the copy is stored already, and so is the structure set
    assert report.already_stored == first_count + 2 and report.label_objects_kept == 0
    assert report.records_added == cohort.n_files - first_count
    assert report.total_records == cohort.n_files
    assert {p: r.partition(":")[0] for p, r in report.rejected} == oddities
    sops = [e.sop for e in read_manifest(site.store_dir, load_site_key(site)).records]
    assert len(sops) == len(set(sops)) == cohort.n_files

    again = ingest_folder(site, cohort.dicom_dir, cohort.labels_csv, workers=2)
    assert again.records_added == 0 and again.already_stored == cohort.n_files + 2
    assert again.total_records == cohort.n_files and again.rejected == report.rejected
    sealed = latest_sealed_report(site, load_site_key(site))
    assert sealed is not None and sealed.rejected == again.rejected


def test_duplicates_within_one_run_are_counted_once(tmp_path: Path) -> None:
    cohort = _cohort(
        tmp_path / "export", ScannerProfile.for_modality("CT"), slices=10, label_key="study_instance_uid"
    )
    for index, f in enumerate(cohort.files[:4]):  # copies that other workers will meet
        shutil.copyfile(cohort.dicom_dir / f.relpath, cohort.dicom_dir / f"zz-copy-{index}")
    site = _site(tmp_path / "site")
    report = ingest_folder(site, cohort.dicom_dir, cohort.labels_csv, workers=2)
    assert report.records_added == cohort.n_files
    assert report.rejected_by_reason == Counter({"duplicate": 4})
    # Keyed by path, the copies have no label of their own: unlabelled, whichever worker meets them.
    by_path = _site(tmp_path / "by-path")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n" + "".join(f"{f.relpath},{f.label}\n" for f in cohort.files))
    report = ingest_folder(by_path, cohort.dicom_dir, labels, workers=2)
    assert report.records_added == cohort.n_files and not report.rejected
    assert sorted(report.unlabelled) == [f"zz-copy-{i}" for i in range(4)]


# ---- the split and the store ------------------------------------------------------------------------


def test_split_is_patient_level_and_reproducible_from_the_seed(tmp_path: Path) -> None:
    cohort = _cohort(tmp_path / "export", ScannerProfile.for_modality("CT"), slices=40)
    first = _site(tmp_path / "first")
    second_root = tmp_path / "second"
    shutil.copytree(first.root, second_root)  # the same site (secret) ingesting again from scratch
    second = SiteDir(second_root)
    splits = []
    for site, workers in ((first, 1), (second, 2)):
        ingest_folder(site, cohort.dicom_dir, cohort.labels_csv, workers=workers)
        entries = read_manifest(site.store_dir, load_site_key(site)).records
        by_patient: dict[str, set[str]] = {}
        for e in entries:
            by_patient.setdefault(e.patient, set()).add(e.split)
        assert all(len(s) == 1 for s in by_patient.values()), "a patient in two splits"
        splits.append({e.sop: (e.patient, e.split, e.label) for e in entries})
    assert splits[0] == splits[1]
    # ~20 patients: which splits are populated depends on the site's secret (the pseudonyms), so only
    # the training split is certain here; the fractions are checked on fixed pseudonyms in test_store.
    assert "train" in {split for _, split, _ in splits[0].values()}
    pixels = [{k: x for k, (_, x) in _records(site).items()} for site in (first, second)]
    assert pixels[0].keys() == pixels[1].keys()
    assert all(np.array_equal(pixels[0][k], pixels[1][k]) for k in pixels[0])
    # Another seed gives another split, and the store refuses to mix the two.
    shuffled = {e.patient: e.split for e in _store_with_seed(tmp_path / "other", first, 99)}
    assert shuffled != {p: s for p, s, _ in splits[0].values()}
    with pytest.raises(StoreError, match="seed"):
        StoreWriter(first.store_dir, load_site_key(first), image_size=32, split_seed=99)


def _store_with_seed(root: Path, site: SiteDir, seed: int) -> tuple[RecordEntry, ...]:
    key = load_site_key(site)
    writer = StoreWriter(root, key, image_size=32, split_seed=seed)
    for entry, pixels in iter_records(site.store_dir, key):
        from client.store import Record

        writer.add(Record(pixels, entry.label, entry.patient, entry.study, entry.meta, entry.sop))
    return writer.commit().records


def test_summary_and_sealed_report_agree_with_the_run(
    tmp_path: Path, reference: tuple[SiteCohort, SiteDir]
) -> None:
    cohort, site = reference
    key = load_site_key(site)
    summary = StoreSummary.of(read_manifest(site.store_dir, key))
    report = latest_sealed_report(site, key)
    assert report is not None
    assert summary.records == report.total_records == cohort.n_files
    assert summary.labels == {str(k): v for k, v in report.per_label.items()}
    assert summary.modalities == {"CT": cohort.n_files}
    assert summary.manufacturers == {cohort.scanner.manufacturer: cohort.n_files}
    assert summary.transfer_syntaxes == {UID(cohort.scanner.transfer_syntax).name: cohort.n_files}
    assert summary.patients == len({f.patient_id for f in cohort.files})
    entry = read_manifest(site.store_dir, key).records[0]
    assert entry.meta["pixel_spacing"] and len(entry.meta["pixel_spacing"]) == 2
    assert (entry.meta["rows"], entry.meta["columns"]) == cohort.scanner.matrix(SIZE)


def test_one_ingest_at_a_time(tmp_path: Path, reference: tuple[SiteCohort, SiteDir]) -> None:
    cohort, site = reference
    with store_lock(site.store_dir), pytest.raises(StoreError, match="another process"):
        ingest_folder(site, cohort.dicom_dir, cohort.labels_csv)


# ---- the commands --------------------------------------------------------------------------------


def test_ingest_and_inspect_commands_show_the_same_counts(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from common.cli import build_app

    cohort = _cohort(tmp_path / "export", ScannerProfile.for_modality("CT"), slices=6)
    (cohort.dicom_dir / "notes.txt").write_text("not a scan\n")
    site = _site(tmp_path / "site")
    runner = CliRunner()
    args = ["site", "ingest", "--site-dir", str(site.root), "--input", str(cohort.dicom_dir)]
    table = runner.invoke(build_app(), [*args, "--labels", str(cohort.labels_csv)])
    assert table.exit_code == 0, table.output
    assert "records labelled 1" in table.output and "not DICOM" in table.output
    assert "rejected notes.txt: not DICOM" in table.output
    rerun = runner.invoke(build_app(), [*args, "--labels", str(cohort.labels_csv), "--json"])
    report = json.loads(rerun.stdout)
    assert report["already_stored"] == cohort.n_files and report["records_added"] == 0
    assert report["rejected"] == [{"path": "notes.txt", "reason": report["rejected"][0]["reason"]}]
    inspect = runner.invoke(build_app(), ["site", "inspect", "--site-dir", str(site.root), "--json"])
    body = json.loads(inspect.stdout)
    assert body["records"] == cohort.n_files == sum(body["splits"].values())
    assert body["labels"] == {str(k): v for k, v in Counter(f.label for f in cohort.files).items()}
    assert body["last_ingest"]["rejected"] == report["rejected"]
    assert body["last_ingest"]["already_stored"] == cohort.n_files
    shown = runner.invoke(build_app(), ["site", "inspect", "--site-dir", str(site.root)])
    assert shown.exit_code == 0 and "last ingest" in shown.output and "modality CT" in shown.output
    missing = runner.invoke(
        build_app(), ["site", "ingest", "--site-dir", str(site.root), "--input", "/nonexistent"]
    )
    assert missing.exit_code != 0


@pytest.mark.parametrize(
    ("line", "named"),
    [('multiframe = "average"', "multiframe"), ('denoise = "yes"', "denoise"), ("clahe = 1", "clahe")],
)
def test_bad_pixel_settings_in_site_toml_are_named_before_anything_is_read(
    tmp_path: Path, line: str, named: str
) -> None:
    site = _site(tmp_path / "site")
    key = line.split(" = ")[0]
    text = "\n".join(
        line if row.startswith(f"{key} = ") else row for row in site.config_file.read_text().splitlines()
    )
    site.config_file.write_text(text + "\n")
    export = tmp_path / "export"
    export.mkdir()
    with pytest.raises(ConfigError, match=named):
        ingest_folder(site, export, None, keep_unlabelled=True)
    assert not site.store_dir.exists() or not any(site.store_dir.iterdir())


def test_segmentations_and_structure_sets_are_kept_sealed_and_deidentified(tmp_path: Path) -> None:
    """Ingest trains on images only, but keeps the label-bearing objects, sealed, with consistent UIDs."""
    import numpy as np
    import pydicom

    from client.deid import pseudonymize_uid
    from client.label_objects import iter_label_objects
    from client.site_init import load_deid_secret
    from simulations.export_objects import ExportIdentity, rt_structure_set, segmentation

    cohort = _cohort(tmp_path / "export", ScannerProfile.for_modality("CT"), slices=4)
    image_path = cohort.dicom_dir / cohort.files[0].relpath
    image = pydicom.dcmread(image_path)
    who = ExportIdentity("Kildare^James", "Quenby^Ann", "20230107", "101530", "contoured by Quenby")
    rng = np.random.default_rng(3)
    for name, build in (("SEG0001", segmentation), ("RTS0001", rt_structure_set)):
        build(image, who, rng).save_as(cohort.dicom_dir / name, enforce_file_format=True)
    site = _site(tmp_path / "site")
    report = ingest_folder(site, cohort.dicom_dir, cohort.labels_csv, workers=1)
    assert report.label_objects_kept == 2 and not report.rejected
    assert report.records_added == cohort.n_files  # no record from a label object
    sealed = sorted((site.store_dir / "label_objects").glob("*.fseal"))
    assert len(sealed) == 2
    for path in sealed:
        assert b"Quenby" not in path.read_bytes() and b"DICM" not in path.read_bytes()
    secret = load_deid_secret(site)
    kept = dict(iter_label_objects(site.store_dir, load_site_key(site)))
    new_image_sop = pseudonymize_uid(secret, str(image.SOPInstanceUID))
    for sop, data in kept.items():
        ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data))
        assert str(ds.SOPInstanceUID) == sop
        assert ds.PatientIdentityRemoved == "YES" and str(ds.PatientName) == ""
        assert b"Quenby" not in data and b"Kildare" not in data and image.PatientID.encode() not in data
        referenced = {str(e.value) for e in ds.iterall() if e.keyword == "ReferencedSOPInstanceUID"}
        assert new_image_sop in referenced  # the reference still names the stored image
