"""Fake but plausible protected health information (PHI) for synthetic DICOM files.

Everything here is invented: names come from small built-in lists, identifiers and dates from a seeded
generator. The point is that a synthetic export carries identifiers *where a real export carries them*
(headers, nested sequences, private tags, free text, burned-in pixels), so that de-identification and
ingest tests have something real to remove, and can grep for it afterwards.

Every string that a cohort writes is listed by :meth:`FakePatient.phi_values` and
:meth:`FakeInstitution.phi_values`, exactly as written into the files.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from dataclasses import dataclass

import numpy as np

__all__ = [
    "FakeInstitution",
    "FakePatient",
    "FakeStudy",
    "ascii_fold",
    "draw_institution",
    "draw_patient",
    "draw_person_name",
    "draw_study",
]

# A few non-ASCII names on purpose: real exports carry them, and (0008,0005) *Specific Character Set*
# then matters. Every name is at least three letters so that no planted string is a trivial substring.
_FIRST_NAMES_F = (
    "Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Susan", "Jessica", "Sarah", "Karen", "Nancy",
    "Margaret", "Sandra", "Ashley", "Dorothy", "Kimberly", "Emily", "Donna", "Michelle", "Carol", "Amanda",
    "Helga", "Ingrid", "Chloé", "Zoë", "Aiko", "Priya", "Fatima", "Olga", "Lucía", "Mei",
)  # fmt: skip
_FIRST_NAMES_M = (
    "James", "Robert", "John", "Michael", "David", "William", "Richard", "Joseph", "Thomas", "Charles",
    "Christopher", "Daniel", "Matthew", "Anthony", "Mark", "Donald", "Steven", "Paul", "Andrew", "Joshua",
    "Jürgen", "José", "François", "Hiroshi", "Rajesh", "Ahmed", "Ivan", "Lars", "Mateo", "Wei",
)  # fmt: skip
_LAST_NAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
    "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
    "Lee", "Thompson", "White", "Harris", "Clark", "Lewis", "Robinson", "Walker", "Young", "Allen",
    "Müller", "Schmidt", "Dubois", "Rossi", "Novak", "Kowalski", "Tanaka", "Nakamura", "Patel", "O'Brien",
)  # fmt: skip
_STREETS = (
    "Maple Street", "Oak Avenue", "Pine Road", "Cedar Lane", "Elm Drive", "Lakeview Terrace",
    "Hillcrest Road", "Sunset Boulevard", "Church Street", "Mill Lane", "Station Road", "Park Avenue",
)  # fmt: skip
_CITIES = (
    ("Springfield", "IL", "627"), ("Riverton", "WY", "825"), ("Fairview", "OR", "970"),
    ("Greenville", "SC", "296"), ("Madison", "WI", "537"), ("Georgetown", "KY", "403"),
    ("Franklin", "TN", "370"), ("Clinton", "IA", "527"), ("Salem", "MA", "019"), ("Arlington", "VA", "222"),
)  # fmt: skip
_HOSPITAL_WORDS = (
    ("St. Brigid", "Hospital"), ("Mercy", "Medical Center"), ("Lakeside", "General Hospital"),
    ("Riverside", "University Hospital"), ("Northgate", "Clinic"), ("Good Shepherd", "Hospital"),
    ("Valley", "Regional Medical Center"), ("Harbor", "Imaging Institute"),
)  # fmt: skip
_HISTORY = (
    "abdominal pain, r/o mass", "follow-up of known lesion", "weight loss", "elevated LFTs",
    "trauma, MVA", "staging", "incidental finding on US", "fever of unknown origin",
)  # fmt: skip


def ascii_fold(text: str) -> str:
    """Return ``text`` with accents removed, for burned-in text (OpenCV's Hershey fonts are ASCII only)."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return folded


def _pick(rng: np.random.Generator, items: tuple[str, ...]) -> str:
    return items[int(rng.integers(len(items)))]


def _random_date(rng: np.random.Generator, start: dt.date, end: dt.date) -> dt.date:
    return start + dt.timedelta(days=int(rng.integers((end - start).days + 1)))


def _random_time(rng: np.random.Generator, first_hour: int = 7, last_hour: int = 19) -> str:
    seconds = int(rng.integers(first_hour * 3600, last_hour * 3600))
    return f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}"


def _digits(rng: np.random.Generator, n: int) -> str:
    """``n`` random digits, the first one non-zero."""
    return str(int(rng.integers(10 ** (n - 1), 10**n)))


def _address(rng: np.random.Generator, number: int, city: str, state: str, zip3: str) -> str:
    return f"{number} {_pick(rng, _STREETS)}, {city}, {state} {zip3}{int(rng.integers(10, 99))}"


def draw_person_name(rng: np.random.Generator, sex: str | None = None) -> tuple[str, str]:
    """Return a (given, family) name pair; ``sex`` is "F", "M" or None (either)."""
    if sex is None:
        sex = "F" if rng.random() < 0.5 else "M"
    first = _pick(rng, _FIRST_NAMES_F if sex == "F" else _FIRST_NAMES_M)
    return first, _pick(rng, _LAST_NAMES)


def _pn(given: str, family: str, middle: str = "") -> str:
    """A DICOM PN value, ``FAMILY^GIVEN^MIDDLE`` (PS3.5 6.2.1.1), upper case as many RIS write it."""
    return "^".join(p for p in (family.upper(), given.upper(), middle.upper()) if p)


@dataclass(frozen=True)
class FakeInstitution:
    """One site's institution: (0008,0080) *Institution Name*, (0008,0081) *Institution Address*."""

    name: str
    address: str
    department: str
    phone: str
    issuer: str  # (0010,0021) Issuer of Patient ID: a short code that also prefixes its MRNs
    operators: tuple[str, ...]  # PN values of technologists, (0008,1070) Operators' Name
    physicians: tuple[str, ...]  # PN values of referring / reading physicians

    def phi_values(self) -> tuple[str, ...]:
        """Identifying strings of the institution, as written (staff names come with the studies)."""
        return (self.name, self.address, self.phone)


