"""The de-identification engine: applies the compiled profile to one data set, in place.

:class:`Deidentifier` walks every element of a :class:`pydicom.Dataset` - nested sequences at any
depth, private blocks, retired repeating groups and elements of unknown VR - and applies the action
:mod:`client.deid.profile` compiled from PS3.15 Table E.1-1 and the options. Elements the table does
not name are handled by VR, conservatively (fedscan's additions, PS3.15 E.1.1 leaves them to the
implementer):

====================  ==================================================================
PN                    emptied (a person's name, whatever the attribute)
DA, DT, TM            shifted by the patient's keyed offset (Modified Dates) or removed
UI                    replaced by a keyed UID unless it is a DICOM-defined UID (a SOP Class,
                      a Transfer Syntax, a coding scheme: root ``1.2.840.10008.``)
SQ                    kept, each item de-identified by the same rules
UN (unknown public)   removed: what cannot be named cannot be judged safe
odd groups (private)  removed, unless Retain Safe Private allows (creator, group, element)
50xx, 60xx groups     removed whole (curves and overlays: graphics and text; PS3.15 E.3.8
                      is not offered)
(gggg,0000) lengths   removed (obsolete; pydicom writes the file meta group length)
everything else       kept (the Basic Profile keeps attributes it does not list)
====================  ==================================================================

Then the data set's own identifying values, collected before the walk, are removed from the text it kept
(:mod:`client.deid.known_values`). Then it fills the Type 2 attributes of the Patient and General Study
modules that are missing, marks the data set ((0012,0062) *Patient Identity Removed* = ``YES``,
(0012,0063) *De-identification Method*, (0012,0064) *De-identification Method Code Sequence* with the
CID 7050 codes applied, (0028,0303) *Longitudinal Temporal Information Modified*), and rebuilds the file
meta information (PS3.10 7.1) so that (0002,0003) *Media Storage SOP Instance UID* equals the new
(0008,0018) *SOP Instance UID*.

Idempotence (a documented rule, tested): UIDs and the Patient ID are self-authenticating keyed
pseudonyms that map to themselves (:mod:`client.deid.pseudonyms`), and a data set whose
(0010,0020) *Patient ID* is already one of this secret's pseudonyms has already had its dates shifted,
so they are not shifted again (dates and times alike). Every other action maps its own output to
itself. De-identifying an output again with the same secret and options therefore changes nothing.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final

from pydicom.datadict import DicomDictionary, dictionary_VR, keyword_for_tag, private_dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from client.deid.burned_in import burned_in_reason, mask_pixels, ocr_mask_pixels, visual_features_reason
from client.deid.dates import TemporalShift, shift_da, shift_date_time, shift_dt, shift_tm
from client.deid.descriptors import clean_text
from client.deid.known_values import collect_known_values
from client.deid.objects import uncleanable_reason
from client.deid.options import CLEAN_PIXEL_DATA, DeidOptions
from client.deid.pixel_hygiene import pixel_size_reason, zero_unused_bits
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
)
from client.deid.pseudonyms import KeyedPseudonyms
from client.deid.table import TABLE_EDITION
from client.deid.values import dummy_value, empty_value

if TYPE_CHECKING:
    from client.deid.ocr import TextDetector
from common.errors import FedscanError, InputError

__all__ = [
    "ACTION_NAMES",
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "METHOD_DESCRIPTION",
    "DeidOutcome",
    "DeidRejected",
    "Deidentifier",
]

#: (0002,0012) *Implementation Class UID* written into every output (a fixed UUID-derived UID).
IMPLEMENTATION_CLASS_UID: Final = "2.25.324500308061839180571439533056313686823"
#: (0002,0013) *Implementation Version Name* (SH, at most 16 characters).
IMPLEMENTATION_VERSION_NAME: Final = "FEDSCAN_DEID_1"
#: (0012,0063) *De-identification Method* (LO, at most 64 characters).
METHOD_DESCRIPTION: Final = f"fedscan deid 1; {TABLE_EDITION}"

#: How each action is named in outcomes and reports.
ACTION_NAMES: Final[dict[str, str]] = {
    REMOVE: "removed",
    EMPTY: "emptied",
    DUMMY: "dummy",
    KEEP: "kept",
    CLEAN: "cleaned",
    REPLACE_UID: "uid-replaced",
    SHIFT: "date-shifted",
    PSEUDONYM: "pseudonymized",
    "S": "scrubbed",
    "B": "high-bits-zeroed",
}
_SCRUB: Final = "S"  # a known value (or a person-name shape) removed from kept text

_UID_NET: Final = "u"  # replace a UI value unless it is DICOM-defined
_DICOM_ROOT: Final = "1.2.840.10008."
_MEDIA_DIRECTORY: Final = "1.2.840.10008.1.3.10"
_PIXEL_TAGS: Final = (0x7FE00010, 0x7FE00008, 0x7FE00009)
# File meta elements that survive (their values are rewritten): group length, version, SOP class and
# instance, transfer syntax, implementation class and version.
_KEPT_META: Final = frozenset(
    {0x00020000, 0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012, 0x00020013}
)
_SAFE_PRIVATE_VRS: Final = frozenset({"CS", "DS", "FD", "FL", "IS", "SL", "SS", "UL", "US", "SV", "UV"})
# Type 2 attributes of the Patient and General Study modules (PS3.3 C.7.1.1, C.7.2.1): tag -> VR
_TYPE2_EMPTY: Final = {
    0x00100010: "PN",  # Patient's Name
    0x00100030: "DA",  # Patient's Birth Date
    0x00100040: "CS",  # Patient's Sex
    0x00080090: "PN",  # Referring Physician's Name
    0x00080020: "DA",  # Study Date
    0x00080030: "TM",  # Study Time
    0x00080050: "SH",  # Accession Number
    0x00200010: "SH",  # Study ID
}
_VR_CACHE: dict[int, str] = {}


def _date_time_pairs() -> dict[int, int]:
    """DA tag -> the TM tag of the same name ((0008,0020) *Study Date* -> (0008,0030) *Study Time*)."""
    by_keyword = {entry[4]: tag for tag, entry in DicomDictionary.items() if entry[4]}
    pairs = {}
    for tag, entry in DicomDictionary.items():
        vr, keyword = entry[0], entry[4]
        if vr == "DA" and keyword.endswith("Date"):
            partner = by_keyword.get(keyword[:-4] + "Time")
            if partner is not None and DicomDictionary[partner][0] == "TM":
                pairs[tag] = partner
    return pairs


#: Each date attribute and the time attribute that completes it into one instant (PS3.15 E.3.6):
#: they are shifted together so that the date rolls over when the time crosses midnight.
DATE_TIME_PAIRS: Final[Mapping[int, int]] = _date_time_pairs()


class DeidRejected(InputError):
    """A file fedscan will not de-identify, with a reason that names no patient.

    Parameters
    ----------
    reason : str
        A sentence such as ``"burned-in text: modality US commonly carries burned-in annotations"``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class DeidOutcome:
    """What :meth:`Deidentifier.deidentify` did to one data set (no original values).

    Attributes
    ----------
    sop_instance_uid, study_instance_uid, series_instance_uid : str
        The new UIDs.
    patient_id : str
        The pseudonymous (0010,0020) *Patient ID*.
    actions : Mapping[str, Mapping[str, int]]
        Attribute keyword (``private``, ``(gggg,eeee)`` for unnamed tags) -> action name -> count.
    pixels_masked : bool
        Whether burned-in regions were blanked.
    dates_shifted : bool
        Whether this call shifted dates (False when they had been shifted before).
    """

    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    patient_id: str
    actions: Mapping[str, Mapping[str, int]]
    pixels_masked: bool
    dates_shifted: bool


