"""Synthetic multi-site cohorts: real DICOM files, written with pydicom, for demos, tests and benchmarks.

:func:`generate_cohort` writes, for each of ``spec.n_sites`` hospitals, a PACS-like export under
``<out_dir>/<site_id>/dicom`` and a labels file ``<out_dir>/<site_id>/labels.csv``. Everything follows
from ``spec.seed``: the same spec gives byte-identical files, whatever the number of ``workers``
(UIDs are name-based UUIDs, ``2.25.<int>``, named by seed, site, patient and instance).

**Phantom** (``simulations.phantom``): an axial abdomen-like slice drawn in millimetres: an elliptical body
(subcutaneous fat around soft tissue) on a CT couch, a vertebra (cortex and marrow) and a broken ring of
ribs, liver, spleen, kidneys, aorta and bowel gas as ellipses that grow and shrink with z, and a smooth
texture. The finding is a round lesion (radius ``lesion_radius_mm``, contrast ``lesion_contrast_hu`` x
U(0.75, 1.25), hyper-dense on CT/MR/CR, hypo-echoic on US) anywhere in the body's soft tissue away from
the spine. Each scanner (``simulations.scanners``) then applies its PSF, gain, offset, noise and
storage; MR/CR/DX/US use their own tissue tables, US its own sector renderer (``simulations.ultrasound``).
The defaults (200 HU, 15-30 mm) are learnt by the 3-conv CNN at 64x64 in 4-5 epochs on ~300 slices;
lower ``lesion_contrast_hu`` for harder experiments. CR/DX "slices" are radiograph-like renderings of
the same phantom (several images per study), not projections.

**Patients and labels.** A site's slices are split into patients of ``slices_per_patient`` (default 1-6)
adjacent slices, one study with one series each, spaced by the scanner's slice thickness. A patient
either has a lesion or not. The label of a slice is 1 iff the lesion is drawn in it, and it is drawn iff
its section at that z is at least half its radius (``phantom.lesion_visible``): no slivers.

* Default (``partial_lesions=False``): a lesion is centred on the patient's slab and long enough along z
  to show on *every* slice of it, so label per slice = label per series = label per study = label per
  patient. Every ``label_key`` is therefore consistent.
* ``partial_lesions=True``: the lesion (about as long as it is wide) is centred anywhere in the slab, so a
  patient with a lesion shows it on a run of adjacent slices and not on the others. Labels are then
  per slice only, and ``label_key`` must be ``path`` or ``sop_instance_uid`` (and no profile may be
  multi-frame).

Patients with a lesion are chosen greedily in random order so that a site's positive *slices* come as
close as possible to ``positive_fraction[site]`` without exceeding it. Fractions not given are drawn
per site as the first component of Dirichlet(alpha, alpha) (``label_skew_alpha``), clipped to
[0.05, 0.95] so every site has both classes.

**Labels CSV**: a header ``<key>,label`` and one row per file (``path`` relative to the site's DICOM
folder with ``/``, or ``sop_instance_uid``), per series (``series_instance_uid``) or per study
(``study_instance_uid``). Multi-frame files carry one label, the series'.

**Fake PHI** (``simulations.fake_phi``, ``simulations.pacs_export``): per file, the patient's name,
MRN, issuer, birth date, sex, age, address, telephone, other names, (0010,1002) *Other Patient IDs
Sequence* (an SSN-like and an insurance ID); study/series/acquisition/content/instance-creation dates
and times, accession number, study ID, referring, requesting, performing and reading physicians,
operator, institution name/address/department, station name, device serial number; free text with the
name inside ((0008,1030) *Study Description*, (0040,0007) in the (0040,0275) *Request Attributes
Sequence*) or name + MRN ((0020,4000) *Image Comments*, (0010,21B0) *Additional Patient History*, the
private LT (0009,xx04)); a private block (group 0009, creator ``ScannerProfile.private_creator``, e.g.
"ACME CT 1.0") holding name, MRN and birth date. With probability ``burned_in_fraction`` (per file; the
profile may override it, US defaults to 1) the name, MRN, birth date, accession number and study date are
also drawn into the pixels and (0028,0301) *Burned In Annotation* is "YES". ``SiteCohort.phi_values``
lists every identifying string exactly as written (not times, station names or serial numbers). Values
are encoded in the profile's (0008,0005) *Specific Character Set* (ISO_IR 100 or ISO_IR 192; some names
have accents), so compare decoded values, not raw bytes.
"""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from common.errors import ConfigError
from simulations.burned_in import text_mask
from simulations.fake_phi import (
    FakeInstitution,
    FakePatient,
    FakeStudy,
    draw_institution,
    draw_patient,
    draw_study,
)
from simulations.pacs_export import FilePlan, SeriesPlan, build_dataset, write_dataset
from simulations.phantom import (
    VISIBLE_FRACTION,
    Anatomy,
    Lesion,
    draw_anatomy,
    draw_lesion,
    lesion_visible,
    render_slice,
)
from simulations.scanners import (
    ScannerProfile,
    acquire,
    available_transfer_syntaxes,
    default_scanners,
    to_stored,
)
from simulations.ultrasound import render_us_frame, sector_contains