def draw_institution(rng: np.random.Generator, site_index: int) -> FakeInstitution:
    """Draw a hospital: name, address, a few staff names; ``site_index`` keeps names apart across sites."""
    word, kind = _HOSPITAL_WORDS[
        (site_index + int(rng.integers(len(_HOSPITAL_WORDS)))) % len(_HOSPITAL_WORDS)
    ]
    city, state, zip3 = _CITIES[int(rng.integers(len(_CITIES)))]
    name = f"{word} {kind} {city}"
    address = _address(rng, int(rng.integers(100, 9999)), city, state, zip3)
    staff = [draw_person_name(rng) for _ in range(6)]
    return FakeInstitution(
        name=name,
        address=address,
        department="Radiology",
        phone=f"({int(rng.integers(201, 989))}) 555-{int(rng.integers(1000, 9999))}",
        issuer=f"{word[:1].upper()}{kind[:1].upper()}{site_index + 1}",
        operators=tuple(_pn(g, f) for g, f in staff[:3]),
        physicians=tuple(_pn(g, f, "MD") for g, f in staff[3:]),
    )


@dataclass(frozen=True)
class FakePatient:
    """One patient's identity, in the forms a DICOM export writes it."""

    given: str
    family: str
    middle_initial: str
    sex: str  # "F" | "M"
    birth_date: dt.date
    patient_id: str  # MRN, (0010,0020) Patient ID
    other_ids: tuple[str, ...]  # (0010,1002) Other Patient IDs Sequence: national / insurance IDs
    address: str  # (0010,1040) Patient's Address
    phone: str  # (0010,2154) Patient's Telephone Numbers
    history: str

    @property
    def pn(self) -> str:
        """(0010,0010) *Patient's Name* as written: ``FAMILY^GIVEN^M``."""
        return _pn(self.given, self.family, self.middle_initial)

    @property
    def display_name(self) -> str:
        """The name as a person types it into free text: ``Given Family``."""
        return f"{self.given} {self.family}"

    @property
    def listed_name(self) -> str:
        """The name as worklists print it: ``FAMILY, GIVEN``."""
        return f"{self.family.upper()}, {self.given.upper()}"

    def phi_values(self) -> tuple[str, ...]:
        """Every identifying string of this patient, as written into headers and free text."""
        return (
            self.pn,
            self.display_name,
            self.listed_name,
            self.patient_id,
            *self.other_ids,
            self.address,
            self.phone,
            self.birth_date.strftime("%Y%m%d"),
            self.birth_date.strftime("%m/%d/%Y"),
            f"{self.family.upper()}^{self.given.upper()}",
        )


def draw_patient(rng: np.random.Generator, institution: FakeInstitution) -> FakePatient:
    """Draw a patient registered at ``institution`` (the MRN format is the institution's)."""
    sex = "F" if rng.random() < 0.5 else "M"
    given, family = draw_person_name(rng, sex)
    city, state, zip3 = _CITIES[int(rng.integers(len(_CITIES)))]
    return FakePatient(
        given=given,
        family=family,
        middle_initial=chr(ord("A") + int(rng.integers(26))),
        sex=sex,
        birth_date=_random_date(rng, dt.date(1932, 1, 1), dt.date(2004, 12, 31)),
        patient_id=f"{institution.issuer}{int(rng.integers(10**6, 10**7)):07d}",
        other_ids=(
            f"SSN-{_digits(rng, 3)}-{_digits(rng, 2)}-{_digits(rng, 4)}",
            f"INS{int(rng.integers(10**8, 10**9))}",
        ),
        address=_address(rng, int(rng.integers(1, 999)), city, state, zip3),
        phone=f"({int(rng.integers(201, 989))}) 555-{int(rng.integers(1000, 9999)):04d}",
        history=_pick(rng, _HISTORY),
    )


@dataclass(frozen=True)
class FakeStudy:
    """A study's identifying values: dates, times, accession number, the people involved."""

    date: dt.date
    time: str  # HHMMSS
    accession_number: str
    referring_physician: str  # PN
    reading_physician: str  # PN
    operator: str  # PN
    requested_procedure_id: str
    scheduled_step_id: str

    @property
    def date_str(self) -> str:
        """The study date as written (DA, ``YYYYMMDD``)."""
        return self.date.strftime("%Y%m%d")

    def phi_values(self) -> tuple[str, ...]:
        """Identifying strings of this study, as written."""
        return (
            self.date_str,
            self.accession_number,
            self.referring_physician,
            self.reading_physician,
            self.operator,
            self.requested_procedure_id,
            self.scheduled_step_id,
        )


def draw_study(rng: np.random.Generator, institution: FakeInstitution, patient: FakePatient) -> FakeStudy:
    """Draw a study of ``patient`` at ``institution``, performed after the patient's 18th birthday."""
    earliest = max(dt.date(2012, 1, 1), patient.birth_date + dt.timedelta(days=18 * 366))
    return FakeStudy(
        date=_random_date(rng, earliest, dt.date(2024, 12, 31)),
        time=_random_time(rng),
        accession_number=f"A{int(rng.integers(10**8, 10**9))}",
        referring_physician=_pick(rng, institution.physicians),
        reading_physician=_pick(rng, institution.physicians),
        operator=_pick(rng, institution.operators),
        requested_procedure_id=f"RP{int(rng.integers(10**6, 10**7))}",
        scheduled_step_id=f"SPS{int(rng.integers(10**6, 10**7))}",
    )
