"""Value rules: date shifting, descriptor cleaning, dummies, and option names."""

from __future__ import annotations

import pytest

from client.deid.dates import shift_da, shift_dt
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
def test_shift_da(value: str, days: int, expected: str | None) -> None:
    assert shift_da(value, days) == expected


@pytest.mark.parametrize(
    ("value", "days", "expected"),
    [
        ("20200101093000.5+0100", 10, "20200111093000.5+0100"),
        ("20200101", -1, "20191231"),
        ("2020010112", -1, "2019123112"),
        ("2020", 5, None),
        ("garbage", 5, None),
    ],
)
def test_shift_dt(value: str, days: int, expected: str | None) -> None:
    assert shift_dt(value, days) == expected


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
    assert codes == ["113100", "113101", "113108", "113105"]


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
