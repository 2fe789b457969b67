"""The synthetic cohort generator: real, decodable DICOM files whose labels, PHI and scanner effects are
what the docs say, reproducible from the seed."""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut
from pydicom.uid import JPEGLSLossless

from common.errors import ConfigError
from simulations.cohort import (
    LABEL_KEYS,
    CohortSpec,
    ScannerProfile,
    SiteCohort,
    available_transfer_syntaxes,
    default_scanners,
    generate_cohort,
    render_slice,
    site_positive_fractions,
)
from simulations.phantom import draw_anatomy, draw_lesion, lesion_visible


def read_labels(cohort: SiteCohort) -> tuple[str, dict[str, int]]:
    with cohort.labels_csv.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    assert header[1] == "label" and len(header) == 2
    return header[0], {key: int(label) for key, label in body}


def files_on_disk(cohort: SiteCohort) -> list[Path]:
    return sorted(p for p in cohort.dicom_dir.rglob("*") if p.is_file())


def string_values(ds: Dataset) -> list[str]:
    """Every text value in a dataset, nested sequences and private elements included."""
    out: list[str] = []
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                out += string_values(item)
        elif elem.VR in ("PN", "LO", "SH", "ST", "LT", "UT", "DA", "CS", "AE"):
            values = elem.value if isinstance(elem.value, pydicom.multival.MultiValue) else [elem.value]
            out += [str(v) for v in values]
    return out


def hu(ds: Dataset) -> np.ndarray:
    return np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float32)


@pytest.fixture(scope="module")
def ct_cohort(tmp_path_factory: pytest.TempPathFactory) -> list[SiteCohort]:
    spec = CohortSpec(n_sites=3, slices_per_site=40, image_size=64, burned_in_fraction=0.3, seed=11)
    return generate_cohort(tmp_path_factory.mktemp("ct"), spec)


# ---- files, labels, keys --------------------------------------------------------------------------


def test_every_file_parses_and_the_labels_csv_covers_exactly_the_files(ct_cohort: list[SiteCohort]) -> None:
    for cohort in ct_cohort:
        key, labels = read_labels(cohort)
        assert key == "path"
        on_disk = {p.relative_to(cohort.dicom_dir).as_posix() for p in files_on_disk(cohort)}
        assert set(labels) == on_disk and len(on_disk) == cohort.n_files
        assert sum(labels.values()) == cohort.n_positive and set(labels.values()) <= {0, 1}
        for relpath in sorted(on_disk)[:8]:
            ds = pydicom.dcmread(cohort.dicom_dir / relpath)
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
            assert ds.pixel_array.shape == (ds.Rows, ds.Columns)
            assert ds.SOPClassUID == pydicom.uid.CTImageStorage


@pytest.mark.parametrize("key", LABEL_KEYS)
def test_labels_csv_joins_to_the_headers_for_every_key(tmp_path: Path, key: str) -> None:
    (cohort,) = generate_cohort(
        tmp_path, CohortSpec(n_sites=1, slices_per_site=24, image_size=32, label_key=key)
    )
    csv_key, labels = read_labels(cohort)
    assert csv_key == key
    truth = {f.relpath: f.label for f in cohort.files}
    joined: dict[str, int] = {}
    for path in files_on_disk(cohort):
        relpath = path.relative_to(cohort.dicom_dir).as_posix()
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        value = {
            "path": relpath,
            "sop_instance_uid": ds.SOPInstanceUID,
            "series_instance_uid": ds.SeriesInstanceUID,
            "study_instance_uid": ds.StudyInstanceUID,
        }[key]
        joined[relpath] = labels[value]
    assert joined == truth
    assert 0 < sum(truth.values()) < len(truth)


def test_positive_patients_show_the_lesion_on_every_slice_by_default(ct_cohort: list[SiteCohort]) -> None:
    for cohort in ct_cohort:
        by_patient: dict[str, set[int]] = {}
        for f in cohort.files:
            by_patient.setdefault(f.patient_id, set()).add(f.label)
        assert all(len(labels) == 1 for labels in by_patient.values())
        assert 1 <= max(Counter(f.patient_id for f in cohort.files).values()) <= 6


