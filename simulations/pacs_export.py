"""DICOM files as a PACS export writes them: headers full of (fake) PHI, vendor tags, pixel data.

:func:`build_dataset` turns one planned file (:class:`FilePlan`) and its pixels into a
:class:`pydicom.Dataset`; :func:`write_dataset` encodes the pixel data in the profile's transfer syntax
and saves a valid Part 10 file (preamble, File Meta Information).

PHI is planted where real exports carry it (see ``simulations.cohort`` for the list): the Patient and
General Study modules, equipment and institution tags, free text ((0008,1030) *Study Description*,
(0020,4000) *Image Comments*, (0010,21B0) *Additional Patient History*), nested sequences ((0010,1002)
*Other Patient IDs Sequence*, (0040,0275) *Request Attributes Sequence* with an Issuer of Accession
Number sub-sequence, (0008,1032) *Procedure Code Sequence* whose Code Meaning names the patient: kept by
the Basic Profile, so only the known-value scrub removes it), and a private block (creator = the
profile's ``private_creator``, group 0009) whose elements 0x01-0x04 hold the name, MRN, birth date and a
free-text comment with both; 0x10-0x11 hold non-identifying acquisition values (a "safe private"
candidate).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import uid as dcm_uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence

from simulations.fake_phi import FakeInstitution, FakePatient, FakeStudy
from simulations.phantom import Anatomy, Lesion
from simulations.scanners import ScannerProfile, window_from_pixels

__all__ = ["FilePlan", "SeriesPlan", "build_dataset", "write_dataset"]

_SOP_CLASS = {
    "CT": dcm_uid.CTImageStorage,
    "MR": dcm_uid.MRImageStorage,
    "CR": dcm_uid.ComputedRadiographyImageStorage,
    "DX": dcm_uid.DigitalXRayImageStorageForPresentation,
    "US": dcm_uid.UltrasoundImageStorage,
}
_MULTIFRAME_SOP_CLASS = {
    "CT": dcm_uid.MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    "MR": dcm_uid.MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    "US": dcm_uid.UltrasoundMultiFrameImageStorage,
}
_PROCEDURE = {
    "CT": "CT ABDOMEN W/O CONTRAST",
    "MR": "MRI ABDOMEN T1",
    "CR": "XR ABDOMEN 1 VIEW",
    "DX": "XR ABDOMEN 1 VIEW",
    "US": "US ABDOMEN COMPLETE",
}
_IMPLEMENTATION_VERSION = "FEDSCAN_SIM_1"


@dataclass(frozen=True)
class FilePlan:
    """One file to write: its path relative to the DICOM folder and what it contains."""

    relpath: str
    sop_instance_uid: str
    instance_number: int
    slice_indices: tuple[int, ...]  # indices into the series' z positions (several if multi-frame)
    label: int
    burned_in: bool


@dataclass(frozen=True)
class SeriesPlan:
    """Everything needed to render and write one patient's series, decided before any pixel is drawn."""

    site_index: int
    patient_index: int
    profile: ScannerProfile
    institution: FakeInstitution
    patient: FakePatient
    study: FakeStudy
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    rows: int
    cols: int
    z_mm: tuple[float, ...]
    files: tuple[FilePlan, ...]
    anatomy: Anatomy
    lesion: Lesion | None
    pixel_entropy: tuple[int, ...]

    @property
    def pixel_spacing(self) -> float:
        """(0028,0030) *Pixel Spacing*, square pixels, in mm."""
        return self.profile.fov_mm / self.cols


def _ds_str(value: float) -> str:
    """A decimal string (DS) of at most 16 characters."""
    text = f"{value:.8g}"
    return text if len(text) <= 16 else f"{value:.6g}"


def _age(plan: SeriesPlan) -> str:
    born, seen = plan.patient.birth_date, plan.study.date
    years = seen.year - born.year - ((seen.month, seen.day) < (born.month, born.day))
    return f"{years:03d}Y"