class _Run:
    """The state of one :meth:`Deidentifier.deidentify` call."""

    __slots__ = ("counts", "shift")

    def __init__(self, shift: TemporalShift | None) -> None:
        self.shift = shift
        self.counts: defaultdict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))

    def count(self, label: str, action: str, n: int = 1) -> None:
        self.counts[label][ACTION_NAMES[action]] += n


def _label(tag: int) -> str:
    return keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _dictionary_vr(tag: int) -> str:
    vr = _VR_CACHE.get(tag)
    if vr is None:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = "UN"
        _VR_CACHE[tag] = vr
    return vr


def _vr_of(elem: DataElement | RawDataElement, tag: int) -> str:
    vr = elem.VR
    if vr is None or vr == "UN":
        return _dictionary_vr(tag)
    return str(vr)


def _map_values(value: Any, fn: Callable[[str], str | None]) -> Any:
    """Apply ``fn`` to each value of a (possibly multi-valued) element; ``None`` results become ``""``."""
    if value is None or value == "":
        return value
    if isinstance(value, MultiValue | list | tuple):
        return [fn(str(v)) or "" for v in value]
    return fn(str(value)) or ""


def _map_raw_ascii(ds: Dataset, tag: int, fn: Callable[[str], str | None], pad: bytes) -> bool | None:
    """Apply ``fn`` to each value of a still-raw ASCII element (UI, DA, DT) without decoding it.

    pydicom's decoding and re-validation of every replaced UID costs more than the replacement;
    these VRs are plain ASCII (PS3.5 6.2), so the bytes can be split, mapped and joined directly.
    Returns whether the value changed, or ``None`` if the element is not raw (the caller then goes
    through pydicom).
    """
    raw = ds.get_item(tag, keep_deferred=True)
    if not isinstance(raw, RawDataElement) or not isinstance(raw.value, bytes):
        return None
    text = raw.value.decode("ascii", "replace").rstrip("\x00 ")
    if not text:
        return False
    data = "\\".join(fn(v.strip("\x00 ")) or "" for v in text.split("\\")).encode("ascii", "replace")
    if len(data) % 2:
        data += pad
    if data == raw.value:
        return False
    ds[tag] = raw._replace(value=data, length=len(data))
    return True


