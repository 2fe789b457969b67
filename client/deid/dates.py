"""Shifting DA, DT and TM values by a patient's offset (Retain Longitudinal Temporal Information, E.3.6).

Pure functions on the string forms of PS3.5 6.2: a DA value is ``YYYYMMDD`` (the ACR-NEMA form
``YYYY.MM.DD`` is read too), a TM value is ``HH[MM[SS[.F{1,6}]]]`` (``HH:MM:SS`` read too), a DT value is
``YYYY[MM[DD[HH[MM[SS[.F]]]]]]`` with an optional UTC offset.

A patient's offset (:class:`TemporalShift`) is a whole number of days back *plus* a number of seconds
forward (less than a day), so that no time of day survives either. It is applied to *instants*:

- a date and its time (a DA attribute and the TM attribute of the same name in the same data set, e.g.
  (0008,0020) *Study Date* and (0008,0030) *Study Time*; :func:`shift_date_time`), and a DT value
  (:func:`shift_dt`), move as one instant: the date rolls over when the time crosses midnight, so the
  interval between any two instants of a patient is preserved exactly;
- a lone DA is the instant at midnight (:func:`shift_da`): it moves by the days alone, because the
  seconds never reach the next day;
- a lone TM has no date to roll (:func:`shift_tm`): it is shifted modulo 24 hours, which gives the same
  time of day as when it comes with its date.

Values keep their precision: a time given to the minute comes back to the minute (the shifted instant
truncated), fractions of a second are kept, and so is a DT's UTC offset. A value that cannot be read as
a date or time (partial dates such as ``2019`` in a DA, garbage) cannot be shifted safely; the
functions return ``None`` and the engine empties the element.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable
from typing import Final, NamedTuple

__all__ = ["TemporalShift", "shift_da", "shift_date_time", "shift_dt", "shift_tm"]

_DA: Final = re.compile(r"^(\d{4})\.?(\d{2})\.?(\d{2})$")
_TM: Final = re.compile(r"^(\d{2})(?::?(\d{2})(?::?(\d{2})(\.\d{1,6})?)?)?$")
_DT: Final = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,6})?([+-]\d{4})?$")
_DAY: Final = 86_400


class TemporalShift(NamedTuple):
    """One patient's offset: ``days`` (negative, whole days) plus ``seconds`` (0 to 86399).

    The offset as one duration is ``days * 86400 + seconds`` seconds: never zero, always negative.
    """

    days: int
    seconds: int

    @property
    def total_seconds(self) -> int:
        """The whole offset in seconds."""
        return self.days * _DAY + self.seconds


def _date(text: str) -> _dt.date | None:
    match = _DA.match(text)
    if match is None:
        return None
    try:
        return _dt.date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def _format_date(day: _dt.date) -> str:
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"


def _time(text: str) -> tuple[int, int, str] | None:
    """A TM value as (seconds since midnight, number of components given, fraction text)."""
    match = _TM.match(text)
    if match is None:
        return None
    hours, minutes, seconds = int(match[1]), int(match[2] or 0), int(match[3] or 0)
    # 60 is a leap second (PS3.5 allows it); it is folded into the next minute
    if hours > 23 or minutes > 59 or seconds > 60:
        return None
    parts = 1 + (match[2] is not None) + (match[3] is not None)
    return hours * 3600 + minutes * 60 + seconds, parts, match[4] or ""


def _format_time(seconds: int, parts: int, fraction: str) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours:02d}{minutes:02d}{secs:02d}"[: 2 * parts]
    return text + (fraction if parts == 3 else "")


def _each_end(value: str, shift_one: Callable[[str], str | None]) -> str | None:
    """Apply ``shift_one`` to a value, or to both ends of a ``start-end`` range (either may be empty)."""
    text = value.strip()
    if not text:
        return ""
    if "-" not in text:
        return shift_one(text)
    start, _, end = text.partition("-")
    parts = [shift_one(p) if p else "" for p in (start.strip(), end.strip())]
    if any(p is None for p in parts):
        return None
    return f"{parts[0]}-{parts[1]}"


def _shift_da_one(text: str, shift: TemporalShift) -> str | None:
    day = _date(text)
    if day is None:
        return None
    try:
        return _format_date(day + _dt.timedelta(days=shift.days))
    except OverflowError:
        return None


def shift_da(value: str, shift: TemporalShift) -> str | None:
    """Shift one lone DA value (or a ``start-end`` range); ``None`` if it is not a date.

    Examples
    --------
    >>> shift_da("20240301", TemporalShift(-1, 3600))
    '20240229'
    >>> shift_da("", TemporalShift(-5, 0))
    ''
    """
    return _each_end(value, lambda text: _shift_da_one(text, shift))


def _shift_tm_one(text: str, shift: TemporalShift) -> str | None:
    parsed = _time(text)
    if parsed is None:
        return None
    seconds, parts, fraction = parsed
    return _format_time((seconds + shift.seconds) % _DAY, parts, fraction)


def shift_tm(value: str, shift: TemporalShift) -> str | None:
    """Shift one lone TM value (or a range) modulo 24 hours; ``None`` if it is not a time.

    Examples
    --------
    >>> shift_tm("233000.25", TemporalShift(-3, 3600))
    '003000.25'
    >>> shift_tm("0930", TemporalShift(-3, 90))
    '0931'
    """
    return _each_end(value, lambda text: _shift_tm_one(text, shift))


def shift_date_time(date: str, time: str, shift: TemporalShift) -> tuple[str, str] | None:
    """Shift a DA value and the TM value paired with it as one instant; ``None`` if either is unreadable.

    Examples
    --------
    >>> shift_date_time("20230105", "230000", TemporalShift(-10, 7200))
    ('20221227', '010000')
    """
    day = _date(date.strip())
    parsed = _time(time.strip())
    if day is None or parsed is None:
        return None
    seconds, parts, fraction = parsed
    carry, rest = divmod(seconds + shift.seconds, _DAY)
    try:
        shifted = day + _dt.timedelta(days=shift.days + carry)
    except OverflowError:
        return None
    return _format_date(shifted), _format_time(rest, parts, fraction)


def shift_dt(value: str, shift: TemporalShift) -> str | None:
    """Shift one DT value as an instant, keeping its precision, fraction and UTC offset.

    Missing components count as their lowest value (a DT of ``2020`` is 1 January 2020, midnight).

    Examples
    --------
    >>> shift_dt("20200101093000.5+0100", TemporalShift(-10, 60))
    '20191222093100.5+0100'
    >>> shift_dt("202001", TemporalShift(-40, 60))
    '201911'
    >>> shift_dt("20x0", TemporalShift(-1, 0)) is None
    True
    """
    text = value.strip()
    if not text:
        return ""
    if "-" in text[1:] and not re.search(r"[+-]\d{4}$", text):
        start, _, end = text.partition("-")
        parts = [shift_dt(p, shift) if p else "" for p in (start, end)]
        if any(p is None for p in parts):
            return None
        return f"{parts[0]}-{parts[1]}"
    match = _DT.match(text)
    if match is None:
        return None
    fields = [match[i] for i in range(1, 7)]
    given = sum(1 for f in fields if f is not None)
    if any(fields[i] is None and fields[i + 1] is not None for i in range(5)):
        return None
    year, month, day = int(fields[0]), int(fields[1] or 1), int(fields[2] or 1)
    hours, minutes, seconds = (int(f or 0) for f in fields[3:6])
    if hours > 23 or minutes > 59 or seconds > 60:
        return None
    try:
        instant = _dt.datetime(year, month, day) + _dt.timedelta(
            seconds=hours * 3600 + minutes * 60 + seconds + shift.total_seconds
        )
    except (ValueError, OverflowError):
        return None
    full = (
        f"{instant.year:04d}{instant.month:02d}{instant.day:02d}"
        f"{instant.hour:02d}{instant.minute:02d}{instant.second:02d}"
    )
    widths = (4, 6, 8, 10, 12, 14)
    out = full[: widths[given - 1]]
    if given == 6:
        out += match[7] or ""
    return out + (match[8] or "")