def _identity(ds: Dataset, plan: SeriesPlan) -> None:
    """Patient, study, equipment and request attributes: where real exports carry PHI."""
    p, s, inst, prof = plan.patient, plan.study, plan.institution, plan.profile
    ds.SpecificCharacterSet = prof.character_set
    ds.InstanceCreationDate = s.date_str
    ds.InstanceCreationTime = s.time
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = s.date_str
    ds.StudyTime = s.time
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = s.time
    ds.AccessionNumber = s.accession_number
    ds.Modality = prof.modality
    ds.Manufacturer = prof.manufacturer
    ds.InstitutionName = inst.name
    ds.InstitutionAddress = inst.address
    ds.ReferringPhysicianName = s.referring_physician
    ds.ReferringPhysicianTelephoneNumbers = inst.phone
    ds.StationName = prof.station_name
    ds.StudyDescription = f"{_PROCEDURE[prof.modality]} - {p.listed_name}"
    ds.SeriesDescription = {"CT": "AX 5mm ABD", "MR": "AX T1 SE", "US": "ABD SWEEP"}.get(
        prof.modality, "AP SUPINE"
    )
    ds.InstitutionalDepartmentName = inst.department
    ds.PerformingPhysicianName = s.operator
    ds.NameOfPhysiciansReadingStudy = s.reading_physician
    ds.OperatorsName = s.operator
    ds.ManufacturerModelName = prof.model_name

    ds.PatientName = p.pn
    ds.PatientID = p.patient_id
    ds.IssuerOfPatientID = inst.issuer
    ds.PatientBirthDate = p.birth_date.strftime("%Y%m%d")
    ds.PatientSex = p.sex
    ds.OtherPatientNames = f"{p.family.upper()}^{p.given.upper()}"
    ds.PatientAge = _age(plan)
    ds.PatientAddress = p.address
    ds.PatientTelephoneNumbers = p.phone
    ds.AdditionalPatientHistory = f"{p.display_name} (MRN {p.patient_id}): {p.history}"
    ds.PatientComments = f"Contact {p.phone}"
    other_ids = []
    for value, issuer in zip(p.other_ids, ("SSA", "INSURER"), strict=True):
        item = Dataset()
        item.PatientID = value
        item.IssuerOfPatientID = issuer
        item.TypeOfPatientID = "TEXT"
        other_ids.append(item)
    ds.OtherPatientIDsSequence = Sequence(other_ids)

    ds.DeviceSerialNumber = prof.device_serial_number
    ds.SoftwareVersions = prof.software_versions
    ds.ProtocolName = f"{_PROCEDURE[prof.modality]} ({prof.station_name})"
    ds.BodyPartExamined = "ABDOMEN"
    ds.RequestingPhysician = s.referring_physician
    ds.RequestedProcedureDescription = _PROCEDURE[prof.modality]
    ds.PerformedProcedureStepStartDate = s.date_str
    ds.PerformedProcedureStepStartTime = s.time
    ds.PerformedProcedureStepID = s.scheduled_step_id
    ds.PerformedProcedureStepDescription = _PROCEDURE[prof.modality]
    issuer_item = Dataset()
    issuer_item.LocalNamespaceEntityID = inst.issuer
    request = Dataset()
    request.AccessionNumber = s.accession_number
    request.IssuerOfAccessionNumberSequence = Sequence([issuer_item])
    request.RequestedProcedureID = s.requested_procedure_id
    request.RequestedProcedureDescription = _PROCEDURE[prof.modality]
    request.ScheduledProcedureStepID = s.scheduled_step_id
    request.ScheduledProcedureStepDescription = f"{_PROCEDURE[prof.modality]} for {p.listed_name}"
    ds.RequestAttributesSequence = Sequence([request])
    # A coded procedure whose meaning a technologist typed with the patient's name: an attribute the
    # Basic Profile keeps, cleaned only by scrubbing the data set's own identifying values.
    procedure = Dataset()
    procedure.CodeValue = {"CT": "CTABD", "MR": "MRABD", "US": "USABD"}.get(prof.modality, "XRABD")
    procedure.CodingSchemeDesignator = inst.issuer
    procedure.CodeMeaning = f"{_PROCEDURE[prof.modality]} {p.listed_name} {p.patient_id}"
    ds.ProcedureCodeSequence = Sequence([procedure])

    ds.StudyInstanceUID = plan.study_uid
    ds.SeriesInstanceUID = plan.series_uid
    ds.StudyID = s.requested_procedure_id[-6:]
    ds.SeriesNumber = 2 if prof.modality in ("CT", "MR") else 1
    ds.ImageComments = f"Pt {p.display_name}, MRN {p.patient_id}, DOB {p.birth_date:%m/%d/%Y}"

    block = ds.private_block(0x0009, prof.private_creator, create=True)
    block.add_new(0x01, "PN", p.pn)
    block.add_new(0x02, "LO", p.patient_id)
    block.add_new(0x03, "DA", p.birth_date.strftime("%Y%m%d"))
    block.add_new(0x04, "LT", f"Recon for {p.display_name} / {p.patient_id} / ref {s.referring_physician}")
    block.add_new(0x10, "DS", _ds_str(prof.gain))
    block.add_new(0x11, "LO", "CALIBRATION OK")


