"""A test set for burned-in text detection: frames with identifying text drawn in, and frames without.

Each frame is what a de-identifier would see in an ultrasound, secondary-capture or radiograph export:
a background (ultrasound sector with speckle, a radiograph, a CT slice, a dark screen capture, a grey
user interface) with lines of identifying text (names, MRNs, dates, times, institutions, ages) drawn by
OpenCV in one of its Hershey fonts, at a size, colour, thickness and position drawn from a seeded
generator. Every line's box and ink pixels are recorded, so that a detector's recall can be counted on
text boxes and on ink. Text-free frames use the same backgrounds, including strong ultrasound speckle
and bright anatomy, to count how often a detector masks a frame that had nothing to mask.

Fonts and layouts are split in two: :data:`TUNING_FONTS` and :data:`TUNING_LAYOUTS` are the ones the
detector's settings were chosen on; :data:`HELD_OUT_FONTS` and :data:`HELD_OUT_LAYOUTS` were never
looked at while tuning and are reported separately (``benchmarks/bench_ocr.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np

from simulations.fake_phi import ascii_fold, draw_institution, draw_patient, draw_study

__all__ = [
    "HELD_OUT_FONTS",
    "HELD_OUT_LAYOUTS",
    "TUNING_FONTS",
    "TUNING_LAYOUTS",
    "DetectionScore",
    "TextFrame",
    "as_dataset",
    "render_text_frame",
    "score_frames",
    "text_free_frame",
]

TUNING_FONTS: Final = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_PLAIN,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX_SMALL,
)
HELD_OUT_FONTS: Final = (
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_COMPLEX | cv2.FONT_ITALIC,
    cv2.FONT_HERSHEY_SCRIPT_SIMPLEX,
)
#: Where lines go: the four corners and a top banner (tuning); a right-edge column and a bottom band
#: of dark text on a light strip (held out).
TUNING_LAYOUTS: Final = ("corners", "top-banner")
HELD_OUT_LAYOUTS: Final = ("right-column", "bottom-band")
BACKGROUNDS: Final = ("ultrasound", "radiograph", "ct", "screen", "interface")
_COLOURS: Final = (
    (235, 235, 235),
    (0, 220, 255),
    (255, 255, 0),
    (0, 230, 0),
    (150, 150, 150),
    (255, 180, 120),
)


@dataclass(frozen=True)
class TextFrame:
    """One rendered frame and its ground truth.

    Attributes
    ----------
    image : ndarray
        uint8, rows x columns x 3 (BGR).
    boxes : list of (x0, y0, x1, y1)
        One box per line of text (x1, y1 exclusive); empty for a text-free frame.
    ink : list of ndarray
        Per line, a boolean rows x columns mask of the pixels the text was drawn on.
    font, layout, background : str
        What was drawn, for reporting by category.
    """

    image: np.ndarray
    boxes: list[tuple[int, int, int, int]]
    ink: list[np.ndarray]
    font: str
    layout: str
    background: str


def _speckle(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    re_, im_ = (
        cv2.GaussianBlur(rng.standard_normal((rows, cols)).astype(np.float32), (0, 0), 1.3, sigmaY=0.6)
        for _ in range(2)
    )
    speckle = np.sqrt(re_ * re_ + im_ * im_)
    return speckle / np.float32(speckle.mean())


def _background(rng: np.random.Generator, kind: str, rows: int, cols: int) -> np.ndarray:
    yy, xx = np.mgrid[:rows, :cols].astype(np.float32)
    if kind == "ultrasound":
        apex_y, far = -0.06 * rows, 0.97 * rows
        dx, dy = xx - cols / 2, yy - apex_y
        radius, angle = np.hypot(dx, dy), np.abs(np.arctan2(dx, dy))
        sector = (radius > 0.1 * rows) & (radius < far) & (angle < math.radians(36 + 10 * rng.random()))
        tissue = 0.35 + 0.25 * np.sin(yy / (8 + 10 * rng.random())) ** 2
        organ = np.hypot(dx / (0.2 * cols), (yy - 0.55 * rows) / (0.18 * rows)) < 1
        tissue = np.where(organ, 0.15 + 0.6 * rng.random(), tissue)
        gray = np.clip(tissue * _speckle(rng, rows, cols) * (1 - 0.3 * yy / rows), 0, 1) ** 0.7 * 255
        gray[~sector] = 0
    elif kind == "radiograph":
        body = np.exp(-(((xx - cols / 2) / (0.35 * cols)) ** 4))
        ribs = 0.15 * np.sin(yy / (6 + 4 * rng.random())) ** 2
        gray = np.clip(40 + 170 * body * (0.8 + ribs) + rng.normal(0, 6, (rows, cols)), 0, 255)
    elif kind == "ct":
        disc = np.hypot(xx - cols / 2, yy - rows / 2) < 0.42 * min(rows, cols)
        gray = np.where(disc, 110 + rng.normal(0, 12, (rows, cols)), 0)
        lung = np.hypot(np.abs(xx - cols / 2) - 0.18 * cols, yy - rows / 2) < 0.14 * min(rows, cols)
        gray = np.where(lung, 25 + rng.normal(0, 6, (rows, cols)), gray)
    elif kind == "screen":
        gray = np.clip(rng.normal(12, 4, (rows, cols)), 0, 255)
    else:  # interface: flat panels and rulers of a viewer
        gray = np.full((rows, cols), 90.0) + 20 * (xx > cols * rng.uniform(0.6, 0.8))
        gray[:, :: max(cols // 16, 4)] = 140
    image = np.repeat(np.clip(gray, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
    if kind == "ultrasound" and rng.random() < 0.5:  # a colour Doppler patch
        box = (slice(rows // 3, rows // 2), slice(cols // 3, cols // 2))
        image[box][..., 2] = np.clip(image[box][..., 2].astype(int) + 120, 0, 255).astype(np.uint8)
    return image


def _lines(rng: np.random.Generator) -> list[str]:
    institution = draw_institution(rng, int(rng.integers(8)))
    patient = draw_patient(rng, institution)
    study = draw_study(rng, institution, patient)
    candidates = [
        patient.pn,
        patient.listed_name,
        patient.display_name,
        f"ID: {patient.patient_id}",
        f"MRN {patient.patient_id}",
        f"DOB {patient.birth_date:%m/%d/%Y}",
        f"{study.date:%d.%m.%Y} {study.time[:2]}:{study.time[2:4]}",
        f"{study.date:%Y-%m-%d} {study.time[:2]}:{study.time[2:4]}:{study.time[4:]}",
        institution.name,
        f"Acc {study.accession_number}",
        f"Age {int(rng.integers(18, 95))}Y {patient.sex}",
        f"Dr. {study.referring_physician.split('^')[0].title()}",
    ]
    count = int(rng.integers(2, 6))
    order = rng.permutation(len(candidates))[:count]
    return [ascii_fold(candidates[i]) for i in order]


def _font_name(font: int) -> str:
    names = {v: k for k, v in vars(cv2).items() if k.startswith("FONT_HERSHEY_")}
    base = names.get(font & ~cv2.FONT_ITALIC, str(font))
    return base + ("|ITALIC" if font & cv2.FONT_ITALIC else "")


def render_text_frame(
    rng: np.random.Generator,
    *,
    rows: int = 480,
    cols: int = 640,
    fonts: tuple[int, ...] = TUNING_FONTS,
    layouts: tuple[str, ...] = TUNING_LAYOUTS,
) -> TextFrame:
    """A frame with 2 to 5 lines of identifying text in one font and layout drawn from ``rng``."""
    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    image = _background(rng, background, rows, cols)
    font = fonts[int(rng.integers(len(fonts)))]
    layout = layouts[int(rng.integers(len(layouts)))]
    # text height between 1.6% and 4% of the frame height (8 to 19 pixels at 480 rows), at least the
    # 7 pixels below which no console writes legible text
    target = max(7.0, rows * rng.uniform(0.016, 0.04))
    (_, unit), _ = cv2.getTextSize("Ag", font, 1.0, 1)
    scale = target / unit
    thickness = 1 if scale < 0.9 or rng.random() < 0.6 else 2
    colour = _COLOURS[int(rng.integers(len(_COLOURS)))]
    boxes: list[tuple[int, int, int, int]] = []
    ink: list[np.ndarray] = []
    lines = _lines(rng)
    (_, height), baseline = cv2.getTextSize("Ag", font, scale, thickness)
    step = height + baseline + max(2, int(0.4 * height))
    margin = max(3, cols // 80)
    if layout == "bottom-band":
        band_top = rows - margin - step * len(lines) - margin
        image[band_top:, :] = (200, 200, 200)
        colour = (40, 40, 40)
    for k, line in enumerate(lines):
        (width, _), _ = cv2.getTextSize(line, font, scale, thickness)
        width = min(width, cols - 2 * margin)
        if layout == "corners":
            corner = k % 4
            slot = k // 4
            x = margin if corner in (0, 2) else cols - margin - width
            y = margin + height + slot * step if corner < 2 else rows - margin - baseline - slot * step
        elif layout == "top-banner":
            x = margin + int(rng.integers(0, max(cols - width - 2 * margin, 1)))
            y = margin + height + k * step
        elif layout == "right-column":
            x = cols - margin - width
            y = rows // 4 + k * step
        else:  # bottom-band
            x = margin + int(rng.integers(0, max(cols - width - 2 * margin, 1)))
            y = rows - margin - baseline - (len(lines) - 1 - k) * step
        mask = np.zeros((rows, cols), dtype=np.uint8)
        cv2.putText(mask, line, (int(x), int(y)), font, scale, 255, thickness, cv2.LINE_AA)
        drawn = mask > 96
        if not drawn.any():
            continue
        alpha = (mask.astype(np.float32) / 255.0)[:, :, None]
        blended = image * (1 - alpha) + np.array(colour, np.float32) * alpha
        image[:] = np.clip(blended, 0, 255).astype(np.uint8)
        ys, xs = np.nonzero(drawn)
        boxes.append((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
        ink.append(drawn)
    return TextFrame(image, boxes, ink, _font_name(font), layout, background)


def text_free_frame(rng: np.random.Generator, *, rows: int = 480, cols: int = 640) -> TextFrame:
    """A frame with no text: one of the backgrounds, ultrasound speckle twice as often."""
    kinds = (*BACKGROUNDS, "ultrasound")
    background = kinds[int(rng.integers(len(kinds)))]
    return TextFrame(_background(rng, background, rows, cols), [], [], "", "", background)


@dataclass(frozen=True)
class DetectionScore:
    """How a detector did on a set of frames (see :func:`score_frames`)."""

    lines: int
    lines_found: int
    text_free_frames: int
    text_free_masked: int
    seconds_per_frame: float

    @property
    def recall(self) -> float:
        """Share of text lines whose ink was blanked (at least :data:`INK_FOUND` of it)."""
        return self.lines_found / self.lines if self.lines else 1.0

    @property
    def needless_masking(self) -> float:
        """Share of text-free frames in which something was blanked."""
        return self.text_free_masked / self.text_free_frames if self.text_free_frames else 0.0


#: A line counts as found when at least this share of its ink pixels was blanked.
INK_FOUND: Final = 0.95


def as_dataset(image: np.ndarray) -> object:
    """A single-frame RGB ultrasound data set holding ``image`` (BGR), as a US export would."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundImageStorage, generate_uid

    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = UltrasoundImageStorage, generate_uid(), "US"
    ds.Rows, ds.Columns = image.shape[:2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(image[..., ::-1]).tobytes()
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def score_frames(frames: list[TextFrame], detector: object) -> DetectionScore:
    """Run fedscan's OCR masking (:func:`client.deid.burned_in.ocr_mask_pixels`) on each frame; score it."""
    import time

    from client.deid.burned_in import ocr_mask_pixels

    lines = found = free = needless = 0
    started = time.perf_counter()
    for frame in frames:
        ds = as_dataset(frame.image)
        boxes, _ = ocr_mask_pixels(ds, detector)  # type: ignore[arg-type]
        after = np.asarray(ds.pixel_array)  # type: ignore[attr-defined]
        blanked = (after == 0).all(axis=-1) & (frame.image != 0).any(axis=-1) if boxes else None
        if not frame.boxes:
            free += 1
            needless += int(boxes > 0)
            continue
        for ink in frame.ink:
            lines += 1
            if blanked is not None and blanked[ink].mean() >= INK_FOUND:
                found += 1
    seconds = (time.perf_counter() - started) / max(len(frames), 1)
    return DetectionScore(lines, found, free, needless, seconds)