def _pixels_cleaned(ds: Dataset) -> bool:
    """Whether (0012,0064) records the Clean Pixel Data Option (113101) and (0028,0301) says NO."""
    if str(ds.get("BurnedInAnnotation", "")).strip().upper() != "NO":
        return False
    try:
        items = ds.get("DeidentificationMethodCodeSequence") or ()
        return any(str(item.get("CodeValue", "")) == CLEAN_PIXEL_DATA.value for item in items)
    except Exception:  # an unreadable sequence: not ours
        return False


def _single_text(ds: Dataset, tag: int) -> str | None:
    """The one value of a text element as a string (raw bytes decoded as ASCII); None if several."""
    raw = ds.get_item(tag, keep_deferred=True)
    if isinstance(raw, RawDataElement):
        if not isinstance(raw.value, bytes):
            return None
        text = raw.value.decode("ascii", "replace").strip("\x00 ")
    else:
        value = raw.value
        if isinstance(value, MultiValue | list | tuple):
            return None
        text = str(value or "").strip()
    return None if "\\" in text else text


def _is_empty(value: Any) -> bool:
    if isinstance(value, MultiValue | list | tuple):
        return all(not v for v in value)
    return not value


@lru_cache(maxsize=64)
def _marking_elements(
    options: DeidOptions, masked: bool, implicit: bool, little: bool
) -> tuple[RawDataElement, ...]:
    """The marking elements, encoded once per options and encoding and reused as raw elements.

    They are the same for every file of a run, and building them as data sets costs more than
    de-identifying the rest of a typical header.
    """
    marks = Dataset()
    marks.PatientIdentityRemoved = "YES"
    marks.DeidentificationMethod = METHOD_DESCRIPTION
    items = []
    for code in options.method_codes(pixels_cleaned=masked):
        item = Dataset()
        item.CodeValue = code.value
        item.CodingSchemeDesignator = code.scheme
        item.CodeMeaning = code.meaning
        items.append(item)
    marks.DeidentificationMethodCodeSequence = Sequence(items)
    marks.LongitudinalTemporalInformationModified = "MODIFIED" if options.retain_dates_modified else "REMOVED"
    elements = []
    for elem in marks:
        fp = DicomBytesIO()
        fp.is_implicit_VR, fp.is_little_endian = implicit, little
        write_data_element(fp, elem)
        # the value follows an 8-byte header (12 for an explicit VR sequence; defined lengths only)
        value = fp.getvalue()[12 if elem.VR == "SQ" and not implicit else 8 :]
        vr = None if implicit else elem.VR
        elements.append(RawDataElement(elem.tag, vr, len(value), value, 0, implicit, little))
    return tuple(elements)


