"""Encoding a de-identified data set as a DICOM file (PS3.10 7.1), with a fast path for untouched elements.

De-identification changes a few dozen elements of a data set; the rest, including (7FE0,0010)
*Pixel Data*, are still the raw bytes pydicom read and never decoded. pydicom's writer spends tens of
microseconds per element on bookkeeping even for those, which makes writing the slowest step. Here
an untouched element whose encoding does not change is written directly: its tag, VR and length
header (PS3.5 7.1.2 and 7.1.3) followed by its original value bytes. Every other element - changed,
a sequence, of undefined length, too long for a 16-bit length field - goes through pydicom's
``write_data_element``, and whenever the encoding changes (deflate, a transfer syntax other than the
one read) the whole data set goes through ``Dataset.save_as``. The output is byte-for-byte what
``Dataset.save_as(..., enforce_file_format=True)`` writes (tested on every test file).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO, Final

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import (
    correct_ambiguous_vr,
    write_data_element,
    write_file_meta_info,
    write_sequence_item,
)
from pydicom.uid import UID
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, PersonName

__all__ = ["Chunk", "FileRange", "encode_chunks", "encode_dataset", "write_chunks"]

_UNDEFINED: Final = 0xFFFFFFFF
_BIG: Final = 1 << 16  # values at least this long are passed through as they are, not copied
_LONG_VRS: Final = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)
# String VRs padded with a space to an even length (PS3.5 6.2); UI is padded with a NUL.
_SPACE_PADDED: Final = frozenset(
    ("AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UR", "UT")
)
_INTEGER_FORMATS: Final = {"US": "H", "SS": "h", "UL": "I", "SL": "i"}


def _tag_order(item: tuple[int, Any]) -> int:
    """Sort key of a ``(tag, element)`` pair: the tag as a plain int (BaseTag compares in Python)."""
    return int(item[0])


@dataclass(frozen=True, slots=True)
class FileRange:
    """Bytes still in the source file: a value pydicom deferred (``dcmread(..., defer_size=...)``)."""

    path: str
    offset: int
    size: int

    def __len__(self) -> int:
        return self.size

    def read(self) -> bytes:
        """The bytes of the range."""
        with open(self.path, "rb") as source:
            source.seek(self.offset)
            data = source.read(self.size)
        if len(data) != self.size:
            raise OSError(f"{self.path} is shorter than when it was read")
        return data


#: What :func:`encode_chunks` returns: byte strings and ranges of the source file, in order.
Chunk = bytes | FileRange


def _copy_range(chunk: FileRange, handle: BinaryIO) -> None:
    """Append a range of the source file to ``handle``, in the kernel when it can."""
    handle.flush()
    target = handle.fileno()
    with open(chunk.path, "rb") as source:
        offset, left = chunk.offset, chunk.size
        try:
            while left > 0:
                done = os.copy_file_range(source.fileno(), target, left, offset)
                if done == 0:
                    raise OSError(f"{chunk.path} is shorter than when it was read")
                offset, left = offset + done, left - done
        except (AttributeError, OSError) as exc:  # no copy_file_range here, or not between these files
            if isinstance(exc, OSError) and "shorter" in str(exc):
                raise
            source.seek(offset)
            while left > 0:
                block = source.read(min(left, 1 << 22))
                if not block:
                    raise OSError(f"{chunk.path} is shorter than when it was read") from None
                handle.write(block)
                left -= len(block)
            handle.flush()


def write_chunks(chunks: list[Chunk], handle: BinaryIO) -> None:
    """Write the output of :func:`encode_chunks` to an open binary file."""
    for chunk in chunks:
        if isinstance(chunk, FileRange):
            _copy_range(chunk, handle)
        else:
            handle.write(chunk)


def _save_as(ds: Dataset) -> bytes:
    buffer = DicomBytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _resolve_vrs(ds: Dataset) -> None:
    """Give every raw element read without a VR its dictionary VR (UN if unknown), recursively.

    Needed when a file declares an explicit VR transfer syntax but was encoded with implicit VR:
    pydicom reads it anyway, and an explicit writer needs each element's VR.
    """
    for tag in list(ds.keys()):
        elem = ds.get_item(tag)
        if isinstance(elem, RawDataElement):
            if elem.VR is None:
                ds[tag]  # converting looks the VR up in the data dictionary
        elif elem.VR == "SQ":
            for item in elem.value:
                _resolve_vrs(item)


_META_UIDS: Final = (0x00020002, 0x00020003, 0x00020010, 0x00020012)
_META_TAGS: Final = frozenset({0x00020000, 0x00020001, 0x00020013, *_META_UIDS})


def _file_meta(meta: Dataset) -> bytes | None:
    """The file meta group (PS3.10 7.1) the engine builds, encoded directly; ``None`` for any other.

    Explicit VR Little Endian, UIDs padded with NUL and the version name with a space, and the group
    length first, exactly as pydicom's ``write_file_meta_info`` writes them.
    """
    if not set(meta.keys()) <= _META_TAGS or not all(tag in meta for tag in _META_UIDS):
        return None
    version = meta.get("FileMetaInformationVersion", b"\x00\x01")
    if not isinstance(version, bytes) or len(version) != 2:
        return None
    body = [struct.pack("<HH2s2xI", 0x0002, 0x0001, b"OB", 2), version]
    for tag in _META_UIDS:
        value = str(meta[tag].value).encode("ascii")
        value += b"\x00" * (len(value) % 2)
        body.append(struct.pack("<HH2sH", 0x0002, tag & 0xFFFF, b"UI", len(value)) + value)
    if 0x00020013 in meta:
        name = str(meta[0x00020013].value).encode("ascii")
        name += b" " * (len(name) % 2)
        body.append(struct.pack("<HH2sH", 0x0002, 0x0013, b"SH", len(name)) + name)
    content = b"".join(body)
    return struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(content)) + content


def encode_dataset(ds: Dataset) -> bytes:
    """The DICOM file (preamble, ``DICM``, file meta, data set) for ``ds`` in its transfer syntax.

    ``ds.file_meta`` must hold a valid (0002,0010) *Transfer Syntax UID*.
    """
    return b"".join(c.read() if isinstance(c, FileRange) else c for c in encode_chunks(ds))


def encode_chunks(ds: Dataset) -> list[Chunk]:
    """:func:`encode_dataset` as a list of chunks to write in order (see :func:`write_chunks`).

    Large untouched values (pixel data) are returned as the very objects pydicom read, or, when
    pydicom deferred reading them, as :class:`FileRange` s of the source file, so that writing never
    copies them through Python.
    """
    transfer_syntax = UID(ds.file_meta.TransferSyntaxUID)
    implicit, little = transfer_syntax.is_implicit_VR, transfer_syntax.is_little_endian
    if not implicit and any(
        isinstance(e, RawDataElement) and e.VR is None
        for e in ds.values()  # as stored: raw elements stay unconverted
    ):
        _resolve_vrs(ds)
        correct_ambiguous_vr(ds, little)  # e.g. 'OB or OW' pixel data -> OB or OW
    if transfer_syntax.is_deflated or ds.original_encoding != (implicit, little):
        return [_save_as(ds)]

    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    fp.write(ds.preamble if ds.preamble is not None else b"\x00" * 128)
    fp.write(b"DICM")
    meta = _file_meta(ds.file_meta)
    if meta is None:
        write_file_meta_info(fp, ds.file_meta, enforce_standard=True)
    else:
        fp.write(meta)
    writer = _Writer(fp, implicit, little, ds.filename if isinstance(ds.filename, str) else None)
    writer.write_dataset(ds, ds.get("SpecificCharacterSet", default_encoding), top=True)
    writer.chunks.append(writer.fp.getvalue())
    return writer.chunks


class _Writer:
    """Writes data elements the way pydicom's ``write_dataset`` does, faster for raw elements.

    Raw (never decoded) elements are written from their bytes; sequences are walked here so that
    the raw elements of their items take the same path; everything else, and any item whose
    encoding differs from the file's, is handed to pydicom.
    """

    def __init__(self, fp: DicomBytesIO, implicit: bool, little: bool, source: str | None) -> None:
        fp.is_little_endian, fp.is_implicit_VR = little, implicit
        self.fp = fp
        self.implicit, self.little = implicit, little
        self.source = source
        self.chunks: list[Chunk] = []
        order = "<" if little else ">"
        self._implicit_header = struct.Struct(order + "HHI")
        self._short_header = struct.Struct(order + "HH2sH")
        self._long_header = struct.Struct(order + "HH2s2xI")
        self._ul = struct.Struct(order + "I")
        self._item = struct.Struct(order + "HHI")

    def _new_buffer(self) -> DicomBytesIO:
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = self.little, self.implicit
        return fp

    def write_dataset(self, ds: Dataset, encodings: str | list[str], *, top: bool = False) -> None:
        for tag, elem in sorted(ds.items(), key=_tag_order):  # elements as stored, none converted
            if tag & 0xFFFF == 0 and tag >> 16 > 6:
                continue  # retired group lengths are not written (PS3.5 7.2)
            if not isinstance(elem, RawDataElement):
                if elem.VR == "SQ":
                    self._write_sequence(elem, encodings)
                    continue
                simple = None if elem.is_buffered else self._simple_value(elem.VR, elem.value)
                header = None if simple is None else self._header(tag, elem.VR, len(simple))
                if header is None or simple is None:
                    write_data_element(self.fp, elem, encodings)
                else:
                    self.fp.write(header)
                    self.fp.write(simple)
                continue
            value: Chunk | None = None
            if elem.length != _UNDEFINED:
                if isinstance(elem.value, bytes):
                    value = elem.value
                elif elem.value is None and elem.length and top and self.source is not None:
                    value = FileRange(self.source, elem.value_tell, elem.length)  # still in the file
            header = None if value is None else self._header(tag, elem.VR, len(value))
            if header is None or value is None:
                write_data_element(self.fp, ds.get_item(tag), encodings)  # reads a deferred value
                continue
            self.fp.write(header)
            if isinstance(value, bytes) and (len(value) < _BIG or not top):
                self.fp.write(value)
            else:  # pass a large value through as it is
                self.chunks.append(self.fp.getvalue())
                self.chunks.append(value)
                self.fp = self._new_buffer()

    def _simple_value(self, vr: str, value: object) -> bytes | None:
        """The encoded value of a decoded element whose encoding needs no character set, else None.

        Covers what de-identification sets and what its checks decode: empty values, single ASCII
        strings (identical in every DICOM character set), UIDs and single integers. Anything else
        (several values, non-ASCII text, person names with components) goes through pydicom.
        """
        if len(vr) != 2:  # an ambiguous VR ('US or SS'): pydicom refuses it (sequences never get here)
            return None
        kind = type(value)
        if value is None or (kind is PersonName and not str(value)):
            return b""
        if kind is str or kind is UID:
            text: str = value  # type: ignore[assignment]
            if not text.isascii():
                return None
            if vr == "UI":
                return (text + "\x00" if len(text) % 2 else text).encode("ascii")
            if vr in _SPACE_PADDED:
                return (text + " " if len(text) % 2 else text).encode("ascii")
            return None
        if kind is int and vr in _INTEGER_FORMATS:
            try:
                return struct.pack(("<" if self.little else ">") + _INTEGER_FORMATS[vr], value)
            except struct.error:  # out of range: pydicom decides what to do
                return None
        return None

    def _header(self, tag: int, vr: str | None, length: int) -> bytes | None:
        group, element = tag >> 16, tag & 0xFFFF
        if self.implicit:
            return self._implicit_header.pack(group, element, length)
        if vr in _LONG_VRS:
            return self._long_header.pack(group, element, vr.encode("ascii"), length)  # type: ignore[union-attr]
        if vr and length <= 0xFFFF:
            return self._short_header.pack(group, element, vr.encode("ascii"), length)
        return None  # no VR, or too long for a 16-bit length: pydicom changes the VR to UN

    def _write_sequence(self, elem: Any, encodings: str | list[str]) -> None:
        outer = self.fp
        self.fp = self._new_buffer()
        converted = convert_encodings(encodings)  # as pydicom's write_data_element does for SQ
        for item in elem.value:
            self._write_item(item, converted)
        body = self.fp.getvalue()
        self.fp = outer
        undefined = elem.is_undefined_length
        tag, length = elem.tag, _UNDEFINED if elem.is_undefined_length else len(body)
        if self.implicit:
            outer.write(self._implicit_header.pack(tag >> 16, tag & 0xFFFF, length))
        else:
            outer.write(self._long_header.pack(tag >> 16, tag & 0xFFFF, b"SQ", length))
        outer.write(body)
        if undefined:
            outer.write(self._item.pack(0xFFFE, 0xE0DD, 0))  # sequence delimitation item

    def _write_item(self, item: Dataset, encodings: list[str]) -> None:
        if item.original_encoding != (self.implicit, self.little) or getattr(
            item, "original_character_set", None
        ) != getattr(item, "_character_set", None):
            write_sequence_item(self.fp, item, encodings)  # pydicom converts what needs converting
            return
        fp = self.fp
        fp.write(self._item.pack(0xFFFE, 0xE000, _UNDEFINED))
        length_at = fp.tell() - 4
        self.write_dataset(item, item.get("SpecificCharacterSet", encodings))
        if getattr(item, "is_undefined_length_sequence_item", False):
            fp.write(self._item.pack(0xFFFE, 0xE00D, 0))  # item delimitation item
        else:
            end = fp.tell()
            fp.seek(length_at)
            fp.write(self._ul.pack(end - length_at - 4))
            fp.seek(end)
