"""The profile as data: Table E.1-1 is well formed, and compiles to the documented actions."""

from __future__ import annotations

import itertools
import re

import pytest
from pydicom.datadict import dictionary_description, dictionary_has_tag, dictionary_VR

from client.deid.options import DeidOptions
from client.deid.profile import (
    CLEAN,
    DUMMY,
    EMPTY,
    KEEP,
    PSEUDONYM,
    RECURSE,
    REMOVE,
    REPLACE_UID,
    SHIFT,
    compile_rules,
    parse_tag,
)
from client.deid.table import FEDSCAN_SUPPLEMENT, PATTERN_ROWS, ROWS, TABLE_EDITION

CODES = {"", "D", "Z", "X", "K", "C", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}


def _words(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def test_every_row_names_a_dictionary_attribute_once() -> None:
    seen: set[int] = set()
    for row in (*ROWS, *FEDSCAN_SUPPLEMENT):
        tag = parse_tag(row.tag)
        assert tag not in seen, row
        seen.add(tag)
        assert dictionary_has_tag(tag), row
        assert _words(dictionary_description(tag)) == _words(row.name), row
    assert len(ROWS) == 456
    assert TABLE_EDITION.startswith("PS3.15")


def test_every_cell_is_a_code_of_ps3_15_e_1_1() -> None:
    for row in (*ROWS, *PATTERN_ROWS, *FEDSCAN_SUPPLEMENT):
        assert row.basic in CODES - {""}, row
        for cell in row[3:]:
            assert cell in CODES, row


def test_temporal_rows_carry_both_date_options_and_are_temporal() -> None:
    for row in ROWS:
        assert bool(row.full) == bool(row.mod), row
        if row.mod:
            assert dictionary_VR(parse_tag(row.tag)) in ("DA", "DT", "TM", "SH", "OB"), row
    # a binary timestamp cannot be shifted: it gets the Basic Profile's dummy
    assert compile_rules(DeidOptions())[0x00340007].action == DUMMY


@pytest.mark.parametrize(
    "flags",
    list(itertools.product([False, True], repeat=6)),
    ids=lambda f: "".join("1" if x else "0" for x in f),
)
def test_every_option_combination_compiles(flags: tuple[bool, ...]) -> None:
    options = DeidOptions(*flags)
    rules = compile_rules(options)
    assert len(rules) == len(ROWS) + len(FEDSCAN_SUPPLEMENT)
    for tag, rule in rules.items():
        if dictionary_VR(tag) == "SQ":
            assert rule.action in (REMOVE, EMPTY, RECURSE), hex(tag)


def _action(keyword_tag: int, options: DeidOptions) -> str:
    return compile_rules(options)[keyword_tag].action


BASIC = DeidOptions.for_profile("basic")
FEDSCAN = DeidOptions()


@pytest.mark.parametrize(
    ("tag", "options", "expected"),
    [
        (0x00100010, BASIC, EMPTY),  # Patient's Name Z
        (0x00100020, BASIC, PSEUDONYM),  # Patient ID Z -> keyed dummy
        (0x00100030, FEDSCAN, EMPTY),  # Patient's Birth Date Z, no option keeps it
        (0x00101010, BASIC, REMOVE),  # Patient's Age X
        (0x00101010, FEDSCAN, KEEP),  # ... K under Retain Patient Characteristics
        (0x00100040, FEDSCAN, KEEP),  # Patient's Sex
        (0x00080020, BASIC, EMPTY),  # Study Date Z
        (0x00080020, FEDSCAN, SHIFT),  # ... C under Modified Dates
        (0x00080030, FEDSCAN, SHIFT),  # Study Time: shifted with its date (days and seconds)
        (0x00080021, BASIC, DUMMY),  # Series Date X/D -> D
        (0x00080023, BASIC, DUMMY),  # Content Date Z/D -> D
        (0x00081070, BASIC, DUMMY),  # Operators' Name X/Z/D -> D
        (0x00080080, BASIC, DUMMY),  # Institution Name X/Z/D -> D
        (0x00080080, DeidOptions(retain_institution_identity=True), KEEP),
        (0x00181000, DeidOptions(retain_device_identity=True), KEEP),  # Device Serial Number
        (0x00081030, BASIC, REMOVE),  # Study Description X
        (0x00081030, DeidOptions(clean_descriptors=True), CLEAN),
        (0x00082112, BASIC, RECURSE),  # Source Image Sequence X/Z/U*
        (0x00081140, BASIC, RECURSE),  # Referenced Image Sequence X/Z/U*
        (0x00080082, BASIC, EMPTY),  # Institution Code Sequence X/Z/D: a dummy sequence is empty
        (0x00401101, BASIC, EMPTY),  # Person Identification Code Sequence D
        (0x0040A730, BASIC, EMPTY),  # Content Sequence D
        (0x00400275, BASIC, REMOVE),  # Request Attributes Sequence X
        (0x00400275, DeidOptions(clean_descriptors=True), RECURSE),
        (0x00080018, BASIC, REPLACE_UID),  # SOP Instance UID U
        (0x00200052, BASIC, REPLACE_UID),  # Frame of Reference UID U
        (0x00102110, DeidOptions(retain_patient_characteristics=True), CLEAN),  # Allergies C
        (0x00080055, BASIC, REMOVE),  # Station AE Title (fedscan supplement)
    ],
)
def test_documented_resolutions(tag: int, options: DeidOptions, expected: str) -> None:
    assert _action(tag, options) == expected