class Deidentifier:
    """De-identify data sets under one site secret and one set of options (PS3.15 Annex E).

    Parameters
    ----------
    secret : bytes
        The site's de-identification secret (keys the UID map, pseudonyms and date shifts).
    options : DeidOptions
        Profile options and policies; the default is fedscan's profile.
    detector : TextDetector, optional
        The text detector of the ``ocr-mask`` policy; default: RapidOCR's (:mod:`client.deid.ocr`),
        loaded once per process on first use.

    Examples
    --------
    >>> deid = Deidentifier(secret, DeidOptions())          # doctest: +SKIP
    >>> outcome = deid.deidentify(ds)                       # doctest: +SKIP
    >>> ds.save_as(path, enforce_file_format=True)          # doctest: +SKIP
    """

    def __init__(
        self, secret: bytes, options: DeidOptions = DeidOptions(), *, detector: TextDetector | None = None
    ) -> None:
        self.options = options
        self.burned_in_policy = options.burned_in_policy
        self._detector = detector
        self._keys = KeyedPseudonyms(secret)
        self._rules = compile_rules(options)
        self._safe_private = frozenset(options.safe_private) if options.retain_safe_private else frozenset()

    def __repr__(self) -> str:
        return f"Deidentifier(<secret>, {self.options!r})"

    # ---- the public step ----------------------------------------------------------------------
    def deidentify(self, ds: Dataset) -> DeidOutcome:
        """De-identify ``ds`` in place (including ``ds.file_meta``) and say what was done.

        Raises
        ------
        DeidRejected
            If the data set must not be de-identified: a DICOMDIR, no SOP Instance UID, no pixel
            data (when required), recognisable visual features, or burned-in text under the
            ``reject`` policy. ``ds`` is unchanged in these cases.
        """
        meta = getattr(ds, "file_meta", None) or FileMetaDataset()
        sop_class = str(ds.get("SOPClassUID") or meta.get("MediaStorageSOPClassUID") or "").strip()
        sop_instance = str(ds.get("SOPInstanceUID") or meta.get("MediaStorageSOPInstanceUID") or "").strip()
        if sop_class == _MEDIA_DIRECTORY:
            raise DeidRejected("DICOMDIR: a media directory, not an image; skipped")
        if not sop_instance or not sop_class:
            raise DeidRejected("invalid: no (0008,0016) SOP Class UID or (0008,0018) SOP Instance UID")
        if self.options.require_pixel_data and not any(t in ds for t in _PIXEL_TAGS):
            raise DeidRejected("no pixel data: (7FE0,0010) Pixel Data is absent, the file is not an image")
        reason = uncleanable_reason(ds, sop_class)
        if reason:
            raise DeidRejected(reason)
        filename = getattr(ds, "filename", None)
        size = os.path.getsize(filename) if isinstance(filename, str) and os.path.isfile(filename) else None
        reason = pixel_size_reason(ds, self.options.pixel_limits, file_size=size)
        if reason:  # before anything decodes the pixels
            raise DeidRejected(reason)
        reason = visual_features_reason(ds)
        if reason:
            raise DeidRejected(reason)
        policy = self.burned_in_policy
        suspect = None
        if any(t in ds for t in _PIXEL_TAGS):
            suspect = burned_in_reason(
                ds, trust_annotation_no=policy != "ocr-mask", modalities=self.options.burned_in_modalities
            )
        if suspect and policy == "reject":
            raise DeidRejected(suspect)
        patient_id = str(ds.get("PatientID") or "")
        already = self._keys.is_own_patient(patient_id.strip())
        cleaned_before = already and _pixels_cleaned(ds)
        if suspect and cleaned_before:
            suspect = None  # this secret's own output, whose pixels were cleaned: idempotence
        transfer_syntax = self._transfer_syntax(ds, meta)

        if "SOPClassUID" not in ds:
            ds.SOPClassUID = sop_class
        if "SOPInstanceUID" not in ds:
            ds.SOPInstanceUID = sop_instance
        shift = None
        if self.options.retain_dates_modified and not already:
            shift = self._keys.temporal_shift(patient_id)
        run = _Run(shift)
        known = collect_known_values(
            ds, _vr_of, temporal=not already, institution=not self.options.retain_institution_identity
        )

        self._walk(ds, run)
        # after the walk: only what the profile kept is scrubbed (and person-name shapes always are)
        known.scrub(ds, _vr_of, lambda tag: run.count(_label(tag), _SCRUB))
        self._complete(ds)
        self._mark(ds, transfer_syntax, masked=suspect is not None or cleaned_before)
        self._rebuild_meta(ds, meta, transfer_syntax, run)
        if suspect is not None:
            self._clean_pixels(ds, policy, run)
        if zero_unused_bits(ds, little_endian=UID(ds.file_meta.TransferSyntaxUID).is_little_endian):
            run.count("PixelData", "B")
        ds.preamble = b"\x00" * 128  # the preamble is free for applications and may hold anything
        return DeidOutcome(
            sop_instance_uid=str(ds.SOPInstanceUID),
            study_instance_uid=str(ds.StudyInstanceUID),
            series_instance_uid=str(ds.SeriesInstanceUID),
            patient_id=str(ds.PatientID),
            actions={label: dict(actions) for label, actions in run.counts.items()},
            pixels_masked="cleaned" in run.counts.get("PixelData", {}),
            dates_shifted=shift is not None,
        )

    def _clean_pixels(self, ds: Dataset, policy: str, run: _Run) -> None:
        """Blank burned-in text by the policy (``mask`` or ``ocr-mask``); mark the pixels as clean."""
        try:
            if policy == "mask":
                mask_pixels(ds, self.options.mask_regions)
                run.count("PixelData", CLEAN)
            else:
                if self._detector is None:
                    from client.deid.ocr import load_detector

                    self._detector = load_detector()
                boxes, remains = ocr_mask_pixels(ds, self._detector)
                if remains:
                    raise DeidRejected(
                        "burned-in text: text is still detected after masking every text box found "
                        "three times"
                    )
                if boxes:
                    run.count("PixelData", CLEAN, boxes)
        except DeidRejected:
            raise
        except FedscanError:
            raise
        except Exception as exc:  # any decoder failure: the file cannot be made safe
            raise DeidRejected(
                f"burned-in text: the pixels could not be decoded for masking ({type(exc).__name__})"
            ) from None
        ds.BurnedInAnnotation = "NO"  # PS3.15 E.3.1: the text is gone (masked, or none was found)

    # ---- the walk ---------------------------------------------------------------------------
    def _walk(self, ds: Dataset, run: _Run) -> None:
        rules = self._rules
        private: list[int] = []
        done = self._shift_pairs(ds, run) if run.shift is not None else ()
        # items() gives the elements as stored (raw ones unconverted), one lookup for the whole walk;
        # each step below replaces or removes only its own element, so the snapshot stays current.
        for tag, elem in list(ds.items()):
            group = tag >> 16
            if group & 1:
                private.append(tag)
                continue
            if tag & 0xFFFF == 0 or group <= 0x0002:  # group lengths, command and stray meta elements
                del ds[tag]
                run.count("GroupLength" if tag & 0xFFFF == 0 else _label(tag), REMOVE)
                continue
            if 0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF:
                del ds[tag]
                run.count("CurveData (50xx)" if group < 0x6000 else "Overlay (60xx)", REMOVE)
                continue
            if tag in done:
                continue
            vr = _vr_of(elem, tag)
            rule = rules.get(tag)
            if rule is not None:
                action, fallback, label = rule.action, rule.fallback, rule.keyword
                if action == KEEP:
                    run.count(label, KEEP)  # kept because an option says so
                    continue
            else:
                action, fallback = self._by_vr(vr), EMPTY
                if action == KEEP:
                    continue
                label = _label(tag)
            try:
                self._apply(ds, tag, vr, action, fallback, label, run)
            except Exception:  # an unparseable value: removing it is the only safe choice
                if tag in ds:
                    del ds[tag]
                run.count(label, REMOVE)
        if private:
            self._private(ds, private, run)

    def _by_vr(self, vr: str) -> str:
        if vr == "SQ":
            return RECURSE
        if vr == "PN":
            return EMPTY
        if vr in ("DA", "DT"):
            return SHIFT if self.options.retain_dates_modified else REMOVE
        if vr == "TM":
            return SHIFT if self.options.retain_dates_modified else REMOVE
        if vr == "UI":
            return _UID_NET
        if vr == "UN":
            return REMOVE
        return KEEP

    def _apply(
        self, ds: Dataset, tag: int, vr: str, action: str, fallback: str, label: str, run: _Run
    ) -> None:
        if action == REMOVE:
            del ds[tag]
        elif action == EMPTY:
            ds[tag] = DataElement(tag, vr, Sequence() if vr == "SQ" else empty_value(vr))
        elif action == DUMMY:
            ds[tag] = DataElement(tag, vr, dummy_value(vr))
        elif action == RECURSE:
            for item in ds[tag].value:
                self._walk(item, run)
            return
        elif action in (REPLACE_UID, _UID_NET):
            mapper = self._keys.uid if action == REPLACE_UID else self._uid_unless_dicom
            changed = _map_raw_ascii(ds, tag, mapper, b"\x00")
            if changed is None:  # already decoded: go through pydicom
                elem = ds[tag]
                new = _map_values(elem.value, mapper)
                changed = new != elem.value
                if changed:
                    elem.value = new
            if not changed:
                return
            action = REPLACE_UID
        elif action == CLEAN:
            elem = ds[tag]
            if vr == "SQ":
                return
            cleaned = _map_values(elem.value, clean_text)
            if _is_empty(cleaned):
                ds[tag] = DataElement(tag, vr, dummy_value(vr) if fallback == DUMMY else empty_value(vr))
            else:
                elem.value = cleaned
        elif action == SHIFT:
            if run.shift is None:
                return
            offset = run.shift
            if vr == "DA":
                shift: Callable[[str], str | None] = lambda v: shift_da(v, offset)  # noqa: E731
            elif vr == "DT":
                shift = lambda v: shift_dt(v, offset)  # noqa: E731
            elif vr == "TM":  # a time without its date: shifted modulo 24 hours
                shift = lambda v: shift_tm(v, offset)  # noqa: E731
            else:
                raise ValueError(f"cannot shift a value of VR {vr}")
            if _map_raw_ascii(ds, tag, shift, b" ") is None:
                elem = ds[tag]
                elem.value = _map_values(elem.value, shift)
        elif action == PSEUDONYM:
            elem = ds[tag]
            elem.value = self._keys.patient(str(elem.value or ""))
        run.count(label, action)

    def _shift_action(self, tag: int, vr: str) -> bool:
        rule = self._rules.get(tag)
        action = rule.action if rule is not None else self._by_vr(vr)
        return action == SHIFT

    def _shift_pairs(self, ds: Dataset, run: _Run) -> frozenset[int]:
        """Shift each date and its time in ``ds`` (this level) as one instant; the tags handled.

        A pair is shifted together only when both are single, readable values and both are to be
        shifted; otherwise each is left to the walk, which shifts it alone (or empties it).
        """
        assert run.shift is not None
        handled: set[int] = set()
        for date_tag, time_tag in DATE_TIME_PAIRS.items():
            if date_tag not in ds or time_tag not in ds:
                continue
            if not (self._shift_action(date_tag, "DA") and self._shift_action(time_tag, "TM")):
                continue
            date, time = _single_text(ds, date_tag), _single_text(ds, time_tag)
            if not date or not time:
                continue
            shifted = shift_date_time(date, time, run.shift)
            if shifted is None:
                continue
            ds[date_tag] = DataElement(date_tag, "DA", shifted[0])
            ds[time_tag] = DataElement(time_tag, "TM", shifted[1])
            for tag in (date_tag, time_tag):
                handled.add(tag)
                label = self._rules[tag].keyword if tag in self._rules else _label(tag)
                run.count(label, SHIFT)
        return frozenset(handled)

    def _uid_unless_dicom(self, uid: str) -> str:
        text = uid.strip(" \x00")
        if text.startswith(_DICOM_ROOT) or UID(text).name != text:
            return text
        return self._keys.uid(text)

    def _private(self, ds: Dataset, tags: list[int], run: _Run) -> None:
        keep: set[int] = set()
        if self._safe_private:
            creators = {tag: str(ds[tag].value).strip() for tag in tags if 0x10 <= tag & 0xFFFF <= 0xFF}
            for tag in tags:
                element = tag & 0xFFFF
                if element < 0x1000:
                    continue
                creator = creators.get((tag & 0xFFFF0000) | (element >> 8), "")
                if (creator, tag >> 16, element & 0xFF) not in self._safe_private:
                    continue
                vr = ds.get_item(tag, keep_deferred=True).VR
                if vr is None or vr == "UN":
                    try:
                        vr = private_dictionary_VR(tag, creator)
                    except KeyError:
                        continue
                if vr in _SAFE_PRIVATE_VRS:
                    keep.add(tag)
                    keep.add((tag & 0xFFFF0000) | (element >> 8))  # its private creator
        removed = 0
        for tag in tags:
            if tag in keep:
                continue
            del ds[tag]
            removed += 1
        if removed:
            run.count("private", REMOVE, removed)
        kept = sum(1 for tag in keep if tag & 0xFFFF >= 0x1000)
        if kept:
            run.count("private", KEEP, kept)

    # ---- after the walk ----------------------------------------------------------------------
    def _complete(self, ds: Dataset) -> None:
        """Add missing Type 2 Patient/General Study attributes and Type 1 study/series UIDs."""
        for tag, vr in _TYPE2_EMPTY.items():
            if tag not in ds:
                ds[tag] = DataElement(tag, vr, "")
        if 0x00100020 not in ds:
            ds.PatientID = self._keys.patient("")
        # A file without study or series UID gets one of its own, derived from its SOP Instance UID.
        sop = str(ds.SOPInstanceUID)
        if not ds.get("StudyInstanceUID"):
            ds.StudyInstanceUID = self._keys.uid("fedscan:study-of:" + sop)
        if not ds.get("SeriesInstanceUID"):
            ds.SeriesInstanceUID = self._keys.uid("fedscan:series-of:" + sop)

    def _mark(self, ds: Dataset, transfer_syntax: str, *, masked: bool) -> None:
        """Set (0012,0062), (0012,0063), (0012,0064) and (0028,0303) (PS3.15 E.1.1, X.2)."""
        uid = UID(transfer_syntax)
        encoding = (uid.is_implicit_VR, uid.is_little_endian) if uid.is_transfer_syntax else (True, True)
        for element in _marking_elements(self.options, masked, *encoding):
            ds[element.tag] = element

    @staticmethod
    def _transfer_syntax(ds: Dataset, meta: Dataset) -> str:
        transfer_syntax = str(meta.get("TransferSyntaxUID") or "").strip()
        if transfer_syntax:
            return transfer_syntax
        pixels = ds.get_item(0x7FE00010, keep_deferred=True) if 0x7FE00010 in ds else None
        if pixels is not None and getattr(pixels, "length", 0) == 0xFFFFFFFF:
            raise DeidRejected(
                "invalid: no (0002,0010) Transfer Syntax UID, and the pixel data is compressed"
            )
        implicit, little = getattr(ds, "original_encoding", (None, None))
        if implicit is False:
            return ExplicitVRLittleEndian if little is not False else ExplicitVRBigEndian
        return ImplicitVRLittleEndian

    def _rebuild_meta(self, ds: Dataset, old: Dataset, transfer_syntax: str, run: _Run) -> None:
        for tag in list(old.keys()):
            if tag not in _KEPT_META:
                run.count(_label(tag), REMOVE)
        meta = FileMetaDataset()
        meta.FileMetaInformationVersion = b"\x00\x01"
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = UID(transfer_syntax)
        meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
        meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
        ds.file_meta = meta