__all__ = [
    "LABEL_KEYS",
    "CohortFile",
    "CohortSpec",
    "ScannerProfile",
    "SiteCohort",
    "available_transfer_syntaxes",
    "default_scanners",
    "generate_cohort",
    "render_slice",
    "site_positive_fractions",
]

LABEL_KEYS = ("path", "sop_instance_uid", "series_instance_uid", "study_instance_uid")
_LAYOUTS = ("flat", "nested")
# Independent random streams, so that changing one choice never shifts another's draws.
_STREAM_LABELS, _STREAM_SITE, _STREAM_PATIENT, _STREAM_PIXELS = 1, 2, 3, 4
_UID_NAMESPACE = uuid.UUID("5f0c6e2a-9d4b-5c1e-8a37-3b1f2e6d9c40")  # fedscan synthetic cohorts


@dataclass(frozen=True)
class CohortSpec:
    """What to generate; validated on construction (``ValueError`` with the reason)."""

    n_sites: int = 3
    slices_per_site: int = 120
    image_size: int = 128
    positive_fraction: tuple[float, ...] | None = None
    label_skew_alpha: float = 2.0
    burned_in_fraction: float = 0.0
    label_key: str = "path"
    seed: int = 0
    scanners: tuple[ScannerProfile, ...] | None = None
    modality: str = "CT"  # of the default scanners, when ``scanners`` is None
    lesion_contrast_hu: float = 200.0
    lesion_radius_mm: tuple[float, float] = (15.0, 30.0)
    slices_per_patient: tuple[int, int] = (1, 6)
    partial_lesions: bool = False
    # flat: IM_<patient>_<instance>; nested: P<patient>/ST<study>/SE<series>/IM<instance> (DICOMDIR-like)
    layout: str = "flat"
    file_extension: str = ".dcm"  # "" for extension-less files, as many PACS exports write them

    def __post_init__(self) -> None:
        if self.n_sites < 1:
            raise ValueError(f"n_sites must be at least 1, got {self.n_sites}.")
        if self.slices_per_site < 1:
            raise ValueError(f"slices_per_site must be at least 1, got {self.slices_per_site}.")
        if not 16 <= self.image_size <= 4096:
            raise ValueError(f"image_size must be between 16 and 4096, got {self.image_size}.")
        if self.positive_fraction is not None:
            if len(self.positive_fraction) != self.n_sites:
                raise ValueError(
                    f"positive_fraction has {len(self.positive_fraction)} values for {self.n_sites} sites."
                )
            if not all(0.0 <= f <= 1.0 for f in self.positive_fraction):
                raise ValueError(
                    f"Every positive_fraction must be within [0, 1], got {self.positive_fraction}."
                )
        if self.label_skew_alpha <= 0:
            raise ValueError(f"label_skew_alpha must be positive, got {self.label_skew_alpha}.")
        if not 0.0 <= self.burned_in_fraction <= 1.0:
            raise ValueError(f"burned_in_fraction must be within [0, 1], got {self.burned_in_fraction}.")
        if self.label_key not in LABEL_KEYS:
            raise ValueError(f"label_key {self.label_key!r} is not one of {', '.join(LABEL_KEYS)}.")
        if self.seed < 0:
            raise ValueError(f"seed must not be negative, got {self.seed}.")
        if self.scanners is not None and len(self.scanners) != self.n_sites:
            raise ValueError(f"scanners has {len(self.scanners)} profiles for {self.n_sites} sites.")
        lo, hi = self.slices_per_patient
        if not 1 <= lo <= hi:
            raise ValueError(
                f"slices_per_patient must be (min, max) with 1 <= min <= max, got {self.slices_per_patient}."
            )
        r_lo, r_hi = self.lesion_radius_mm
        if not 0 < r_lo <= r_hi:
            raise ValueError(
                f"lesion_radius_mm must be (min, max) with 0 < min <= max, got {self.lesion_radius_mm}."
            )
        if self.layout not in _LAYOUTS:
            raise ValueError(f"layout {self.layout!r} is not one of {', '.join(_LAYOUTS)}.")
        if self.file_extension and not self.file_extension.startswith("."):
            raise ValueError(
                f"file_extension must be empty or start with a dot, got {self.file_extension!r}."
            )
        if self.partial_lesions:
            if self.label_key not in ("path", "sop_instance_uid"):
                raise ValueError(
                    "With partial_lesions a series mixes labels, "
                    "so label_key must be path or sop_instance_uid."
                )
            if any(p.multiframe for p in self.profiles()):
                raise ValueError(
                    "With partial_lesions a series mixes labels, so no profile may be multi-frame."
                )

    def profiles(self) -> tuple[ScannerProfile, ...]:
        """The scanners of the sites: ``scanners`` or ``default_scanners(n_sites, modality)``."""
        return self.scanners if self.scanners is not None else default_scanners(self.n_sites, self.modality)


