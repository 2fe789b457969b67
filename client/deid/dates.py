"""Shifting DA and DT values by whole days (Retain Longitudinal Temporal Information, PS3.15 E.3.6).

Pure functions on the string forms of PS3.5 6.2: a DA value is ``YYYYMMDD`` (the ACR-NEMA form
``YYYY.MM.DD`` is read too), a DT value is ``YYYYMMDD`` followed by an optional time and UTC offset.
Shifting by whole days keeps every interval between two dates of a patient and leaves times of day
(TM values, and the time part of DT values) unchanged, which is why the shift is in days.

A value that cannot be read as a date (partial dates such as ``2019``, garbage) cannot be shifted
safely; the functions return ``None`` and the engine empties the element.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Final

__all__ = ["shift_da", "shift_dt"]

_DA: Final = re.compile(r"^(\d{4})\.?(\d{2})\.?(\d{2})$")
_DT: Final = re.compile(r"^(\d{8})((?:\d{2}){0,3}(?:\.\d{1,6})?)([+-]\d{4})?$")


def _shift_yyyymmdd(text: str, days: int) -> str | None:
    match = _DA.match(text)
    if match is None:
        return None
    try:
        day = _dt.date(int(match[1]), int(match[2]), int(match[3]))
        shifted = day + _dt.timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    return f"{shifted.year:04d}{shifted.month:02d}{shifted.day:02d}"


def shift_da(value: str, days: int) -> str | None:
    """Shift one DA value (or a ``start-end`` range) by ``days``; ``None`` if it is not a date.

    Examples
    --------
    >>> shift_da("20240301", -1)
    '20240229'
    >>> shift_da("", -5)
    ''
    """
    text = value.strip()
    if not text:
        return ""
    if "-" in text:
        start, _, end = text.partition("-")
        parts = [_shift_yyyymmdd(p, days) if p else "" for p in (start.strip(), end.strip())]
        if any(p is None for p in parts):
            return None
        return f"{parts[0]}-{parts[1]}"
    return _shift_yyyymmdd(text, days)


def shift_dt(value: str, days: int) -> str | None:
    """Shift the date part of one DT value by ``days``, keeping time and UTC offset as they are.

    Examples
    --------
    >>> shift_dt("20200101093000.5+0100", 10)
    '20200111093000.5+0100'
    >>> shift_dt("2020", 10) is None
    True
    """
    text = value.strip()
    if not text:
        return ""
    match = _DT.match(text)
    if match is None:
        return None
    date = _shift_yyyymmdd(match[1], days)
    if date is None:
        return None
    return date + (match[2] or "") + (match[3] or "")
