"""The non-image objects of a PACS export, built around one image and carrying its (fake) PHI.

A real export of a study holds, besides the images, the objects that describe them: a structured
report (SR) with the findings, a key object selection (KOS) flagging images, a presentation state (PR)
with annotations, a segmentation (SEG) or an RT structure set (RTSTRUCT) with the contours a model
learns from, and sometimes a scanned request as an encapsulated PDF, raw data or a waveform. Each
copies the patient and study identity of the images it references and adds identity of its own
(observers, authors, free text, dates and times), and each points at the images by their UIDs.

The builders here make those objects from a ``source`` image data set (any image: a cohort file, a
pydicom test file) so that de-identification tests can check that every object is cleaned and that
the references still resolve afterwards. They are written with pydicom, attribute by attribute, so
that PHI can be planted where real systems put it (PS3.3 A.35 SR, A.59 KOS, A.33 GSPS, A.51 SEG,
A.19 RT Structure Set, A.45 Encapsulated PDF, A.37 Raw Data, A.34 ECG).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pydicom import uid as dcm_uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence

__all__ = [
    "ExportIdentity",
    "NON_IMAGE_BUILDERS",
    "encapsulated_pdf",
    "key_object_selection",
    "presentation_state",
    "raw_data",
    "rt_structure_set",
    "segmentation",
    "structured_report",
    "waveform_with_free_text",
]

_PATIENT_STUDY_KEYWORDS = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "OtherPatientIDsSequence",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
    "InstitutionName",
)


@dataclass(frozen=True)
class ExportIdentity:
    """Identity the non-image objects add of their own: who wrote them, when, and their free text."""

    observer: str  # PN of the reporting physician
    operator: str  # PN of whoever drew the contours
    content_date: str  # DA
    content_time: str  # TM
    free_text: str  # a finding typed with the patient's name and MRN inside


def _uid(rng: np.random.Generator) -> str:
    return "1.2.826.0.1.3680043.8.498." + ".".join(str(int(rng.integers(1, 10**9))) for _ in range(3))


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _base(source: Dataset, sop_class: str, modality: str, rng: np.random.Generator) -> Dataset:
    ds = Dataset()
    for keyword in _PATIENT_STUDY_KEYWORDS:
        if keyword in source:
            setattr(ds, keyword, copy.deepcopy(source.data_element(keyword).value))  # type: ignore[union-attr]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = _uid(rng)
    ds.Modality = modality
    ds.SeriesInstanceUID = _uid(rng)
    ds.SeriesNumber = 900 + int(rng.integers(99))
    ds.InstanceNumber = 1
    ds.Manufacturer = "FEDSCAN SIM"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = dcm_uid.UID(sop_class)
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = dcm_uid.ExplicitVRLittleEndian
    meta.ImplementationClassUID = dcm_uid.PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def _content_date_time(ds: Dataset, who: ExportIdentity) -> None:
    ds.ContentDate, ds.ContentTime = who.content_date, who.content_time
    ds.InstanceCreationDate, ds.InstanceCreationTime = who.content_date, who.content_time
    ds.SeriesDate, ds.SeriesTime = who.content_date, who.content_time


def _reference(source: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    return item


def _evidence(source: Dataset) -> Sequence:
    series = Dataset()
    series.SeriesInstanceUID = source.SeriesInstanceUID
    series.ReferencedSOPSequence = Sequence([_reference(source)])
    study = Dataset()
    study.StudyInstanceUID = source.StudyInstanceUID
    study.ReferencedSeriesSequence = Sequence([series])
    return Sequence([study])


def _item(relationship: str, value_type: str, concept: Dataset, **values: object) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = Sequence([concept])
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def structured_report(source: Dataset, who: ExportIdentity, rng: np.random.Generator) -> Dataset:
    """A Comprehensive SR: text, person name, date, time, datetime, UID, code and image content items."""
    ds = _base(source, dcm_uid.ComprehensiveSRStorage, "SR", rng)
    _content_date_time(ds, who)
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "VERIFIED"
    verifier = Dataset()
    verifier.VerifyingObserverName = who.observer
    verifier.VerifyingOrganization = str(source.get("InstitutionName", "") or "Radiology")
    verifier.VerificationDateTime = who.content_date + who.content_time
    ds.VerifyingObserverSequence = Sequence([verifier])
    ds.CurrentRequestedProcedureEvidenceSequence = _evidence(source)
    name = str(source.get("PatientName", ""))
    image = _item("CONTAINS", "IMAGE", _code("121112", "DCM", "Source of Measurement"))
    image.ReferencedSOPSequence = Sequence([_reference(source)])
    finding = _code("M-8000", "SRT", f"Finding for {name.replace('^', ' ')}")
    items = [
        _item(
            "HAS OBS CONTEXT",
            "PNAME",
            _code("121008", "DCM", "Person Observer Name"),
            PersonName=who.observer,
        ),
        _item("CONTAINS", "TEXT", _code("121071", "DCM", "Finding"), TextValue=who.free_text),
        _item("CONTAINS", "DATE", _code("111536", "DCM", "Date of exam"), Date=who.content_date),
        _item("CONTAINS", "TIME", _code("111537", "DCM", "Time of exam"), Time=who.content_time),
        _item(
            "CONTAINS",
            "DATETIME",
            _code("111526", "DCM", "DateTime Started"),
            DateTime=who.content_date + who.content_time,
        ),
        _item(
            "CONTAINS",
            "UIDREF",
            _code("121018", "DCM", "Procedure Study Instance UID"),
            UID=source.StudyInstanceUID,
        ),  # fmt: skip
        _item("CONTAINS", "CODE", _code("121071", "DCM", "Finding"), ConceptCodeSequence=Sequence([finding])),
        image,
    ]
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([_code("18748-4", "LN", "Diagnostic Imaging Report")])
    ds.ContinuityOfContent = "SEPARATE"
    ds.ContentSequence = Sequence(items)
    return ds


def key_object_selection(source: Dataset, who: ExportIdentity, rng: np.random.Generator) -> Dataset:
    """A Key Object Selection flagging the source image, with a description naming the patient."""
    ds = _base(source, dcm_uid.KeyObjectSelectionDocumentStorage, "KO", rng)
    _content_date_time(ds, who)
    ds.CurrentRequestedProcedureEvidenceSequence = _evidence(source)
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([_code("113000", "DCM", "Of Interest")])
    ds.ContinuityOfContent = "SEPARATE"
    image = _item("CONTAINS", "IMAGE", _code("113000", "DCM", "Of Interest"))
    image.ReferencedSOPSequence = Sequence([_reference(source)])
    note = _item(
        "CONTAINS", "TEXT", _code("113012", "DCM", "Key Object Description"), TextValue=who.free_text
    )
    ds.ContentSequence = Sequence([note, image])
    return ds


def presentation_state(source: Dataset, who: ExportIdentity, rng: np.random.Generator) -> Dataset:
    """A Grayscale Softcopy Presentation State with a text annotation and a description naming the patient."""
    ds = _base(source, dcm_uid.GrayscaleSoftcopyPresentationStateStorage, "PR", rng)
    _content_date_time(ds, who)
    name = str(source.get("PatientName", ""))
    ds.ContentLabel = "ANNOTATION"
    ds.ContentDescription = f"Measurements for {name}"
    ds.ContentCreatorName = who.observer
    ds.PresentationCreationDate, ds.PresentationCreationTime = who.content_date, who.content_time
    series = Dataset()
    series.SeriesInstanceUID = source.SeriesInstanceUID
    series.ReferencedImageSequence = Sequence([_reference(source)])
    ds.ReferencedSeriesSequence = Sequence([series])
    text = Dataset()
    text.UnformattedTextValue = f"{name} {source.get('PatientID', '')}"
    text.AnchorPointAnnotationUnits = "PIXEL"
    text.AnchorPoint = [10.0, 10.0]
    text.AnchorPointVisibility = "N"
    layer = Dataset()
    layer.GraphicLayer = "LAYER1"
    layer.ReferencedImageSequence = Sequence([_reference(source)])
    layer.TextObjectSequence = Sequence([text])
    ds.GraphicAnnotationSequence = Sequence([layer])
    return ds


def segmentation(source: Dataset, who: ExportIdentity, rng: np.random.Generator) -> Dataset:
    """A binary Segmentation of the source image (one segment, a disc), labelled with a planted name."""
    ds = _base(source, dcm_uid.SegmentationStorage, "SEG", rng)
    _content_date_time(ds, who)
    rows, cols = int(source.Rows), int(source.Columns)
    yy, xx = np.ogrid[:rows, :cols]
    disc = (yy - rows / 2) ** 2 + (xx - cols / 2) ** 2 <= (min(rows, cols) / 5) ** 2
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 1
    ds.HighBit, ds.PixelRepresentation = 0, 0
    ds.SegmentationType, ds.ContentLabel = "BINARY", "LESION"
    ds.ContentCreatorName = who.operator
    ds.ImageType = ["DERIVED", "PRIMARY"]
    if "FrameOfReferenceUID" in source:
        ds.FrameOfReferenceUID = source.FrameOfReferenceUID
    segment = Dataset()
    segment.SegmentNumber = 1
    segment.SegmentLabel = f"lesion {str(source.get('PatientName', '')).split('^')[0]}"
    segment.SegmentAlgorithmType = "MANUAL"
    segment.SegmentedPropertyCategoryCodeSequence = Sequence([_code("49755003", "SCT", "Morphologic")])
    segment.SegmentedPropertyTypeCodeSequence = Sequence([_code("4147007", "SCT", "Mass")])
    ds.SegmentSequence = Sequence([segment])
    series = Dataset()
    series.SeriesInstanceUID = source.SeriesInstanceUID
    series.ReferencedInstanceSequence = Sequence([_reference(source)])
    ds.ReferencedSeriesSequence = Sequence([series])
    derivation = Dataset()
    derivation.SourceImageSequence = Sequence([_reference(source)])
    frame = Dataset()
    frame.DerivationImageSequence = Sequence([derivation])
    identification = Dataset()
    identification.ReferencedSegmentNumber = 1
    frame.SegmentIdentificationSequence = Sequence([identification])
    ds.PerFrameFunctionalGroupsSequence = Sequence([frame])
    bits = np.packbits(disc.ravel(), bitorder="little").tobytes()
    ds.PixelData = bits + (b"\x00" if len(bits) % 2 else b"")
    ds["PixelData"].VR = "OB"
    return ds


def rt_structure_set(source: Dataset, who: ExportIdentity, rng: np.random.Generator) -> Dataset:
    """An RT Structure Set with one closed contour on the source image and a planted interpreter."""
    ds = _base(source, dcm_uid.RTStructureSetStorage, "RTSTRUCT", rng)
    _content_date_time(ds, who)
    ds.StructureSetLabel = "LIVER"
    ds.StructureSetName = f"Contours {source.get('PatientID', '')}"
    ds.StructureSetDate, ds.StructureSetTime = who.content_date, who.content_time
    ds.OperatorsName = who.operator
    frame_uid = str(source.get("FrameOfReferenceUID", "") or _uid(rng))
    image = _reference(source)
    series = Dataset()
    series.SeriesInstanceUID = source.SeriesInstanceUID
    series.ContourImageSequence = Sequence([image])
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (retired)
    study.ReferencedSOPInstanceUID = source.StudyInstanceUID
    study.RTReferencedSeriesSequence = Sequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = frame_uid
    frame.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])
    roi = Dataset()
    roi.ROINumber = 1
    roi.ReferencedFrameOfReferenceUID = frame_uid
    roi.ROIName = "LIVER"
    roi.ROIGenerationAlgorithm = "MANUAL"
    ds.StructureSetROISequence = Sequence([roi])
    contour = Dataset()
    contour.ContourImageSequence = Sequence([copy.deepcopy(image)])
    contour.ContourGeometricType = "CLOSED_PLANAR"
    contour.NumberOfContourPoints = 4
    contour.ContourData = [0.0, 0.0, 0.0, 10.0, 0.0, 0.0, 10.0, 10.0, 0.0, 0.0, 10.0, 0.0]
    roi_contour = Dataset()
    roi_contour.ReferencedROINumber = 1
    roi_contour.ROIDisplayColor = [255, 0, 0]
    roi_contour.ContourSequence = Sequence([contour])
    ds.ROIContourSequence = Sequence([roi_contour])
    observation = Dataset()
    observation.ObservationNumber = 1
    observation.ReferencedROINumber = 1
    observation.RTROIInterpretedType = "ORGAN"
    observation.ROIInterpreter = who.operator
    ds.RTROIObservationsSequence = Sequence([observation])
    return ds


def encapsulated_pdf(source: Dataset, who: ExportIdentity, rng: np.random.Generator) -> Dataset:
    """A scanned request as an Encapsulated PDF whose document names the patient."""
    ds = _base(source, dcm_uid.EncapsulatedPDFStorage, "DOC", rng)
    _content_date_time(ds, who)
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.DocumentTitle = "Request"
    body = f"%PDF-1.4\n% {who.free_text}\n%%EOF\n".encode("latin-1", "replace")
    ds.EncapsulatedDocument = body + (b"\x00" if len(body) % 2 else b"")
    return ds


def raw_data(source: Dataset, who: ExportIdentity, rng: np.random.Generator) -> Dataset:
    """Raw Data with a vendor block that happens to hold the patient's name."""
    ds = _base(source, "1.2.840.10008.5.1.4.1.1.66", "OT", rng)
    _content_date_time(ds, who)
    block = ds.private_block(0x0043, "ACME RAW", create=True)
    block.add_new(0x01, "OB", f"RAW {source.get('PatientName', '')} ".encode("latin-1", "replace"))
    return ds