@dataclass(frozen=True)
class CohortFile:
    """Ground truth of one written file (for tests and simulations; the site only sees labels.csv)."""

    relpath: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    patient_id: str
    label: int
    burned_in: bool
    n_frames: int


@dataclass(frozen=True)
class SiteCohort:
    """One generated site: where its files are, and what was planted in them."""

    site_id: str
    dicom_dir: Path
    labels_csv: Path
    n_files: int
    n_positive: int  # files with label 1
    phi_values: tuple[str, ...]
    scanner: ScannerProfile = field(default_factory=ScannerProfile)
    positive_fraction: float = 0.0  # the target the labels were drawn for
    files: tuple[CohortFile, ...] = ()


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(list(keys))


def _uid(seed: int, *parts: object) -> str:
    """A reproducible UUID-derived UID, ``2.25.<uuid as integer>`` (PS3.5 B.2), named by seed and parts.

    (``pydicom.uid.generate_uid(prefix=None, ...)`` ignores its entropy sources and returns a random
    UUID, so it cannot give a reproducible cohort; a name-based UUID (RFC 4122 version 5) can.)
    """
    name = "/".join(["fedscan-sim", str(seed), *map(str, parts)])
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, name).int}"


def site_positive_fractions(spec: CohortSpec) -> tuple[float, ...]:
    """Each site's target fraction of positive slices: given, or Beta(alpha, alpha) = Dirichlet marginal."""
    if spec.positive_fraction is not None:
        return tuple(float(f) for f in spec.positive_fraction)
    rng = _rng(spec.seed, _STREAM_LABELS)
    alpha = spec.label_skew_alpha
    return tuple(float(np.clip(rng.dirichlet([alpha, alpha])[0], 0.05, 0.95)) for _ in range(spec.n_sites))


def _relpath(spec: CohortSpec, patient: int, series_number: int, instance: int) -> str:
    if spec.layout == "nested":
        return f"P{patient + 1:07d}/ST000001/SE{series_number:06d}/IM{instance:06d}{spec.file_extension}"
    return f"IM_{patient + 1:05d}_{instance:03d}{spec.file_extension}"


