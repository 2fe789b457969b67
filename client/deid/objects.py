"""Which objects of an export the engine can clean, and which it must refuse, with the reason.

A PACS export holds far more than images: structured reports (SR), key object selections (KOS),
presentation states (PR), segmentations (SEG), RT structure sets and plans, waveforms, raw data,
encapsulated documents. The engine de-identifies every one of them by the same rules and the same
keyed UID map (their identifying content is DICOM attributes, at any depth of their sequences: SR
content items are cleaned value by value - (0040,A160) *Text Value*, (0040,A123) *Person Name*,
(0040,A120) *DateTime*, (0040,A121) *Date*, (0040,A122) *Time*, (0040,A124) *UID*, codes), so that an
SR's or a SEG's references to images keep pointing at the de-identified images.

Some objects carry their content where attribute rules cannot reach it; they are refused:

- **encapsulated documents** (PS3.3 A.45: PDF, CDA, STL, OBJ, MTL; (0042,0011) *Encapsulated
  Document*): the document itself holds names and dates in a format of its own;
- **raw data** (PS3.3 A.37): vendor-defined bytes that nobody can inspect;
- **waveforms whose annotations carry free text** ((0040,B020) *Waveform Annotation Sequence* with
  (0070,0006) *Unformatted Text Value*): the text is typed by people, has no structure to parse and
  is part of what the waveform means.
"""

from __future__ import annotations

from typing import Final

from pydicom.dataset import Dataset

__all__ = ["ENCAPSULATED_DOCUMENT_ROOT", "RAW_DATA", "WAVEFORM_ROOT", "uncleanable_reason"]

#: Encapsulated PDF, CDA, STL, OBJ and MTL Storage (PS3.4 B.5): 1.2.840.10008.5.1.4.1.1.104.x.
ENCAPSULATED_DOCUMENT_ROOT: Final = "1.2.840.10008.5.1.4.1.1.104."
#: Raw Data Storage.
RAW_DATA: Final = "1.2.840.10008.5.1.4.1.1.66"
#: Waveform Storage SOP Classes (ECG, audio, hemodynamic, ...): 1.2.840.10008.5.1.4.1.1.9.x.
WAVEFORM_ROOT: Final = "1.2.840.10008.5.1.4.1.1.9."

_ENCAPSULATED_DOCUMENT: Final = 0x00420011
_WAVEFORM_ANNOTATIONS: Final = 0x0040B020
_UNFORMATTED_TEXT: Final = 0x00700006


def _has_free_text_annotation(ds: Dataset) -> bool:
    if _WAVEFORM_ANNOTATIONS not in ds:
        return False
    for item in ds[_WAVEFORM_ANNOTATIONS].value or ():
        if str(item.get(_UNFORMATTED_TEXT, "") and item[_UNFORMATTED_TEXT].value or "").strip():
            return True
    return False


def uncleanable_reason(ds: Dataset, sop_class: str) -> str | None:
    """Why the object ``ds`` (of SOP Class ``sop_class``) cannot be de-identified, or ``None``."""
    if sop_class.startswith(ENCAPSULATED_DOCUMENT_ROOT) or _ENCAPSULATED_DOCUMENT in ds:
        return (
            "encapsulated document: the PDF, CDA or other document inside (0042,0011) Encapsulated "
            "Document keeps its own names and dates, which attribute rules cannot reach"
        )
    if sop_class == RAW_DATA:
        return "raw data: vendor-defined content that cannot be inspected for identifiers"
    if sop_class.startswith(WAVEFORM_ROOT) and _has_free_text_annotation(ds):
        return (
            "waveform with free text: (0040,B020) Waveform Annotation Sequence holds unformatted text "
            "that cannot be parsed for identifiers"
        )
    return None
