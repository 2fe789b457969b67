"""One file of a PACS export to training records: read, check, label, de-identify, pixels.

:class:`RecordMaker` holds what every file needs (the de-identifier, the pixel settings, the label table,
the index of files already stored) and turns one file into a :class:`FileOutcome`. It runs in the worker
processes of an ingest (:mod:`client.worker_pool`) and returns records as NumPy arrays through the pool's
pipe: nothing is written to disk here, and nothing but preprocessed pixels, the label, keyed pseudonyms
and non-identifying technical metadata leaves this module.

The steps, cheapest first, so that a file that will not become a record costs as little as possible:

1. **header** - :func:`client.deid.folder.read_dataset` parses the header and leaves values over 64 KiB
   (the pixel data) in the file: a rejected, duplicate, already stored or unlabelled file is never read
   past its header. Not DICOM, truncated, corrupt, unreadable: rejected with the reason.
2. **kind** - by name (``DICOMDIR``) and (0008,0016) *SOP Class UID* (:mod:`client.discovery`); no
   (7FE0,0010) *Pixel Data*: rejected. Segmentations and RT structure sets are not trained on but kept:
   de-identified and returned as DICOM bytes for the store to seal (:mod:`client.label_objects`).
3. **label** - joined on the *original* path, (0008,0018) *SOP Instance UID*, (0020,000E) *Series
   Instance UID* or (0020,000D) *Study Instance UID* (:mod:`client.labels`), before step 5 replaces them.
4. **index** - the file's keyed SOP Instance UID (the one de-identification will write) is looked up in
   the store's index: a file stored by an earlier run stops here. Then an unlabelled file (unless
   unlabelled files are kept), then a second copy of an instance this worker has already taken.
5. **de-identify** - :class:`client.deid.Deidentifier` in memory (PS3.15 Annex E, burned-in policy).
   The pixel data is read from the file now, once (timed as part of reading).
6. **pixels** - :func:`client.pixels.prepare_frames`: one model input per kept frame.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from pydicom.dataset import Dataset

from client.deid import Deidentifier, DeidOptions, DeidRejected
from client.deid.encode import encode_dataset
from client.deid.folder import read_dataset
from client.deid.pseudonyms import KeyedPseudonyms
from client.discovery import DICOMDIR_SOP_CLASS, non_image_reason
from client.label_objects import LABEL_OBJECT_CLASSES
from client.labels import LabelTable
from client.pixels import PixelSettings, prepare_frames
from client.store import Record
from common.errors import FedscanError

__all__ = ["STAGES", "FileOutcome", "RecordMaker"]

#: The stages whose time a :class:`FileOutcome` reports, in pipeline order.
STAGES: Final = ("read", "deidentify", "pixels")

_PIXEL_TAGS: Final = (0x7FE00010, 0x7FE00008, 0x7FE00009)
_UNPRINTABLE: Final = re.compile(r"[^\x20-\x7e]")


@dataclass(frozen=True)
class FileOutcome:
    """What became of one input file (paths relative to the input folder; no original identifier).

    Attributes
    ----------
    path : str
        The file, relative to the input folder.
    status : str
        ``"added"`` (``records`` holds its records), ``"label-object"`` (``label_object`` holds the
        de-identified SEG or RTSTRUCT file to keep), ``"rejected"`` (``reason`` says why),
        ``"unlabelled"`` (no label and unlabelled files are not kept), ``"stored"`` (an earlier run
        stored it) or ``"duplicate"`` (another file is the same instance).
    reason : str or None
        ``category: explanation`` for rejections and duplicates.
    records : tuple of Record
        The file's records, one per kept frame.
    sop : str
        The keyed (pseudonymous) SOP Instance UID, "" if the file has none.
    label_key : str or None
        The labels-CSV key that matched (memory only: the parent process tallies used rows).
    conflict : bool
        The file's key has conflicting labels in the CSV.
    read, deidentified : bool
        Whether the header parsed as DICOM, and whether the file passed de-identification.
    claimed : bool
        The file went on to de-identification as the first copy of its instance seen by its worker
        (the parent process settles copies claimed by two workers).
    modality : str
        (0008,0060) *Modality* ("" if unknown).
    bytes_read : int
        Size of the file.
    seconds : mapping of str to float
        Time spent per stage of :data:`STAGES`.
    label_object : bytes or None
        The de-identified DICOM file of a kept label object.
    """

    path: str
    status: str
    reason: str | None = None
    records: tuple[Record, ...] = ()
    sop: str = ""
    label_key: str | None = None
    conflict: bool = False
    read: bool = False
    deidentified: bool = False
    claimed: bool = False
    modality: str = ""
    bytes_read: int = 0
    seconds: Mapping[str, float] = field(default_factory=dict)
    label_object: bytes | None = None


def _text(value: Any, limit: int = 64) -> str:
    """A header value as short printable ASCII (technical metadata only)."""
    if value is None:
        return ""
    return _UNPRINTABLE.sub("?", str(value).strip())[:limit]


def _pixel_spacing(ds: Dataset) -> list[float] | None:
    """(0028,0030) *Pixel Spacing*, else (0018,1164) *Imager Pixel Spacing*, else the shared Pixel
    Measures functional group of an enhanced object (PS3.3 C.7.6.16.2.1), in mm as [row, column]."""
    value = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    if not value:
        shared = ds.get("SharedFunctionalGroupsSequence")
        measures = shared[0].get("PixelMeasuresSequence") if shared else None
        value = measures[0].get("PixelSpacing") if measures else None
    try:
        spacing = [float(v) for v in value] if value else []
    except (TypeError, ValueError):
        return None
    return spacing if len(spacing) == 2 else None


def technical_metadata(ds: Dataset, transfer_syntax: str) -> dict[str, Any]:
    """The non-identifying technical metadata of a de-identified data set, for data-quality summaries.

    (0008,0060) *Modality*, (0008,0070) *Manufacturer*, (0028,0030) *Pixel Spacing*, (0028,0010)
    *Rows*, (0028,0011) *Columns*, (0028,0008) *Number of Frames*, (0028,0004) *Photometric
    Interpretation* and the original (0002,0010) *Transfer Syntax UID*. Read after de-identification,
    so nothing the profile removes can reach the store.
    """

    def number(keyword: str, default: int) -> int:
        try:
            return int(ds.get(keyword, default) or default)
        except (TypeError, ValueError):
            return default

    return {
        "modality": _text(ds.get("Modality")),
        "manufacturer": _text(ds.get("Manufacturer")),
        "pixel_spacing": _pixel_spacing(ds),
        "rows": number("Rows", 0),
        "columns": number("Columns", 0),
        "frames": number("NumberOfFrames", 1),
        "photometric": _text(ds.get("PhotometricInterpretation")),
        "transfer_syntax": _text(transfer_syntax),
    }


class RecordMaker:
    """Turns files of one input folder into records; one per process, built before the work starts.

    Parameters
    ----------
    input_dir : Path
        The folder the relative paths are relative to.
    secret : bytes
        The site's de-identification secret.
    options : DeidOptions
        The site's de-identification options.
    pixels : PixelSettings
        The site's pixel settings.
    labels : LabelTable or None
        The labels CSV, or None (every file is then unlabelled).
    stored : frozenset of str
        Keyed SOP Instance UIDs already in the store.
    keep_unlabelled : bool
        Make records (label -1) of files without a label.
    kept_objects : frozenset of str
        Keyed SOP Instance UIDs of the label objects already kept in the store.
    """

    def __init__(
        self,
        input_dir: Path,
        secret: bytes,
        options: DeidOptions,
        pixels: PixelSettings,
        labels: LabelTable | None,
        stored: frozenset[str],
        *,
        keep_unlabelled: bool = False,
        kept_objects: frozenset[str] = frozenset(),
    ) -> None:
        self.input_dir = Path(input_dir)
        self.kept_objects = kept_objects
        self.pixels = pixels
        self.labels = labels
        self.stored = stored
        self.keep_unlabelled = keep_unlabelled
        self._deidentifier = Deidentifier(secret, options)
        self._keys = KeyedPseudonyms(secret)
        self._seen: dict[str, str] = {}  # keyed SOP Instance UID -> path, in this process

    def __call__(self, relative: str) -> FileOutcome:
        """Process one file; never raises for a bad file (the outcome says what went wrong)."""
        seconds = dict.fromkeys(STAGES, 0.0)
        try:
            return self._process(relative, seconds)
        except FedscanError as error:
            return FileOutcome(relative, "rejected", str(error), seconds=seconds)
        except Exception as error:  # a library bug on an odd file must not stop the whole ingest
            return FileOutcome(
                relative,
                "rejected",
                f"failed: unexpected {type(error).__name__} while processing the file",
                seconds=seconds,
            )

    def _process(self, relative: str, seconds: dict[str, float]) -> FileOutcome:
        path = self.input_dir / relative
        t0 = time.perf_counter()
        if path.name.upper() == "DICOMDIR":
            return FileOutcome(relative, "rejected", "DICOMDIR: a media directory index, not an image")
        try:
            size = os.stat(path).st_size
            ds = read_dataset(path)  # the header; pixel data stays in the file for now
        except DeidRejected as rejected:
            seconds["read"] = time.perf_counter() - t0
            return FileOutcome(relative, "rejected", rejected.reason, seconds=seconds)
        except OSError as error:
            return FileOutcome(relative, "rejected", f"unreadable: {error.strerror or 'I/O error'}")
        meta = getattr(ds, "file_meta", None) or Dataset()
        sop_class = str(ds.get("SOPClassUID") or meta.get("MediaStorageSOPClassUID") or "")
        modality = _text(ds.get("Modality"))
        base = {"read": True, "modality": modality, "bytes_read": size, "seconds": seconds}

        def finish(status: str, reason: str | None = None, **extra: Any) -> FileOutcome:
            return FileOutcome(relative, status, reason, **{**base, **extra})

        if sop_class.strip() == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
            seconds["read"] = time.perf_counter() - t0
            return finish("rejected", "DICOMDIR: a media directory index, not an image")
        if sop_class.strip() in LABEL_OBJECT_CLASSES:
            return self._label_object(ds, relative, finish, seconds, t0)
        reason = non_image_reason(sop_class)
        if reason is None and not any(tag in ds for tag in _PIXEL_TAGS):
            reason = "no pixel data: (7FE0,0010) Pixel Data is absent, the file is not an image"
        if reason is not None:
            seconds["read"] = time.perf_counter() - t0
            return finish("rejected", reason)

        original_sop = str(ds.get("SOPInstanceUID") or meta.get("MediaStorageSOPInstanceUID") or "").strip()
        label, label_key, conflict = None, None, False
        if self.labels is not None:
            found = self.labels.match(
                path=relative,
                sop=original_sop,
                series=str(ds.get("SeriesInstanceUID") or ""),
                study=str(ds.get("StudyInstanceUID") or ""),
            )
            label, label_key, conflict = found.label, found.key, found.conflict
        base.update(label_key=label_key, conflict=conflict)

        sop = self._keys.uid(original_sop) if original_sop else ""
        base["sop"] = sop
        if sop and sop in self.stored:
            seconds["read"] = time.perf_counter() - t0
            return finish("stored")
        if label is None and not self.keep_unlabelled:  # before the duplicate check: the same
            seconds["read"] = time.perf_counter() - t0  # answer whichever worker sees the file
            return finish("unlabelled")
        if sop and sop in self._seen:
            seconds["read"] = time.perf_counter() - t0
            return finish(
                "duplicate",
                f"duplicate: the same (0008,0018) SOP Instance UID as {self._seen[sop]}, counted once",
            )

        transfer_syntax = str(meta.get("TransferSyntaxUID") or "")
        for tag in _PIXEL_TAGS:  # read the deferred pixel data now: one read, timed as reading
            if tag in ds:
                ds[tag]
        t1 = time.perf_counter()
        seconds["read"] = t1 - t0
        if sop:
            self._seen[sop] = relative
        base["claimed"] = True
        try:
            outcome = self._deidentifier.deidentify(ds)
        except FedscanError as error:  # DeidRejected: burned-in text, visual features, invalid
            return finish("rejected", str(error))
        finally:
            seconds["deidentify"] = time.perf_counter() - t1
        base["deidentified"] = True
        t2 = time.perf_counter()
        try:
            frames = prepare_frames(ds, self.pixels)
        except FedscanError as error:  # the pixels do not decode or convert
            return finish("rejected", str(error))
        finally:
            seconds["pixels"] = time.perf_counter() - t2
        info = technical_metadata(ds, transfer_syntax)
        value = -1 if label is None else int(label)
        records = tuple(
            Record(
                pixels=frame,
                label=value,
                patient=outcome.patient_id,
                study=outcome.study_instance_uid,
                meta=info,
                sop=outcome.sop_instance_uid,
                frame=index,
            )
            for index, frame in enumerate(frames)
        )
        return finish("added", records=records, sop=outcome.sop_instance_uid)

    def _label_object(
        self, ds: Dataset, relative: str, finish: Any, seconds: dict[str, float], t0: float
    ) -> FileOutcome:
        """De-identify a SEG or RTSTRUCT to keep (sealed by the parent); no records, no label needed."""
        meta = getattr(ds, "file_meta", None) or Dataset()
        original = str(ds.get("SOPInstanceUID") or meta.get("MediaStorageSOPInstanceUID") or "").strip()
        sop = self._keys.uid(original) if original else ""
        if sop and sop in self.kept_objects:
            seconds["read"] = time.perf_counter() - t0
            return finish("stored", sop=sop)
        for tag in _PIXEL_TAGS:  # read a deferred value (a SEG's frames) now
            if tag in ds:
                ds[tag]
        t1 = time.perf_counter()
        seconds["read"] = t1 - t0
        try:
            outcome = self._deidentifier.deidentify(ds)
            data = encode_dataset(ds)
        except FedscanError as error:
            return finish("rejected", str(error))
        finally:
            seconds["deidentify"] = time.perf_counter() - t1
        return finish(
            "label-object", sop=outcome.sop_instance_uid, deidentified=True, claimed=True, label_object=data
        )
