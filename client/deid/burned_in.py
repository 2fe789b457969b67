"""The burned-in text policy: which files may show identifying text in their pixels, and masking.

Headers can be cleaned; text drawn into the pixels (ultrasound annotations, screenshots, scanned
documents, secondary captures) cannot be found by a header profile. fedscan's rule is explicit: a file
is *suspect* when

- (0028,0301) *Burned In Annotation* is ``YES``, or
- (0008,0060) *Modality* is one that commonly carries burned-in text (US, OT, SC, XC, ES), or
- (0008,0016) *SOP Class UID* is one of the Secondary Capture Image Storage classes.

Suspect files are rejected (the default) or, for a site that knows where its scanners write text,
masked: configured rectangles are set to zero in every frame, and (0012,0064) *De-identification
Method Code Sequence* records the Clean Pixel Data Option (113101). A file whose
(0028,0302) *Recognizable Visual Features* is ``YES`` (a face, a photograph) is always rejected: no
rectangle removes a face.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from pydicom.dataset import Dataset

__all__ = [
    "BURNED_IN_MODALITIES",
    "SECONDARY_CAPTURE_CLASSES",
    "burned_in_reason",
    "mask_pixels",
    "visual_features_reason",
]

#: (0008,0060) Modality values whose images commonly carry burned-in text.
BURNED_IN_MODALITIES: Final = frozenset({"US", "OT", "SC", "XC", "ES"})

#: Secondary Capture Image Storage SOP Classes (PS3.4 B.5).
SECONDARY_CAPTURE_CLASSES: Final = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.5.1.4.1.1.7.1",
        "1.2.840.10008.5.1.4.1.1.7.2",
        "1.2.840.10008.5.1.4.1.1.7.3",
        "1.2.840.10008.5.1.4.1.1.7.4",
    }
)


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return str(value).strip().upper() if value is not None else ""


def visual_features_reason(ds: Dataset) -> str | None:
    """Why the pixels show a recognisable person, or ``None``."""
    if _text(ds, "RecognizableVisualFeatures") == "YES":
        return "recognizable visual features: (0028,0302) Recognizable Visual Features is YES"
    return None


def burned_in_reason(ds: Dataset) -> str | None:
    """Why ``ds`` may carry burned-in text (a sentence without PHI), or ``None`` if it is not suspect."""
    if _text(ds, "BurnedInAnnotation") == "YES":
        return "burned-in text: (0028,0301) Burned In Annotation is YES"
    modality = _text(ds, "Modality")
    if modality in BURNED_IN_MODALITIES:
        return f"burned-in text: modality {modality} commonly carries burned-in annotations"
    meta = getattr(ds, "file_meta", None) or Dataset()
    sop_class = _text(ds, "SOPClassUID") or _text(meta, "MediaStorageSOPClassUID")
    if sop_class in SECONDARY_CAPTURE_CLASSES:
        return "burned-in text: Secondary Capture images commonly carry burned-in annotations"
    return None


def mask_pixels(ds: Dataset, regions: Sequence[tuple[int, int, int, int]]) -> None:
    """Set the rectangles ``(x, y, width, height)`` to zero in every frame of ``ds``, in place.

    The pixels are decoded once and written back uncompressed: in the same transfer syntax when it
    was uncompressed, else in Explicit VR Little Endian. Colour data is written as
    (0028,0004) *Photometric Interpretation* ``RGB`` when decoding converted it from YBR, with
    (0028,0006) *Planar Configuration* 0. (0008,0018) *SOP Instance UID* is left alone (the engine
    has already replaced it).
    """
    import numpy as np  # lazy: only masking needs NumPy
    from pydicom.dataelem import DataElement
    from pydicom.uid import UID, ExplicitVRLittleEndian

    arr = np.array(ds.pixel_array, copy=True)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    # A view shaped (frames, rows, columns[, samples]), so one slice expression fits every layout.
    view = arr if frames > 1 else arr[np.newaxis]
    rows, cols = view.shape[1], view.shape[2]
    for x, y, width, height in regions:
        view[:, min(y, rows) : min(y + height, rows), min(x, cols) : min(x + width, cols), ...] = 0

    transfer_syntax = UID(ds.file_meta.TransferSyntaxUID)
    if transfer_syntax.is_compressed:
        transfer_syntax = ExplicitVRLittleEndian
        ds.file_meta.TransferSyntaxUID = transfer_syntax
        for tag in (0x7FE00001, 0x7FE00002):  # extended offset table of the encapsulated frames
            if tag in ds:
                del ds[tag]
    dtype = arr.dtype.newbyteorder("<" if transfer_syntax.is_little_endian else ">")
    data = arr.astype(dtype, copy=False).tobytes()
    if len(data) % 2:
        data += b"\x00"
    bits = int(ds.BitsAllocated)
    ds[0x7FE00010] = DataElement(0x7FE00010, "OW" if bits > 8 else "OB", data)
    if samples > 1:
        if str(ds.get("PhotometricInterpretation", "")).startswith("YBR"):
            ds.PhotometricInterpretation = "RGB"  # pixel_array converted the colour space
        ds.PlanarConfiguration = 0
