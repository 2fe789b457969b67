"""Value rules: date shifting, descriptor cleaning, dummies, and option names."""

from __future__ import annotations

import pytest

from client.deid.dates import TemporalShift, shift_da, shift_date_time, shift_dt, shift_tm
from client.deid.descriptors import clean_text
from client.deid.options import DeidOptions
from client.deid.values import dummy_value, empty_value


@pytest.mark.parametrize(
    ("value", "days", "expected"),
    [
        ("20240301", -1, "20240229"),
        ("2024.03.01", -1, "20240229"),
        ("20240301-20240310", -10, "20240220-20240229"),
        ("20240301-", -1, "20240229-"),
        ("", -3, ""),
        ("2024", -3, None),
        ("20241340", -3, None),
        ("00010101", -3, None),
    ],
)
def test_a_lone_date_moves_by_the_days_alone(value: str, days: int, expected: str | None) -> None:
    # the seconds never reach the next day: a lone date is the instant at midnight
    assert shift_da(value, TemporalShift(days, 86_399)) == expected


@pytest.mark.parametrize(
    ("value", "shift", "expected"),
    [
        ("20200101093000.5+0100", (10, 0), "20200111093000.5+0100"),
        ("20200101093000.5+0100", (-10, 60), "20191222093100.5+0100"),
        ("20200101233000", (-1, 3600), "20200101003000"),  # rolls into the next day
        ("20200101", (-1, 100), "20191231"),
        ("2020010112", (-1, 7200), "2019123114"),
        ("202001", (-40, 60), "201911"),
        ("2020", (-400, 0), "2018"),
        ("20200101120000-20200102120000", (-1, 60), "20191231120100-20200101120100"),
        ("garbage", (5, 0), None),
        ("2020010125", (5, 0), None),
    ],
)
def test_shift_dt_moves_the_instant(value: str, shift: tuple[int, int], expected: str | None) -> None:
    assert shift_dt(value, TemporalShift(*shift)) == expected


@pytest.mark.parametrize(
    ("date", "time", "shift", "expected"),
    [
        ("20230105", "230000", (-10, 7200), ("20221227", "010000")),
        ("20230105", "0930", (-1, 59), ("20230104", "0930")),  # to the minute, truncated
        ("20230105", "093000.123", (-1, 1), ("20230104", "093001.123")),
        ("2023.01.05", "09:30:00", (-1, 1), ("20230104", "093001")),
        ("20230105", "xx", (-1, 1), None),
        ("20230132", "093000", (-1, 1), None),
    ],
)
def test_a_date_and_its_time_move_as_one_instant(
    date: str, time: str, shift: tuple[int, int], expected: tuple[str, str] | None
) -> None:
    assert shift_date_time(date, time, TemporalShift(*shift)) == expected


@pytest.mark.parametrize(
    ("value", "seconds", "expected"),
    [
        ("233000", 3600, "003000"),
        ("120000.5", 61, "120101.5"),
        ("12", 3600, "13"),
        ("080000-090000", 60, "080100-090100"),
        ("", 5, ""),
        ("256000", 5, None),
    ],
)
def test_a_lone_time_moves_modulo_24_hours(value: str, seconds: int, expected: str | None) -> None:
    assert shift_tm(value, TemporalShift(-3, seconds)) == expected


def test_intervals_between_instants_survive_exactly() -> None:
    import datetime as dt

    shift = TemporalShift(-1234, 80_000)
    pairs = [("20230105", "235959"), ("20230106", "000001"), ("20240229", "120000")]
    moved = [shift_date_time(d, t, shift) for d, t in pairs]
    parse = lambda d, t: dt.datetime.strptime(d + t, "%Y%m%d%H%M%S")  # noqa: E731
    for (d1, t1), (d2, t2), m1, m2 in zip(pairs, pairs[1:], moved, moved[1:], strict=False):
        assert m1 is not None and m2 is not None
        assert parse(*m2) - parse(*m1) == parse(d2, t2) - parse(d1, t1)
        assert m1[1] != t1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CT Chest with contrast for John Smith MRN 12345678, 2023-01-05", "CT CHEST WITH CONTRAST"),
        ("AX T1 FLAIR 5mm post gad", "AX T1 FLAIR 5MM POST GAD"),
        ("Dr. Quenby called 555-0199 at 10:30", ""),
        ("Head 3D 1.25 bone", "HEAD 3D 1.25 BONE"),
        ("5, 10, 15", ""),
        ("", ""),
    ],
)
def test_clean_text_keeps_only_the_vocabulary(text: str, expected: str) -> None:
    cleaned = clean_text(text)
    assert cleaned == expected
    assert clean_text(cleaned) == cleaned


def test_dummies_are_valid_for_their_vr() -> None:
    assert dummy_value("DA") == "19000101"
    assert dummy_value("CS") == "ANONYMIZED" and len(str(dummy_value("SH"))) <= 16
    assert dummy_value("US") == 0
    assert len(dummy_value("OD")) % 8 == 0  # type: ignore[arg-type]
    assert empty_value("PN") == "" and empty_value("US") is None


def test_profiles_and_option_names() -> None:
    assert DeidOptions.for_profile("fedscan") == DeidOptions()
    basic = DeidOptions.for_profile("basic")
    assert not basic.retain_dates_modified and not basic.retain_patient_characteristics
    opts = DeidOptions.from_names(
        ["Clean_Descriptors", "no-retain-modified-dates", "mask-region=0,0,100,20"], profile="fedscan"
    )
    assert opts.clean_descriptors and not opts.retain_dates_modified
    assert opts.burned_in == "mask" and opts.mask_regions == ((0, 0, 100, 20),)
    assert "clean-descriptors" in opts.option_names
    codes = [c.value for c in opts.method_codes(pixels_cleaned=True)]
    assert codes == ["113100", "113101", "113108", "113105", "113104"]


@pytest.mark.parametrize(
    "names",
    [["retain-everything"], ["burned-in=ignore"], ["mask-region=1,2,3"], ["mask-region=a,b,c,d"]],
)
def test_unknown_or_malformed_options_are_refused(names: list[str]) -> None:
    with pytest.raises(ValueError, match="option|region|burned-in"):
        DeidOptions.from_names(names)


def test_invalid_policies_are_refused() -> None:
    with pytest.raises(ValueError):
        DeidOptions(burned_in="mask")
    with pytest.raises(ValueError):
        DeidOptions(burned_in="keep")
    with pytest.raises(ValueError):
        DeidOptions(burned_in="mask", mask_regions=((0, 0, 0, 5),))
    with pytest.raises(ValueError):
        DeidOptions.from_names([], profile="full")
