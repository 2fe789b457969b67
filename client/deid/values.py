"""Replacement values of the right VR: the empty value of Z and the dummy value of D (PS3.15 E.1.1).

A dummy must be *consistent with the VR* (PS3.5 Table 6.2-1): a date that parses, a number, a code
string of allowed characters, a binary value of a legal length. The dummies are constants, so that
replacing a dummy by a dummy changes nothing (de-identification stays a fixed point) and so that no
dummy can carry information about the original value.
"""

from __future__ import annotations

from typing import Final

__all__ = ["DUMMY_TEXT", "dummy_value", "empty_value"]

#: The dummy of every text VR; upper case and 10 characters so that it is a valid CS, SH and AE too.
DUMMY_TEXT: Final = "ANONYMIZED"

_DUMMIES: Final[dict[str, object]] = {
    "AE": DUMMY_TEXT,
    "AS": "000Y",
    "CS": DUMMY_TEXT,
    "DA": "19000101",
    "DS": "0",
    "DT": "19000101000000",
    "IS": "0",
    "LO": DUMMY_TEXT,
    "LT": DUMMY_TEXT,
    "PN": DUMMY_TEXT,
    "SH": DUMMY_TEXT,
    "ST": DUMMY_TEXT,
    "TM": "000000",
    "UC": DUMMY_TEXT,
    "UR": "urn:anonymized",
    "UT": DUMMY_TEXT,
    "FL": 0.0,
    "FD": 0.0,
    "SL": 0,
    "SS": 0,
    "SV": 0,
    "UL": 0,
    "US": 0,
    "UV": 0,
    "AT": 0,
    "OB": b"\x00\x00",
    "OW": b"\x00\x00",
    "OF": b"\x00" * 4,
    "OL": b"\x00" * 4,
    "OD": b"\x00" * 8,
    "OV": b"\x00" * 8,
    "UN": b"\x00\x00",
}

_TEXT_VRS: Final = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)


def dummy_value(vr: str) -> object:
    """A constant, non-empty value valid for ``vr`` (``ANONYMIZED`` for text)."""
    return _DUMMIES.get(vr, b"\x00\x00")


def empty_value(vr: str) -> object:
    """The zero-length value for ``vr``: ``""`` for text VRs, ``None`` (no value) for the others."""
    return "" if vr in _TEXT_VRS else None