def test_partial_lesions_give_runs_of_adjacent_positive_slices(tmp_path: Path) -> None:
    spec = CohortSpec(
        n_sites=1,
        slices_per_site=120,
        image_size=32,
        partial_lesions=True,
        positive_fraction=(0.6,),
        scanners=(ScannerProfile(slice_thickness_mm=8.0),),
        slices_per_patient=(6, 6),
    )
    (cohort,) = generate_cohort(tmp_path, spec)
    runs = {}
    for f in cohort.files:
        runs.setdefault(f.patient_id, []).append(f.label)
    mixed = 0
    for labels in runs.values():
        ones = [i for i, label in enumerate(labels) if label]
        assert ones == list(range(ones[0], ones[-1] + 1)) if ones else True
        mixed += 0 < len(ones) < len(labels)
    assert mixed > 0
    with pytest.raises(ValueError, match="label_key"):
        CohortSpec(partial_lesions=True, label_key="study_instance_uid")


def test_layout_nested_without_extension_like_a_pacs_export(tmp_path: Path) -> None:
    spec = CohortSpec(n_sites=1, slices_per_site=10, image_size=32, layout="nested", file_extension="")
    (cohort,) = generate_cohort(tmp_path, spec)
    paths = files_on_disk(cohort)
    assert paths and all(p.suffix == "" and len(p.relative_to(cohort.dicom_dir).parts) == 4 for p in paths)
    _, labels = read_labels(cohort)
    assert set(labels) == {p.relative_to(cohort.dicom_dir).as_posix() for p in paths}
    pydicom.dcmread(paths[0]).pixel_array  # noqa: B018


# ---- labels across sites ------------------------------------------------------------------------------


def test_label_skew_is_drawn_per_site_and_respected(ct_cohort: list[SiteCohort]) -> None:
    fractions = site_positive_fractions(CohortSpec(n_sites=3, seed=11))
    assert len(set(fractions)) == 3 and all(0.05 <= f <= 0.95 for f in fractions)
    for cohort, target in zip(ct_cohort, fractions, strict=True):
        assert cohort.positive_fraction == target
        # Greedy whole patients (<= 6 slices each) from below: within a patient's worth of the target.
        assert target * 40 - 7 <= cohort.n_positive <= round(target * 40)


# ---- transfer syntaxes, modalities, photometric ---------------------------------------------------------


@pytest.mark.parametrize("syntax", available_transfer_syntaxes())
@pytest.mark.parametrize("modality", ["CT", "MR", "CR", "US"])
def test_every_offered_transfer_syntax_decodes_to_the_same_pixels(
    tmp_path: Path, syntax: str, modality: str
) -> None:
    plain = default_scanners(2, modality)
    coded = tuple(p.replace(transfer_syntax=syntax) for p in plain)
    base = CohortSpec(n_sites=2, slices_per_site=3, image_size=48, burned_in_fraction=0.5, scanners=plain)
    reference = generate_cohort(tmp_path / "plain", base)
    encoded = generate_cohort(tmp_path / "coded", CohortSpec(**{**base.__dict__, "scanners": coded}))
    for ref_site, site in zip(reference, encoded, strict=True):
        for f in site.files:
            ds = pydicom.dcmread(site.dicom_dir / f.relpath)
            assert ds.file_meta.TransferSyntaxUID == syntax
            expected = pydicom.dcmread(ref_site.dicom_dir / f.relpath).pixel_array
            np.testing.assert_array_equal(ds.pixel_array, expected)


@pytest.mark.skipif(JPEGLSLossless in available_transfer_syntaxes(), reason="a JPEG-LS encoder is installed")
def test_an_unavailable_encoder_is_a_clear_config_error(tmp_path: Path) -> None:
    spec = CohortSpec(n_sites=1, scanners=(ScannerProfile(transfer_syntax="jpeg-ls"),))
    with pytest.raises(ConfigError, match="JPEG-LS.*cannot be encoded here"):
        generate_cohort(tmp_path, spec)
    assert not any(tmp_path.iterdir())