def _acquisition(ds: Dataset, plan: SeriesPlan, slice_index: int) -> None:
    """Modality-specific acquisition attributes and geometry of one single-frame image."""
    prof = plan.profile
    z = plan.z_mm[slice_index]
    half_w = plan.cols * plan.pixel_spacing / 2.0
    half_h = plan.rows * plan.pixel_spacing / 2.0
    if prof.modality in ("CT", "MR"):
        ds.ImagePositionPatient = [
            _ds_str(-half_w + plan.pixel_spacing / 2),
            _ds_str(-half_h + plan.pixel_spacing / 2),
            _ds_str(z),
        ]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.FrameOfReferenceUID = plan.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = _ds_str(z)
        ds.PatientPosition = "HFS"
    if prof.modality == "CT":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.KVP = "120"
        ds.XRayTubeCurrent = 180 + 20 * plan.site_index
        ds.ConvolutionKernel = "B30f" if prof.blur_mm >= 1.0 else "B60f"
        ds.DataCollectionDiameter = "500"
        ds.ReconstructionDiameter = _ds_str(prof.fov_mm)
        ds.GantryDetectorTilt = "0"
    elif prof.modality == "MR":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime = "500"
        ds.EchoTime = "12"
        ds.EchoTrainLength = 1
        ds.MagneticFieldStrength = "3" if "3T" in prof.model_name else "1.5"
        ds.ImagingFrequency = "127.7" if "3T" in prof.model_name else "63.9"
    elif prof.modality in ("CR", "DX"):
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.ViewPosition = "AP"
        ds.PatientOrientation = ["L", "F"]
        ds.KVP = "80"
        ds.ImagerPixelSpacing = [_ds_str(plan.pixel_spacing)] * 2
        if prof.modality == "DX":
            ds.PresentationIntentType = "FOR PRESENTATION"
            ds.PixelIntensityRelationship = "LOG"
            ds.PixelIntensityRelationshipSign = 1
            ds.DetectorType = "SCINTILLATOR"
            ds.ImageLaterality = "U"
            ds.AnatomicRegionSequence = Sequence()
    elif prof.modality == "US":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL", ""]
        ds.TransducerData = "C5-2"
        region = Dataset()
        region.RegionSpatialFormat = 1
        region.RegionDataType = 1
        region.RegionFlags = 2
        region.RegionLocationMinX0 = 0
        region.RegionLocationMinY0 = 0
        region.RegionLocationMaxX1 = plan.cols - 1
        region.RegionLocationMaxY1 = plan.rows - 1
        region.PhysicalUnitsXDirection = 3  # cm
        region.PhysicalUnitsYDirection = 3
        region.PhysicalDeltaX = plan.pixel_spacing / 10.0
        region.PhysicalDeltaY = plan.pixel_spacing / 10.0
        ds.SequenceOfUltrasoundRegions = Sequence([region])
    if prof.modality != "US":
        ds.SliceThickness = _ds_str(prof.slice_thickness_mm)
        ds.PixelSpacing = [_ds_str(plan.pixel_spacing)] * 2