@dataclass(frozen=True)
class _PatientDraft:
    """One patient's draws, made whether or not the patient ends up with a lesion."""

    patient: FakePatient
    study: FakeStudy
    anatomy: Anatomy
    lesion: Lesion  # a candidate: used only if the patient is chosen as positive
    z_mm: tuple[float, ...]
    visible: tuple[int, ...]  # per slice, were the lesion used
    burned: tuple[bool, ...]  # per file


def _draft_patient(
    spec: CohortSpec,
    site: int,
    index: int,
    n_slices: int,
    institution: FakeInstitution,
    profile: ScannerProfile,
    burned_fraction: float,
    within: Callable[[float, float], bool] | None,
) -> _PatientDraft:
    rng = _rng(spec.seed, _STREAM_PATIENT, site, index)
    patient = draw_patient(rng, institution)
    study = draw_study(rng, institution, patient)
    anatomy = draw_anatomy(rng)
    thickness = profile.slice_thickness_mm
    centre = float(rng.uniform(-40.0, 40.0))
    z = tuple(centre + thickness * (i - (n_slices - 1) / 2) for i in range(n_slices))
    if spec.partial_lesions:  # anywhere in the slab, about as long as wide: a run of positive slices
        lesion_z, min_half = float(rng.uniform(z[0] - thickness / 2, z[-1] + thickness / 2)), 0.0
    else:  # visible on the whole slab: |dz| <= h * sqrt(1 - VISIBLE_FRACTION**2) for every slice
        lesion_z = centre
        min_half = (n_slices - 1) * thickness / 2 / math.sqrt(1 - VISIBLE_FRACTION**2) + 0.25 * thickness
    lesion = draw_lesion(
        rng,
        anatomy,
        contrast_hu=spec.lesion_contrast_hu * float(rng.uniform(0.75, 1.25)),
        radius_mm=spec.lesion_radius_mm,
        z_mm=lesion_z,
        min_half_height_mm=min_half,
        within=within,
    )
    n_files = 1 if profile.multiframe else n_slices
    return _PatientDraft(
        patient=patient,
        study=study,
        anatomy=anatomy,
        lesion=lesion,
        z_mm=z,
        visible=tuple(int(lesion_visible(lesion, zi)) for zi in z),
        burned=tuple(bool(rng.random() < burned_fraction) for _ in range(n_files)),
    )


def _choose_positives(drafts: Sequence[_PatientDraft], target: int, rng: np.random.Generator) -> set[int]:
    """Patients given their lesion, greedily in random order, until ``target`` positive slices."""
    chosen: set[int] = set()
    n_positive = 0
    for p in rng.permutation(len(drafts)):
        k = sum(drafts[p].visible)
        if k and n_positive + k <= target:
            chosen.add(int(p))
            n_positive += k
    return chosen


