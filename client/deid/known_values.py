"""Known values scrubbed everywhere: a data set's own identifiers removed from the text it keeps.

The profile table decides per attribute; it cannot know that a technologist typed the patient's name
into (0008,0104) *Code Meaning* of a Procedure Code Sequence, into (0070,0081) *Content Description* of
a presentation state or into (0062,0005) *Segment Label* of a segmentation, all attributes the Basic
Profile keeps. What it can know are the data set's *own* identifying values. So before anything is
changed, :func:`collect_known_values` gathers them, at any depth:

- every person name (any PN element: patient, physicians, operators, observers), whole and by
  component (family, given, middle names of three letters or more);
- patient IDs, other IDs, accession number, study and procedure IDs, issuers, medical record locator;
- addresses, telephone numbers, institution and department names;
- every date (DA, the date part of DT) in the usual written forms (``20230105``, ``2023-01-05``,
  ``01/05/2023``, ``05.01.2023``, ...), and every time of day (``14:30:15``, ``14:30``).

After the profile has run, :meth:`KnownValues.scrub` removes each occurrence of those values from every
text value that is left (AE, CS, LO, LT, SH, ST, UC, UT, at any depth), and removes anything shaped
like a DICOM person name (``FAMILY^GIVEN``) from them too. Matching ignores case; names and words match
as whole words, IDs and dates as substrings. A value left empty by the scrub is emptied.

What this cannot do: recognise an identifier that is *not* one of the data set's own values (another
patient's name in a comment), or a name written differently (initials, a nickname). Free text is
therefore still removed by the profile, not scrubbed and kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from client.deid.values import DUMMY_TEXT

__all__ = ["IDENTIFYING_KEYWORDS", "INSTITUTION_KEYWORDS", "KnownValues", "collect_known_values"]

#: Attributes (besides every PN) whose values identify a patient, a study or an institution.
IDENTIFYING_KEYWORDS: Final = frozenset(
    {
        "PatientID",
        "OtherPatientIDs",
        "IssuerOfPatientID",
        "AccessionNumber",
        "StudyID",
        "RequestedProcedureID",
        "ScheduledProcedureStepID",
        "PerformedProcedureStepID",
        "AdmissionID",
        "ServiceEpisodeID",
        "MedicalRecordLocator",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "PatientBirthName",
        "PatientMotherBirthName",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "ReferringPhysicianAddress",
        "ReferringPhysicianTelephoneNumbers",
        "PersonAddress",
        "PersonTelephoneNumbers",
        "LocalNamespaceEntityID",
        "UniversalEntityID",
        "FillerOrderNumberImagingServiceRequest",
        "PlacerOrderNumberImagingServiceRequest",
    }
)
#: The institution's values: kept, not scrubbed, under Retain Institution Identity (PS3.15 E.3.4).
INSTITUTION_KEYWORDS: Final = frozenset(
    {"InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName"}
)
_TEXT_VRS: Final = frozenset({"AE", "CS", "LO", "LT", "SH", "ST", "UC", "UT"})
# Words of institution names and addresses too common to scrub on their own (the whole value still is).
_COMMON_WORDS: Final = frozenset(
    """
    hospital hospitals medical center centre clinic clinics university general regional imaging
    institute radiology department street avenue road lane drive boulevard saint health healthcare
    services service memorial community children county national royal foundation trust system
    north south east west upper lower suite floor building
    """.split()  # noqa: SIM905 - a word list reads better as text
)
_PATIENT_ID: Final = 0x00100020
_MIN_ID: Final = 4  # shorter IDs ("1", "A12") would remove ordinary text
_MIN_WORD: Final = 3
_PERSON_NAME_SHAPE: Final = re.compile(r"[^\s\^\\=]*[A-Za-z][^\s\^\\=]*\^[^\s\\=]*")
_PN_PREFILTER: Final = re.compile(rb"[A-Za-z0-9]\^|\^[A-Za-z]")
_SPACES: Final = re.compile(r"\s{2,}")


def _values(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, MultiValue | list | tuple):
        return [str(v) for v in value if v not in (None, "")]
    text = str(value)
    return [text] if text else []


def _date_forms(text: str) -> list[str]:
    match = re.fullmatch(r"(\d{4})\.?(\d{2})\.?(\d{2})", text.strip()[:8])
    if match is None:
        return []
    y, m, d = match.groups()
    forms = {f"{y}{m}{d}", f"{y}-{m}-{d}", f"{y}/{m}/{d}", f"{y}.{m}.{d}"}
    for a, b in ((m, d), (d, m)):
        forms |= {f"{a}/{b}/{y}", f"{a}-{b}-{y}", f"{a}.{b}.{y}"}
        forms |= {f"{int(a)}/{int(b)}/{y}"}
    return sorted(forms)


def _time_forms(text: str) -> list[str]:
    match = re.fullmatch(r"(\d{2}):?(\d{2})(?::?(\d{2}))?(?:\.\d+)?", text.strip())
    if match is None:
        return []
    h, m, s = match.groups()
    forms = [f"{h}:{m}:{s}", f"{h}{m}{s}"] if s else []
    if s is None or s == "00":
        forms.append(f"{h}:{m}")
    return forms


@dataclass(frozen=True)
class KnownValues:
    """The identifying values of one data set, compiled for scrubbing (see the module docstring)."""

    substrings: tuple[str, ...]
    words: tuple[str, ...]

    def __post_init__(self) -> None:
        parts = [re.escape(s) for s in sorted(self.substrings, key=len, reverse=True)]
        parts += [rf"(?<![A-Za-z0-9]){re.escape(w)}(?![A-Za-z0-9])" for w in self.words]
        pattern = "|".join(parts)
        object.__setattr__(self, "_text", re.compile(pattern, re.IGNORECASE) if pattern else None)
        raw = [re.escape(s.encode("utf-8")) for s in (*self.substrings, *self.words)]
        raw += [re.escape(s.encode("latin-1")) for s in (*self.substrings, *self.words) if _latin1(s)]
        object.__setattr__(self, "_bytes", re.compile(b"|".join(raw), re.IGNORECASE) if raw else None)

    def __bool__(self) -> bool:
        return bool(self.substrings or self.words)

    def clean(self, text: str) -> str:
        """``text`` without the known values and without person-name-shaped words."""
        pattern: re.Pattern[str] | None = self._text  # type: ignore[attr-defined]
        out = pattern.sub(" ", text) if pattern is not None else text
        out = _PERSON_NAME_SHAPE.sub(" ", out)
        if out == text:
            return text
        return _SPACES.sub(" ", out).strip(" ,;:/-")

    def _suspect(self, raw: bytes) -> bool:
        pattern: re.Pattern[bytes] | None = self._bytes  # type: ignore[attr-defined]
        return (pattern is not None and pattern.search(raw) is not None) or (
            _PN_PREFILTER.search(raw) is not None
        )

    def scrub(self, ds: Dataset, vr_of: Callable[[Any, int], str], on_change: Callable[[int], None]) -> None:
        """Remove the known values from every text element of ``ds``, at any depth, in place.

        ``vr_of(element, tag)`` resolves the VR of a stored element; ``on_change(tag)`` is called for
        each element changed (for the run's counts).
        """
        for tag, elem in list(ds.items()):
            vr = vr_of(elem, tag)
            if vr == "SQ":
                for item in ds[tag].value:
                    self.scrub(item, vr_of, on_change)
                continue
            if vr not in _TEXT_VRS or tag == _PATIENT_ID:  # the Patient ID is already a pseudonym
                continue
            if isinstance(elem, RawDataElement):
                if not isinstance(elem.value, bytes) or not self._suspect(elem.value):
                    continue
                elem = ds[tag]
            value = elem.value
            texts = _values(value)
            if not texts or texts == [DUMMY_TEXT]:  # the profile's own dummy
                continue
            cleaned = [self.clean(t) for t in texts]
            if cleaned == texts:
                continue
            kept = [c for c in cleaned if c]
            new: Any = "" if not kept else (kept[0] if len(kept) == 1 else kept)
            ds[tag] = DataElement(tag, vr, new)
            on_change(tag)


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return not text.isascii()


def _name_parts(value: str) -> Iterable[str]:
    for group in value.split("="):  # alphabetic, ideographic, phonetic groups
        for component in group.split("^"):
            for word in re.split(r"[\s,.]+", component):
                word = word.strip("'-")
                if len(word) >= _MIN_WORD and not word.isdigit():
                    yield word


def collect_known_values(
    ds: Dataset,
    vr_of: Callable[[Any, int], str],
    *,
    temporal: bool = True,
    institution: bool = True,
) -> KnownValues:
    """The identifying values of ``ds`` at any depth (read before de-identification changes them).

    ``temporal=False`` leaves dates and times out: in a data set that is already de-identified they
    are shifted values, not the patient's. ``institution=False`` leaves the institution's values out
    (Retain Institution Identity keeps them).
    """
    substrings: set[str] = set()
    words: set[str] = set()
    keywords = IDENTIFYING_KEYWORDS if institution else IDENTIFYING_KEYWORDS - INSTITUTION_KEYWORDS
    _collect(ds, vr_of, substrings, words, temporal, keywords)
    dummies = {DUMMY_TEXT.lower(), "anonymous", "unknown"}
    substrings = {s for s in substrings if s.lower() not in dummies}
    words = {w for w in words if w.lower() not in dummies and w.lower() not in _COMMON_WORDS}
    return KnownValues(tuple(sorted(substrings)), tuple(sorted(words - substrings)))


def _collect(
    ds: Dataset,
    vr_of: Callable[[Any, int], str],
    substrings: set[str],
    words: set[str],
    temporal: bool,
    keywords: frozenset[str],
) -> None:
    from pydicom.datadict import keyword_for_tag

    for tag, raw in list(ds.items()):
        if tag >> 16 & 1:  # private: removed anyway, and its VR is often unknown
            continue
        vr = vr_of(raw, tag)
        if vr == "SQ":
            for item in ds[tag].value:
                _collect(item, vr_of, substrings, words, temporal, keywords)
            continue
        keyword = keyword_for_tag(tag)
        if vr in ("DA", "DT", "TM") and not temporal:
            continue
        if vr not in ("PN", "DA", "DT", "TM") and keyword not in keywords:
            continue
        try:
            texts = _values(ds[tag].value)
        except Exception:  # an unparseable value is removed by the profile; nothing to learn from it
            continue
        for text in texts:
            text = text.strip()
            if vr == "PN":  # names match as whole words only ("ANON" is no part of "ANONYMIZED")
                whole = text.strip("^= ")
                if len(whole) >= _MIN_WORD:
                    words.add(whole)
                parts = list(_name_parts(text))
                words.update(parts)
                if len(parts) >= 2:
                    words.add(" ".join(parts[1::-1]))  # "Given Family"
                    words.add(", ".join(parts[:2]))  # "Family, Given"
            elif vr in ("DA", "DT"):
                substrings.update(_date_forms(text))
            elif vr == "TM":
                substrings.update(_time_forms(text))
            elif len(text) >= _MIN_ID:
                substrings.add(text)
                if keyword in ("InstitutionName", "InstitutionAddress", "PatientAddress"):
                    words.update(w for w in re.split(r"[\s,.]+", text) if len(w) >= 5 and w.isalpha())
                else:
                    digits = re.findall(r"\d{5,}", text)  # the number inside "MRN99812345"
                    substrings.update(digits)
