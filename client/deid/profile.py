"""Compile Table E.1-1 and the chosen options into one action per attribute.

The table (:mod:`client.deid.table`) says what the standard says; this module decides, once per set
of options, what fedscan *does* for each tag, so that the engine is a dictionary lookup per element.

Resolution rules (documented in ``docs/deidentification.md``):

1. **Options first.** Among the options switched on that name the attribute, ``K`` (keep) wins over
   ``C`` (clean); otherwise the Basic Profile action applies. Retain UIDs, Retain Full Dates and Clean
   Graphics are not offered, so their columns are ignored. Clean Structured Content's ``C`` on a
   sequence keeps it and cleans every item by the same table.
2. **Combined codes** (``Z/D``, ``X/Z``, ``X/D``, ``X/Z/D``) depend on the Type of the attribute in
   each IOD, which a de-identifier of arbitrary files cannot know. fedscan takes the *last* letter:
   an empty (Z) or dummy (D) value conforms whatever the Type, and neither identifies anyone.
   ``X/Z/U*`` keeps the sequence and replaces the instance UIDs inside it.
3. **Sequences.** ``K``, ``C`` and ``U*`` keep the sequence and de-identify each item with the same
   table. ``Z`` and ``D`` empty the sequence (zero items): a dummy sequence cannot be built without
   knowing the IOD, and keeping the items would keep the codes that name a person or an institution
   (e.g. (0040,1101) *Person Identification Code Sequence*). ``X`` removes it.
4. **Dates and times under Retain Modified Dates** (``C`` in that column): DA, DT and TM values are
   shifted by the patient's keyed offset (days and seconds, :mod:`client.deid.dates`); a date and its
   time move together as one instant. (0008,0201) *Timezone Offset From UTC* is kept (the offset is
   applied in local time). A binary timestamp ((0034,0007) *Frame Origin Timestamp*, OB) cannot be
   shifted and gets the Basic Profile action.
5. **(0010,0020) Patient ID** (``Z``) is replaced by the patient's keyed pseudonym, a dummy value that
   stays consistent across files, as Z allows.
6. **Cleaning** (``C`` of Clean Descriptors and Retain Patient Characteristics) keeps a closed imaging
   vocabulary (:mod:`client.deid.descriptors`); if nothing survives, the Basic Profile's empty or dummy
   value is used.

Attributes the table does not list are handled by the engine by VR (see :mod:`client.deid.engine`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from pydicom.datadict import dictionary_VR, keyword_for_tag

from client.deid.options import DeidOptions
from client.deid.table import FEDSCAN_SUPPLEMENT, ROWS, Row

__all__ = [
    "CLEAN",
    "DUMMY",
    "EMPTY",
    "KEEP",
    "PSEUDONYM",
    "RECURSE",
    "REMOVE",
    "SHIFT",
    "REPLACE_UID",
    "Rule",
    "compile_rules",
    "parse_tag",
]

# What the engine can do to one element.
REMOVE: Final = "X"  # delete the element
EMPTY: Final = "Z"  # zero-length value (zero items for a sequence)
DUMMY: Final = "D"  # non-empty dummy value of the right VR
KEEP: Final = "K"  # leave as is
CLEAN: Final = "C"  # keep only harmless words (Clean Descriptors)
REPLACE_UID: Final = "U"  # replace each UID by its keyed pseudonym
SHIFT: Final = "T"  # shift DA/DT/TM by the patient's keyed offset
RECURSE: Final = "R"  # keep the sequence, de-identify each item
PSEUDONYM: Final = "P"  # replace by the keyed patient pseudonym

_ELEMENT_ACTIONS: Final = {
    "X": REMOVE,
    "Z": EMPTY,
    "D": DUMMY,
    "K": KEEP,
    "C": CLEAN,
    "U": REPLACE_UID,
    "U*": REPLACE_UID,
}
_SEQUENCE_ACTIONS: Final = {"X": REMOVE, "Z": EMPTY, "D": EMPTY, "K": RECURSE, "C": RECURSE, "U*": RECURSE}
_PATIENT_ID: Final = 0x00100020
_TEMPORAL_KEEP_VRS: Final = frozenset({"SH"})
_TEMPORAL_VRS: Final = frozenset({"DA", "DT", "TM", "SH"})


@dataclass(frozen=True, slots=True)
class Rule:
    """What to do with one attribute.

    Attributes
    ----------
    action : str
        One of the action constants of this module.
    fallback : str
        For CLEAN: the action when cleaning leaves nothing (EMPTY or DUMMY).
    keyword : str
        The attribute's DICOM keyword (for reports).
    """

    action: str
    fallback: str
    keyword: str


def parse_tag(text: str) -> int:
    """``"(0010,0010)"`` -> ``0x00100010``."""
    group, _, element = text.strip("()").partition(",")
    return (int(group, 16) << 16) | int(element, 16)


def _option_code(row: Row, options: DeidOptions) -> str:
    enabled = (
        (options.retain_device_identity, row.dev),
        (options.retain_institution_identity, row.inst),
        (options.retain_patient_characteristics, row.pat),
        (options.retain_dates_modified, row.mod),
        (options.clean_descriptors, row.desc),
        (options.clean_structured_content, row.struct),
    )
    codes = {code for on, code in enabled if on and code}
    if "K" in codes:
        return "K"
    if "C" in codes:
        return "C"
    return ""


def _resolve(row: Row, options: DeidOptions) -> Rule:
    tag = parse_tag(row.tag)
    keyword = keyword_for_tag(tag) or row.name
    vr = dictionary_VR(tag)
    basic = row.basic.split("/")[-1]  # rule 2: the last letter of a combined code
    fallback = EMPTY if basic in ("Z", "X") else DUMMY
    code = _option_code(row, options) or basic
    if code == "C" and row.mod and vr not in _TEMPORAL_VRS:
        code = basic  # a binary timestamp (e.g. Frame Origin Timestamp, OB) cannot be shifted
    if vr == "SQ":
        return Rule(_SEQUENCE_ACTIONS[code], EMPTY, keyword)
    if code == "C" and row.mod == "C" and options.retain_dates_modified and not row.desc:
        action = KEEP if vr in _TEMPORAL_KEEP_VRS else SHIFT
        return Rule(action, fallback, keyword)
    if tag == _PATIENT_ID:
        return Rule(PSEUDONYM, fallback, keyword)
    return Rule(_ELEMENT_ACTIONS[code], fallback, keyword)


@lru_cache(maxsize=16)
def compile_rules(options: DeidOptions) -> Mapping[int, Rule]:
    """The action for every attribute named by Table E.1-1 (and fedscan's supplement).

    Cached per options: a worker compiles the table once.
    """
    return {parse_tag(row.tag): _resolve(row, options) for row in (*ROWS, *FEDSCAN_SUPPLEMENT)}