def _plan_site(
    spec: CohortSpec, site: int, profile: ScannerProfile, fraction: float
) -> tuple[FakeInstitution, list[SeriesPlan]]:
    site_rng = _rng(spec.seed, _STREAM_SITE, site)
    institution = draw_institution(site_rng, site)
    rows, cols = profile.matrix(spec.image_size)
    lo, hi = spec.slices_per_patient
    counts: list[int] = []
    while (total := sum(counts)) < spec.slices_per_site:
        counts.append(min(int(site_rng.integers(lo, hi + 1)), spec.slices_per_site - total))
    burned_fraction = (
        spec.burned_in_fraction if profile.burned_in_fraction is None else profile.burned_in_fraction
    )
    within: Callable[[float, float], bool] | None = None
    if profile.modality == "US":  # the lesion must be in the imaged sector
        within = partial(sector_contains, rows=rows, cols=cols, fov_mm=profile.fov_mm, margin_mm=8.0)
    drafts = [
        _draft_patient(spec, site, p, n, institution, profile, burned_fraction, within)
        for p, n in enumerate(counts)
    ]
    positive = _choose_positives(drafts, round(fraction * spec.slices_per_site), site_rng)

    plans = []
    series_number = 2 if profile.modality in ("CT", "MR") else 1
    for p, d in enumerate(drafts):
        labels = d.visible if p in positive else tuple(0 for _ in d.z_mm)
        # Slices per file: one each, or the whole series in one multi-frame file (labels uniform then).
        n = len(d.z_mm)
        groups = [tuple(range(n))] if profile.multiframe else [(i,) for i in range(n)]
        files = tuple(
            FilePlan(
                relpath=_relpath(spec, p, series_number, k + 1),
                sop_instance_uid=_uid(spec.seed, site, p, "sop", k),
                instance_number=k + 1,
                slice_indices=group,
                label=max(labels[i] for i in group),
                burned_in=d.burned[k],
            )
            for k, group in enumerate(groups)
        )
        plans.append(
            SeriesPlan(
                site_index=site,
                patient_index=p,
                profile=profile,
                institution=institution,
                patient=d.patient,
                study=d.study,
                study_uid=_uid(spec.seed, site, p, "study"),
                series_uid=_uid(spec.seed, site, p, "series"),
                frame_of_reference_uid=_uid(spec.seed, site, p, "frame-of-reference"),
                rows=rows,
                cols=cols,
                z_mm=d.z_mm,
                files=files,
                anatomy=d.anatomy,
                lesion=d.lesion if p in positive else None,
                pixel_entropy=(spec.seed, _STREAM_PIXELS, site, p),
            )
        )
    return institution, plans


def _render_series(plan: SeriesPlan) -> list[np.ndarray]:
    """Pixels of every slice of a series, in stored form (uint16/int16, or uint8 RGB for US)."""
    prof, pat, study = plan.profile, plan.patient, plan.study
    rng = np.random.default_rng(list(plan.pixel_entropy))
    burned_slices = {i for f in plan.files if f.burned_in for i in f.slice_indices}
    identifying = (pat.pn, f"ID {pat.patient_id}", f"DOB {pat.birth_date:%Y%m%d}")
    right = (f"ACC {study.accession_number}", f"{study.date_str} {study.time[:4]}")
    out = []
    for i, z in enumerate(plan.z_mm):
        burned = i in burned_slices
        if prof.modality == "US":
            out.append(
                render_us_frame(
                    plan.anatomy,
                    plan.lesion,
                    plan.rows,
                    plan.cols,
                    fov_mm=prof.fov_mm,
                    z_mm=z,
                    gain=prof.gain,
                    noise=prof.noise,
                    rng=rng,
                    identifying_text=identifying if burned else (),
                    right_text=right if burned else (),
                )
            )
            continue
        phantom = render_slice(
            plan.anatomy,
            plan.rows,
            plan.cols,
            fov_mm=prof.fov_mm,
            z_mm=z,
            lesion=plan.lesion,
            modality=prof.modality,
            blur_mm=prof.blur_mm,
        )
        value = acquire(phantom, prof, rng)
        overlay = text_mask(plan.rows, plan.cols, top_left=identifying, top_right=right) if burned else None
        out.append(to_stored(value, prof, overlay))
    return out


def _write_series(plan: SeriesPlan, dicom_dir: Path) -> None:
    frames = _render_series(plan)
    for f in plan.files:
        pixels = frames[f.slice_indices[0]]
        if plan.profile.multiframe:
            pixels = np.stack([frames[i] for i in f.slice_indices])
        ds = build_dataset(plan, f, pixels)
        # Encoders expect a single frame without its frame axis, even when Number of Frames is present.
        encoded = pixels[0] if plan.profile.multiframe and len(f.slice_indices) == 1 else pixels
        write_dataset(ds, dicom_dir / f.relpath, plan.profile.transfer_syntax, encoded)


def _write_batch(plans: Sequence[SeriesPlan], dicom_dirs: Sequence[Path]) -> None:
    for plan, directory in zip(plans, dicom_dirs, strict=True):
        _write_series(plan, directory)