def waveform_with_free_text(source: Dataset, who: ExportIdentity, rng: np.random.Generator) -> Dataset:
    """A 12-lead ECG (one short channel group) whose annotation is typed free text."""
    ds = _base(source, dcm_uid.TwelveLeadECGWaveformStorage, "ECG", rng)
    _content_date_time(ds, who)
    ds.AcquisitionDateTime = who.content_date + who.content_time
    group = Dataset()
    group.MultiplexGroupTimeOffset = "0"
    group.WaveformOriginality = "ORIGINAL"
    group.NumberOfWaveformChannels = 1
    group.NumberOfWaveformSamples = 16
    group.SamplingFrequency = "500"
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    group.WaveformData = np.arange(16, dtype="<i2").tobytes()
    ds.WaveformSequence = Sequence([group])
    note = Dataset()
    note.UnformattedTextValue = who.free_text
    ds.WaveformAnnotationSequence = Sequence([note])
    return ds


#: Object kind -> builder, in the order an export lists them.
NON_IMAGE_BUILDERS: dict[str, Callable[[Dataset, ExportIdentity, np.random.Generator], Dataset]] = {
    "SR": structured_report,
    "KOS": key_object_selection,
    "PR": presentation_state,
    "SEG": segmentation,
    "RTSTRUCT": rt_structure_set,
    "PDF": encapsulated_pdf,
    "RAW": raw_data,
    "ECG": waveform_with_free_text,
}