def test_monochrome1_inverts_to_the_monochrome2_picture(tmp_path: Path) -> None:
    m2 = ScannerProfile.for_modality("CR", photometric="MONOCHROME2")
    m1 = m2.replace(photometric="MONOCHROME1")
    spec = CohortSpec(n_sites=1, slices_per_site=4, image_size=64, scanners=(m2,), burned_in_fraction=1.0)
    (plain,) = generate_cohort(tmp_path / "m2", spec)
    (inverted,) = generate_cohort(tmp_path / "m1", CohortSpec(**{**spec.__dict__, "scanners": (m1,)}))
    for f in plain.files:
        a = pydicom.dcmread(plain.dicom_dir / f.relpath)
        b = pydicom.dcmread(inverted.dicom_dir / f.relpath)
        assert (a.PhotometricInterpretation, b.PhotometricInterpretation) == ("MONOCHROME2", "MONOCHROME1")
        top = (1 << b.BitsStored) - 1
        np.testing.assert_array_equal(top - b.pixel_array.astype(np.int32), a.pixel_array)
        # Displayed (after inversion) the body is brighter than the air around it, as on MONOCHROME2.
        shown = top - b.pixel_array.astype(np.float32)
        assert shown[24:40, 24:40].mean() > shown[-6:, :6].mean() + 500


def test_ultrasound_is_rgb_with_burned_in_text_and_multiframe_works(tmp_path: Path) -> None:
    us = ScannerProfile.for_modality("US", multiframe=True)
    ct = ScannerProfile(multiframe=True)
    spec = CohortSpec(
        n_sites=2, slices_per_site=12, image_size=48, scanners=(us, ct), label_key="sop_instance_uid"
    )
    for cohort in generate_cohort(tmp_path, spec):
        _, labels = read_labels(cohort)
        assert sum(f.n_frames for f in cohort.files) == 12 and len(labels) == cohort.n_files
        for f in cohort.files:
            ds = pydicom.dcmread(cohort.dicom_dir / f.relpath)
            assert int(ds.NumberOfFrames) == f.n_frames and labels[ds.SOPInstanceUID] == f.label
            frames = ds.pixel_array.reshape(f.n_frames, ds.Rows, ds.Columns, -1)
            if ds.Modality == "US":
                assert ds.PhotometricInterpretation == "RGB" and frames.shape[-1] == 3
                assert ds.SOPClassUID == pydicom.uid.UltrasoundMultiFrameImageStorage
                assert ds.BurnedInAnnotation == "YES"  # ultrasound burns identifying text in by default
            else:
                assert ds.SOPClassUID == pydicom.uid.MultiFrameGrayscaleWordSecondaryCaptureImageStorage
                locations = np.atleast_1d(np.asarray(ds.SliceLocationVector, dtype=float))
                assert len(locations) == f.n_frames


# ---- scanner differences ---------------------------------------------------------------------------------


