"""Cleaning free-text descriptors (Clean Descriptors Option, PS3.15 E.3.5).

Descriptions and comments ((0008,1030) *Study Description*, (0008,103E) *Series Description*,
(0018,1030) *Protocol Name*, (0020,4000) *Image Comments*, ...) are typed by people and routinely
contain names, record numbers, dates and phone numbers. Recognising identifiers in free text is
unreliable, so cleaning works the other way round: it keeps only what it *knows* is harmless.

1. Dates, times and runs of digits with separators (phone and record numbers) are cut out.
2. The rest is split into words; a word survives only if it is in a closed vocabulary of imaging
   terms (anatomy, orientation, sequence and reconstruction names, contrast phases) or is a short
   technical token such as ``T1``, ``3D``, ``5MM`` or ``1.25``.
3. Surviving words are upper-cased and joined by single spaces.

The result is a fixed point (``clean_text(clean_text(x)) == clean_text(x)``), so cleaning twice is the
same as cleaning once. What it cannot promise: a surname that is also an imaging word (say *Head*)
survives, as the word. Sites that cannot accept that leave the option off, and descriptors are then
removed.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["VOCABULARY", "clean_text"]

#: Words that may survive cleaning (upper case).
VOCABULARY: Final[frozenset[str]] = frozenset(
    """
    ABD ABDO ABDOMEN ABDOMINAL ACQ ACQUISITION ADC ANGIO ANGIOGRAPHY ANKLE AORTA AORTIC AP AXIAL AX
    ARM ARTERIAL ARTERY ASL B0 BILAT BILATERAL BLADDER BODY BOLD BONE BRAIN BREAST BREATHHOLD BH
    CALCIUM CAROTID CARDIAC CHEST CINE CIRCLE COLON CONTRAST COR CORONAL COW CT CTA CXR DELAY
    DELAYED DIFFUSION DWI DTI DUAL DYNAMIC ECHO ELBOW ENERGY ENHANCED EPI EQUILIBRIUM EXTREMITY FACE
    FAT FEMUR FFE FIESTA FLAIR FLOW FOOT FOREARM FRONTAL FS FSE FULL GAD GADOLINIUM GRE HAND HASTE
    HEAD HEART HELICAL HIGH HIP HR HUMERUS IAC IMAGE IMAGES IN INSPIRATION EXPIRATION IR IV KIDNEY
    KIDNEYS KNEE LAT LATERAL LEFT LEG LIVER LOCALIZER LOC LOW LUMBAR LUNG LUNGS MAMMO MAMMOGRAPHY
    MAXILLOFACIAL MEDIASTINUM MIP MINIP MPR MPRAGE MR MRA MRCP MRI MRV NECK NEURO NM NON NONCONTRAST
    OBL OBLIQUE OF ON OPPOSED ORAL ORBIT ORBITS OUT PA PANCREAS PD PELVIS PERFUSION PET PHASE
    PITUITARY PLAIN PORTAL POST POSTERIOR ANTERIOR PRE PROSTATE PROTOCOL PULMONARY RECON
    RECONSTRUCTION RENAL RESEARCH RIB RIBS RIGHT ROUTINE SAG SAGITTAL SCAN SCOUT SCREENING SE
    SEQUENCE SERIES SHARP SHOULDER SINUS SINUSES SKULL SLICE SLICES SMOOTH SOFT SPECT SPINE SPIRAL
    SPLEEN SSFP STANDARD STIR STUDY SUBTRACTION SURVEY SWI T1 T2 T2STAR TEMPORAL THIN THICK
    THORACIC THORAX THYROID TIBIA TISSUE TOF TOPOGRAM TRACE TRANSVERSE TRUFI TSE UPPER LOWER US
    VENOUS VIBE VIEW WATER WHOLE WITH WITHOUT WO WRIST XR CR DX MG RF XA ENDOVAGINAL TRANSABDOMINAL
    AND OR NO FOLLOW UP FU BASELINE KERNEL STD LIGHT DOSE LOWDOSE LD ISO ISOTROPIC VOLUME VOL
    SUPINE PRONE DECUBITUS UPRIGHT ERECT ARCH CERVICAL CSPINE TSPINE LSPINE SACRUM COCCYX
    """.split()  # noqa: SIM905 - a word list reads better as text
)

# Dates (2023-01-05, 05/01/2023, 2023.01.05), times (09:30, 09:30:15) and digit runs with
# separators (phone, record and accession numbers).
_CUT: Final = re.compile(
    r"\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}"
    r"|\d{1,2}:\d{2}(?::\d{2})?"
    r"|\d[\d\-\s().#/]{5,}\d"
)
_WORD: Final = re.compile(r"[A-Za-z0-9]+(?:\.[0-9]+)?")
# Short technical tokens: numbers with at most 3 digits before an optional 2-digit decimal and an
# optional unit, letter-digit codes (T1, C5, L4, B0) and digit-letter codes (2D, 3D, 3T).
_TECHNICAL: Final = re.compile(
    r"(?:\d{1,3}(?:\.\d{1,2})?(?:MM|CM|ML|MS|S|KV|KVP|MAS|T)?"
    r"|[A-Z]{1,2}\d{1,2}"
    r"|\d[A-Z])"
)


def _keep(word: str) -> bool:
    return word in VOCABULARY or _TECHNICAL.fullmatch(word) is not None


def clean_text(value: str) -> str:
    """Keep only harmless imaging words of a free-text descriptor; see the module docstring.

    Examples
    --------
    >>> clean_text("CT Chest with contrast for John Smith MRN 12345678, 2023-01-05")
    'CT CHEST WITH CONTRAST'
    """
    # One pass can join words into a new digit run ("5, 10, 15" -> "5 10 15"), so repeat until
    # nothing changes; each pass only removes, so this ends, and the result is a fixed point.
    text = _clean_once(value)
    while True:
        again = _clean_once(text)
        if again == text:
            return text
        text = again


def _clean_once(value: str) -> str:
    text = _CUT.sub(" ", value)
    words = (w.upper() for w in _WORD.findall(text))
    return " ".join(w for w in words if _keep(w))
