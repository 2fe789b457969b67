"""The burned-in text policy: which files may show identifying text in their pixels; masking them.

Headers can be cleaned; text drawn into the pixels (ultrasound annotations, screenshots, scanned
documents, secondary captures) cannot be found by a header profile. A file is *suspect* when

- (0028,0301) *Burned In Annotation* is ``YES``, or
- it is of a kind that commonly carries burned-in text - (0008,0060) *Modality* US, OT, SC, XC or ES
  (configurable), or a Secondary Capture, ultrasound or visible-light (photo, video) SOP Class - and
  its (0028,0301) does not say ``NO``. Under the ``ocr-mask`` policy a ``NO`` is not trusted for these
  kinds: checking costs only time, and vendors write ``NO`` by default.

CT and MR slices are not suspect unless their header says ``YES``. The policies:

``reject``
    suspect files are refused (the default when the OCR extra is not installed);
``ocr-mask``
    every frame of a suspect file goes through a text detector (:mod:`client.deid.ocr`); each text box
    found is blanked with a margin, the frame is checked again (up to :data:`OCR_ROUNDS` times) and a
    frame that still shows text makes the file rejected (the default with the OCR extra);
``mask``
    configured rectangles are blanked in every frame, for a site that knows where its devices write.

Masked or OCR-checked outputs record the Clean Pixel Data Option (113101) in (0012,0064) and set
(0028,0301) to ``NO`` (PS3.15 E.3.1). A file whose (0028,0302) *Recognizable Visual Features* is
``YES`` (a face, a photograph) is always rejected: no rectangle removes a face.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Final

import numpy as np
from pydicom.dataset import Dataset

if TYPE_CHECKING:
    from client.deid.ocr import Box, TextDetector

__all__ = [
    "BURNED_IN_MODALITIES",
    "OCR_ROUNDS",
    "SECONDARY_CAPTURE_CLASSES",
    "burned_in_reason",
    "display_frame",
    "mask_pixels",
    "ocr_mask_pixels",
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
#: Ultrasound (single and multi-frame, and their retired forms) and visible-light classes (photographs,
#: endoscopy, microscopy, video: 1.2.840.10008.5.1.4.1.1.77.1.x).
_PHOTO_LIKE_CLASSES: Final = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.6.1",
        "1.2.840.10008.5.1.4.1.1.6.2",
        "1.2.840.10008.5.1.4.1.1.3.1",
        "1.2.840.10008.5.1.4.1.1.3",
        "1.2.840.10008.5.1.4.1.1.6",
    }
)
_VISIBLE_LIGHT_ROOT: Final = "1.2.840.10008.5.1.4.1.1.77.1."

#: How many times a frame is detected, masked and detected again before text that remains rejects it.
OCR_ROUNDS: Final = 3
#: Margin around each detected box: this fraction of the box height, and at least 2 pixels.
OCR_MARGIN: Final = 0.35
#: Boxes taller than this fraction of the frame (and 24 pixels) are not lines of text.
MAX_LINE_HEIGHT: Final = 0.15


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return str(value).strip().upper() if value is not None else ""


def visual_features_reason(ds: Dataset) -> str | None:
    """Why the pixels show a recognisable person, or ``None``."""
    if _text(ds, "RecognizableVisualFeatures") == "YES":
        return "recognizable visual features: (0028,0302) Recognizable Visual Features is YES"
    return None


def burned_in_reason(
    ds: Dataset,
    *,
    trust_annotation_no: bool = True,
    modalities: Iterable[str] = BURNED_IN_MODALITIES,
) -> str | None:
    """Why ``ds`` may carry burned-in text (a sentence without PHI), or ``None`` if it is not suspect.

    ``trust_annotation_no=False`` (the OCR policy) checks the commonly annotated kinds even when their
    (0028,0301) *Burned In Annotation* is ``NO``.
    """
    annotation = _text(ds, "BurnedInAnnotation")
    if annotation == "YES":
        return "burned-in text: (0028,0301) Burned In Annotation is YES"
    if annotation == "NO" and trust_annotation_no:
        return None
    modality = _text(ds, "Modality")
    if modality in frozenset(modalities):
        return f"burned-in text: modality {modality} commonly carries burned-in annotations"
    meta = getattr(ds, "file_meta", None) or Dataset()
    sop_class = _text(ds, "SOPClassUID") or _text(meta, "MediaStorageSOPClassUID")
    if sop_class in SECONDARY_CAPTURE_CLASSES:
        return "burned-in text: Secondary Capture images commonly carry burned-in annotations"
    if sop_class in _PHOTO_LIKE_CLASSES or sop_class.startswith(_VISIBLE_LIGHT_ROOT):
        return "burned-in text: ultrasound and visible-light images commonly carry burned-in annotations"
    return None


def _frames(ds: Dataset) -> np.ndarray:
    """The decoded pixels as a writable (frames, rows, columns[, samples]) array."""
    arr = np.array(ds.pixel_array, copy=True)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return arr if frames > 1 else arr[np.newaxis]


def display_frame(frame: np.ndarray, ds: Dataset, window: tuple[float, float] | None = None) -> np.ndarray:
    """One decoded frame as the uint8 BGR image a person would see (for the text detector).

    Grey levels are stretched over ``window`` (low, high), by default the frame's own range (burned-in
    text is usually the extreme value); MONOCHROME1 is inverted, palette colour goes through its
    lookup table.
    """
    import cv2

    photometric = _text(ds, "PhotometricInterpretation")
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        frame = apply_color_lut(frame, ds)
    colour = frame.ndim == 3 and frame.shape[-1] == 3
    image = frame if colour or frame.ndim == 2 else frame[..., 0]
    data = image.astype(np.float32)
    low, high = window if window is not None else (float(data.min()), float(data.max()))
    scaled = (data - low) * (255.0 / (high - low)) if high > low else np.zeros_like(data)
    if photometric == "MONOCHROME1":
        scaled = 255.0 - scaled
    out = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if out.ndim == 2:
        return np.asarray(cv2.cvtColor(out, cv2.COLOR_GRAY2BGR))
    return np.ascontiguousarray(out[..., ::-1])  # RGB -> BGR


def _blank_value(ds: Dataset, arr: np.ndarray) -> int:
    """Black as stored: 0, or the largest stored value for MONOCHROME1 (where 0 is white)."""
    if _text(ds, "PhotometricInterpretation") != "MONOCHROME1":
        return 0
    return int(arr.max()) if arr.size else 0


def _look(detector: TextDetector, frame: np.ndarray, ds: Dataset, window: tuple[float, float]) -> list[Box]:
    """The text boxes of one frame, each grown by the margin (line-shaped boxes only)."""
    rows, cols = frame.shape[0], frame.shape[1]
    image = display_frame(frame, ds, window)
    found = detector.detect(image)
    import cv2

    colour = image.max(axis=2).astype(np.int16) - image.min(axis=2)
    if np.count_nonzero(colour > 48) > 16:
        # coloured text over grey speckle or anatomy: the colour alone shows it without the clutter
        chroma = np.clip(colour * 2, 0, 255).astype(np.uint8)
        found = found + detector.detect(np.asarray(cv2.cvtColor(chroma, cv2.COLOR_GRAY2BGR)))
    # faint text over a bright or textured background: its thin strokes stand out from a median-
    # filtered copy of the frame, whatever the grey level around them
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    strokes = np.clip(cv2.absdiff(grey, cv2.medianBlur(grey, 7)).astype(np.float32) * 3, 0, 255)
    found = found + detector.detect(np.asarray(cv2.cvtColor(strokes.astype(np.uint8), cv2.COLOR_GRAY2BGR)))
    return [_grown(b, rows, cols) for b in found if _line_shaped(b, rows)]


def _line_shaped(box: Box, rows: int) -> bool:
    """Whether a detected box can be a line of text: not taller than :data:`MAX_LINE_HEIGHT` of the frame.

    The detector returns one box per line; on speckle and anatomy it sometimes returns one box over a
    whole organ, which is not text and would blank the image.
    """
    height = box[3] - box[1]
    return height <= max(MAX_LINE_HEIGHT * rows, 24)


def _grown(box: Box, rows: int, cols: int) -> Box:
    """``box`` with the margin: :data:`OCR_MARGIN` of its height above and below, two heights at the
    ends (a line the detector found only in part continues along the line)."""
    x0, y0, x1, y1 = box
    pad = max(2, round(OCR_MARGIN * (y1 - y0)))
    along = max(pad, 2 * (y1 - y0))
    return max(x0 - along, 0), max(y0 - pad, 0), min(x1 + along, cols), min(y1 + pad, rows)


def ocr_mask_pixels(ds: Dataset, detector: TextDetector) -> tuple[int, bool]:
    """Find and blank the text of every frame of ``ds`` (in place); (boxes masked, text remains).

    Each frame is shown to ``detector``; every box found is blanked with a margin and the frame is
    checked again, up to :data:`OCR_ROUNDS` detections. Identical frames (a cine loop's frozen
    frames) are detected once. The pixels are written back only if something was blanked.
    """
    arr = _frames(ds)
    blank = _blank_value(ds, arr)
    masked = 0
    remains = False
    seen: dict[bytes, list[Box]] = {}
    for index in range(arr.shape[0]):
        frame = arr[index]
        digest = hashlib.blake2b(frame.tobytes(), digest_size=16).digest()
        if digest in seen:  # same pixels, same boxes
            for x0, y0, x1, y1 in seen[digest]:
                frame[y0:y1, x0:x1, ...] = blank
            continue
        done: list[Box] = []
        # the first view's contrast for every round: once the text is gone, stretching the rest over
        # its own range would show the detector a different, harsher picture
        window = (float(frame.min()), float(frame.max())) if frame.size else (0.0, 0.0)

        for _ in range(OCR_ROUNDS):
            boxes = _look(detector, frame, ds, window)
            if not boxes:
                break
            for x0, y0, x1, y1 in boxes:
                frame[y0:y1, x0:x1, ...] = blank
            done.extend(boxes)
        else:
            remains = remains or bool(_look(detector, frame, ds, window))
        seen[digest] = done
        masked += len(done)
    if masked:
        _write_pixels(ds, arr if int(ds.get("NumberOfFrames", 1) or 1) > 1 else arr[0])
    return masked, remains


def mask_pixels(ds: Dataset, regions: Sequence[tuple[int, int, int, int]]) -> None:
    """Set the rectangles ``(x, y, width, height)`` to zero in every frame of ``ds``, in place."""
    arr = _frames(ds)
    rows, cols = arr.shape[1], arr.shape[2]
    for x, y, width, height in regions:
        arr[:, min(y, rows) : min(y + height, rows), min(x, cols) : min(x + width, cols), ...] = 0
    _write_pixels(ds, arr if int(ds.get("NumberOfFrames", 1) or 1) > 1 else arr[0])


def _write_pixels(ds: Dataset, arr: np.ndarray) -> None:
    """Write decoded pixels back into (7FE0,0010), uncompressed.

    In the same transfer syntax when it was uncompressed, else in Explicit VR Little Endian. Colour
    data is written as (0028,0004) *Photometric Interpretation* ``RGB`` when decoding converted it
    from YBR, with (0028,0006) *Planar Configuration* 0. (0008,0018) *SOP Instance UID* is left alone
    (the engine has already replaced it).
    """
    from pydicom.dataelem import DataElement
    from pydicom.uid import UID, ExplicitVRLittleEndian

    samples = int(ds.get("SamplesPerPixel", 1) or 1)
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