def _pixel_module(ds: Dataset, plan: SeriesPlan, pixels: np.ndarray, burned_in: bool) -> None:
    prof = plan.profile
    n_frames = pixels.shape[0] if pixels.ndim == (4 if prof.modality == "US" else 3) else 1
    ds.Rows, ds.Columns = plan.rows, plan.cols
    ds.PhotometricInterpretation = prof.photometric
    ds.BitsAllocated = 8 if prof.modality == "US" else 16
    ds.BitsStored = prof.bits_stored
    ds.HighBit = prof.bits_stored - 1
    ds.PixelRepresentation = prof.pixel_representation
    if prof.modality == "US":
        ds.SamplesPerPixel = 3
        ds.PlanarConfiguration = 0
    else:
        ds.SamplesPerPixel = 1
    if prof.multiframe:
        ds.NumberOfFrames = n_frames
    ds.BurnedInAnnotation = "YES" if burned_in else "NO"
    ds.LossyImageCompression = "00"
    if prof.modality in ("CT", "DX") or (prof.multiframe and prof.modality == "MR"):
        ds.RescaleIntercept = _ds_str(prof.rescale_intercept)
        ds.RescaleSlope = _ds_str(prof.rescale_slope)
        ds.RescaleType = "HU" if prof.modality == "CT" else "US"
    if prof.padding_value is not None:
        padded = round((prof.padding_value - prof.rescale_intercept) / prof.rescale_slope)
        ds.add_new(0x00280120, "SS" if prof.pixel_representation else "US", padded)
    if prof.modality != "US":
        if prof.windows:
            ds.WindowCenter = [_ds_str(c) for c, _ in prof.windows]
            ds.WindowWidth = [_ds_str(w) for _, w in prof.windows]
            if len(prof.windows) > 1:
                ds.WindowCenterWidthExplanation = ["ABDOMEN", "LUNG", "BONE", "BRAIN"][: len(prof.windows)]
        else:
            center, width = window_from_pixels(pixels.reshape(-1, pixels.shape[-1]))
            ds.WindowCenter, ds.WindowWidth = _ds_str(center), _ds_str(width)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds["PixelData"].VR = "OB" if ds.BitsAllocated == 8 else "OW"


def build_dataset(plan: SeriesPlan, file: FilePlan, pixels: np.ndarray) -> Dataset:
    """The complete dataset of one file; ``pixels`` is (rows, cols[, 3]) or (frames, rows, cols[, 3])."""
    prof = plan.profile
    ds = Dataset()
    multiframe = prof.multiframe
    ds.SOPClassUID = (_MULTIFRAME_SOP_CLASS if multiframe else _SOP_CLASS)[prof.modality]
    ds.SOPInstanceUID = file.sop_instance_uid
    _identity(ds, plan)
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = file.instance_number
    if multiframe:
        if prof.modality == "US":
            _acquisition(ds, plan, file.slice_indices[0])
            ds.FrameTime = "33.3"
            ds.CineRate = 30
            ds.FrameIncrementPointer = 0x00181063  # (0018,1063) Frame Time
        else:
            ds.ImageType = ["DERIVED", "SECONDARY"]
            ds.ConversionType = "WSD"
            ds.FrameIncrementPointer = 0x00182005  # (0018,2005) Slice Location Vector
            ds.SliceLocationVector = [_ds_str(plan.z_mm[i]) for i in file.slice_indices]
            ds.PixelSpacing = [_ds_str(plan.pixel_spacing)] * 2
            ds.SliceThickness = _ds_str(prof.slice_thickness_mm)
    else:
        _acquisition(ds, plan, file.slice_indices[0])
    _pixel_module(ds, plan, pixels, file.burned_in)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = dcm_uid.ExplicitVRLittleEndian
    meta.ImplementationClassUID = dcm_uid.PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = _IMPLEMENTATION_VERSION
    meta.SourceApplicationEntityTitle = prof.station_name[:16]
    ds.file_meta = meta
    return ds


def write_dataset(ds: Dataset, path: Path, transfer_syntax: str, pixels: np.ndarray) -> None:
    """Encode the pixel data in ``transfer_syntax`` (lossless) and save ``ds`` as a Part 10 file."""
    if transfer_syntax in (dcm_uid.RLELossless, dcm_uid.JPEGLSLossless, dcm_uid.JPEG2000Lossless):
        ds.compress(transfer_syntax, np.ascontiguousarray(pixels), generate_instance_uid=False)
    else:
        ds.file_meta.TransferSyntaxUID = dcm_uid.UID(transfer_syntax)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