def _labels_csv(key: str, plans: Iterable[SeriesPlan]) -> str:
    rows: dict[str, int] = {}
    for plan in plans:
        for f in plan.files:
            k = {
                "path": f.relpath,
                "sop_instance_uid": f.sop_instance_uid,
                "series_instance_uid": plan.series_uid,
                "study_instance_uid": plan.study_uid,
            }[key]
            if rows.setdefault(k, f.label) != f.label:  # guarded by CohortSpec; a bug if it happens
                raise AssertionError(f"Files sharing the {key} {k} have different labels.")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([key, "label"])
    writer.writerows(rows.items())
    return buffer.getvalue()


def _check_environment(profiles: Sequence[ScannerProfile]) -> None:
    available = available_transfer_syntaxes()
    for i, profile in enumerate(profiles):
        if profile.transfer_syntax not in available:
            from pydicom.uid import UID

            names = ", ".join(UID(u).name for u in available)
            raise ConfigError(
                f"Site {i + 1} asks for {UID(profile.transfer_syntax).name}, which cannot be encoded here "
                f"(its pydicom encoder plugin is not installed); available: {names}."
            )


def generate_cohort(
    out_dir: Path, spec: CohortSpec, *, workers: int = 1, overwrite: bool = False
) -> list[SiteCohort]:
    """Write the cohort described by ``spec`` under ``out_dir`` and return one :class:`SiteCohort` per site.

    Parameters
    ----------
    out_dir:
        Parent of the site folders ``site-1``, ``site-2``, ...; nothing is written outside it.
    workers:
        Processes used to render and write files (the output does not depend on it).
    overwrite:
        Replace existing site folders; without it an existing, non-empty site folder is an error.

    Raises
    ------
    ConfigError
        A site's folder exists and is not empty, or a profile asks for a transfer syntax whose encoder is
        not installed (see :func:`available_transfer_syntaxes`).
    """
    out_dir = Path(out_dir)
    profiles = spec.profiles()
    _check_environment(profiles)
    fractions = site_positive_fractions(spec)
    site_plans = []
    for site, (profile, fraction) in enumerate(zip(profiles, fractions, strict=True)):
        site_dir = out_dir / f"site-{site + 1}"
        if site_dir.exists() and any(site_dir.iterdir()):
            if not overwrite:
                raise ConfigError(
                    f"{site_dir} already exists and is not empty; pass overwrite=True to replace it."
                )
            shutil.rmtree(site_dir)
        institution, plans = _plan_site(spec, site, profile, fraction)
        site_plans.append((site_dir, institution, plans))

    jobs = [(plan, site_dir / "dicom") for site_dir, _, plans in site_plans for plan in plans]
    workers = max(1, min(workers, os.cpu_count() or 1, len(jobs)))
    if workers == 1:
        _write_batch([p for p, _ in jobs], [d for _, d in jobs])
    else:
        batches = [jobs[i::workers] for i in range(workers)]
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_write_batch, [p for p, _ in b], [d for _, d in b]) for b in batches]
            for future in futures:
                future.result()

    cohorts = []
    for site, (site_dir, institution, plans) in enumerate(site_plans):
        labels_csv = site_dir / "labels.csv"
        labels_csv.write_text(_labels_csv(spec.label_key, plans), encoding="utf-8")
        phi: set[str] = set(institution.phi_values())
        for plan in plans:
            phi.update(plan.patient.phi_values())
            phi.update(plan.study.phi_values())
        files = tuple(
            CohortFile(
                f.relpath,
                f.sop_instance_uid,
                plan.series_uid,
                plan.study_uid,
                plan.patient.patient_id,
                f.label,
                f.burned_in,
                len(f.slice_indices),
            )
            for plan in plans
            for f in plan.files
        )
        (site_dir / "dicom").mkdir(parents=True, exist_ok=True)
        cohorts.append(
            SiteCohort(
                site_id=site_dir.name,
                dicom_dir=site_dir / "dicom",
                labels_csv=labels_csv,
                n_files=len(files),
                n_positive=sum(f.label for f in files),
                phi_values=tuple(sorted(phi)),
                scanner=profiles[site],
                positive_fraction=fractions[site],
                files=files,
            )
        )
    return cohorts