def noise_estimate(image: np.ndarray) -> float:
    """Robust white-noise level: MAD of a high-pass of the central quarter (edges are outliers)."""
    rows, cols = image.shape
    centre = image[rows // 3 : 2 * rows // 3, cols // 3 : 2 * cols // 3].astype(np.float32)
    high = centre - cv2.GaussianBlur(centre, (0, 0), 2.0)
    return float(np.median(np.abs(high - np.median(high))) * 1.4826)


def test_sites_differ_like_scanners_do(ct_cohort: list[SiteCohort]) -> None:
    headers, noise = [], []
    for cohort in ct_cohort:
        datasets = [pydicom.dcmread(cohort.dicom_dir / f.relpath) for f in cohort.files[:10]]
        headers.append(
            {(d.Manufacturer, d.Rows, str(d.PixelSpacing[0]), d.PixelRepresentation) for d in datasets}
        )
        noise.append(float(np.median([noise_estimate(hu(d)) for d in datasets])))
    assert all(len(h) == 1 for h in headers) and len({next(iter(h)) for h in headers}) == 3
    assert noise[0] < noise[1] < noise[2], noise  # default noise 12, 20, 29 HU
    assert noise[2] > 1.6 * noise[0]


def test_ct_storage_variants_decode_to_hounsfield_units(ct_cohort: list[SiteCohort]) -> None:
    for cohort in ct_cohort[:2]:  # uint16 + intercept -1024, int16 + intercept 0
        ds = pydicom.dcmread(cohort.dicom_dir / cohort.files[0].relpath)
        values = hu(ds)
        body = values[28:36, 28:36]
        assert -150 < float(np.median(body)) < 300  # soft tissue or organ, whatever the storage
        assert float(np.median(values[:, :3])) < -900  # air at the image edge
    stored = {pydicom.dcmread(c.dicom_dir / c.files[0].relpath).pixel_array.dtype for c in ct_cohort[:2]}
    assert stored == {np.dtype(np.uint16), np.dtype(np.int16)}


# ---- PHI --------------------------------------------------------------------------------------------------


def test_planted_phi_is_where_a_real_export_has_it(ct_cohort: list[SiteCohort]) -> None:
    cohort = ct_cohort[0]
    phi = set(cohort.phi_values)
    all_text: set[str] = set()
    for f in cohort.files:
        ds = pydicom.dcmread(cohort.dicom_dir / f.relpath, stop_before_pixels=True)
        all_text.update(string_values(ds))
        assert str(ds.PatientName) in phi and ds.PatientID in phi and ds.PatientAddress in phi
        assert ds.PatientBirthDate in phi and ds.StudyDate in phi and ds.AccessionNumber in phi
        assert ds.InstitutionName in phi and str(ds.ReferringPhysicianName) in phi
        assert ds.OtherPatientIDsSequence[0].PatientID in phi
        assert ds.PatientID in ds.ImageComments and ds.PatientID in ds.AdditionalPatientHistory
        request = ds.RequestAttributesSequence[0]
        assert request.AccessionNumber == ds.AccessionNumber
        assert str(ds.PatientName).split("^")[0] in request.ScheduledProcedureStepDescription
        block = ds.private_block(0x0009, cohort.scanner.private_creator)
        assert str(block[0x01].value) == str(ds.PatientName) and block[0x02].value == ds.PatientID
        assert ds.BurnedInAnnotation == ("YES" if f.burned_in else "NO")
    # Every listed value really is in the files (so a de-identification test that looks for them means it).
    missing = [v for v in phi if not any(v in text for text in all_text)]
    assert not missing


def test_burned_in_text_is_in_the_pixels(ct_cohort: list[SiteCohort]) -> None:
    burned = [(c, f) for c in ct_cohort for f in c.files if f.burned_in]
    clean = [(c, f) for c in ct_cohort for f in c.files if not f.burned_in]
    assert 0.15 < len(burned) / (len(burned) + len(clean)) < 0.45
    for group, expect_text in ((burned[:6], True), (clean[:6], False)):
        for cohort, f in group:
            values = hu(pydicom.dcmread(cohort.dicom_dir / f.relpath))
            corner = values[: values.shape[0] // 6, : values.shape[1] // 2]
            assert bool((corner > 2000).any()) == expect_text  # text is written at the brightest value


# ---- reproducibility ------------------------------------------------------------------------------------


def digest(cohorts: list[SiteCohort]) -> dict[str, str]:
    out = {}
    for cohort in cohorts:
        for path in [cohort.labels_csv, *files_on_disk(cohort)]:
            out[f"{cohort.site_id}/{path.name}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def test_same_seed_same_bytes_whatever_the_workers(tmp_path: Path) -> None:
    spec = CohortSpec(n_sites=2, slices_per_site=12, image_size=32, burned_in_fraction=0.5, seed=5)
    first = digest(generate_cohort(tmp_path / "a", spec))
    assert first == digest(generate_cohort(tmp_path / "b", spec, workers=2))
    other = digest(generate_cohort(tmp_path / "c", CohortSpec(**{**spec.__dict__, "seed": 6})))
    assert set(first.values()).isdisjoint(other.values())


def test_existing_output_is_refused_unless_overwrite(tmp_path: Path) -> None:
    spec = CohortSpec(n_sites=1, slices_per_site=3, image_size=32)
    generate_cohort(tmp_path, spec)
    with pytest.raises(ConfigError, match="not empty"):
        generate_cohort(tmp_path, spec)
    (cohort,) = generate_cohort(tmp_path, spec, overwrite=True)
    assert len(files_on_disk(cohort)) == 3


@pytest.mark.parametrize(
    "bad",
    [
        dict(label_key="accession"),
        dict(n_sites=2, positive_fraction=(0.5,)),
        dict(burned_in_fraction=1.5),
        dict(layout="tree"),
        dict(n_sites=1, scanners=(ScannerProfile(multiframe=True),), partial_lesions=True),
    ],
)
def test_invalid_specs_fail_on_construction(bad: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError):
        CohortSpec(**bad)


def test_invalid_profiles_fail_on_construction() -> None:
    with pytest.raises(ValueError, match="Modality"):
        ScannerProfile(modality="PT")
    with pytest.raises(ValueError, match="without a rescale"):
        ScannerProfile(modality="MR")  # CT's intercept of -1024 makes no sense for MR
    with pytest.raises(ValueError, match="Transfer syntax"):
        ScannerProfile(transfer_syntax="jpeg-xl")
    with pytest.raises(ValueError, match="Multi-frame"):
        ScannerProfile(pixel_representation=1, rescale_intercept=0.0, multiframe=True)


# ---- the phantom and learnability ------------------------------------------------------------------------


def test_render_slice_is_pure_and_the_lesion_is_local() -> None:
    rng = np.random.default_rng(3)
    anatomy = draw_anatomy(rng)
    lesion = draw_lesion(rng, anatomy, contrast_hu=200.0)
    plain = render_slice(anatomy, 96, fov_mm=360.0)
    with_lesion = render_slice(anatomy, 96, fov_mm=360.0, lesion=lesion)
    np.testing.assert_array_equal(with_lesion, render_slice(anatomy, 96, fov_mm=360.0, lesion=lesion))
    changed = np.argwhere(with_lesion != plain)
    spacing = 360.0 / 96
    centre = np.array([48 - 0.5 + lesion.y_mm / spacing, 48 - 0.5 + lesion.x_mm / spacing])
    assert len(changed) > 0
    assert np.hypot(*(changed - centre).T).max() <= lesion.radius_mm / spacing + 1.5
    assert float((with_lesion - plain).max()) == pytest.approx(lesion.contrast_hu)
    far = lesion.z_mm + 2 * lesion.half_height_mm
    assert not lesion_visible(lesion, far)
    np.testing.assert_array_equal(
        render_slice(anatomy, 96, z_mm=far, lesion=lesion), render_slice(anatomy, 96, z_mm=far)
    )


def test_the_finding_is_learnable_from_a_few_pixels(tmp_path: Path) -> None:
    """A linear model on the intensity histogram of 64x64 slices separates the labels on held-out patients.

    (The lesion is translation-variant, so pixels at 16x16 would mostly test the linear model; the
    histogram asks the question that matters here: is the finding in the pixels at a CNN's resolution?)
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    spec = CohortSpec(n_sites=3, slices_per_site=90, image_size=96, positive_fraction=(0.5, 0.5, 0.5), seed=2)
    cohort = generate_cohort(tmp_path, spec)[2]  # the noisiest default site
    features, labels, groups = [], [], []
    for f in cohort.files:
        small = cv2.resize(
            hu(pydicom.dcmread(cohort.dicom_dir / f.relpath)), (64, 64), interpolation=cv2.INTER_AREA
        )
        features.append(np.histogram(small, bins=24, range=(-200, 400))[0] / small.size)
        labels.append(f.label)
        groups.append(f.patient_id)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    scores = cross_val_score(model, np.array(features), np.array(labels), groups=groups, cv=GroupKFold(4))
    assert scores.mean() > 0.75, scores
