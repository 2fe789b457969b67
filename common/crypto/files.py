"""Sealed files: crash-safe writes, reads that survive an interrupted rotation, and header peeks.

:func:`seal_file` goes through :func:`common.fsio.atomic_writer`: the object is sealed into a hidden
temporary file in the same directory (mode 0600 from creation), fsynced, renamed over the target and
the directory fsynced. A crash at any point leaves the previous file at ``path`` intact; at worst a
``.<name>.*.tmp`` file is left behind, never a partial file under the target name.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

from common.crypto.format import (
    DEFAULT_CHUNK_SIZE,
    HEADER_SIZE,
    MalformedHeader,
    SealedHeader,
    check_chunk_size,
    frame_object_id,
)
from common.crypto.keys import Keyring, SiteKey
from common.crypto.rotation import discard_journal, matching_journal
from common.crypto.stream import as_reader, open_payload, seal_stream
from common.errors import IntegrityError
from common.fsio import atomic_writer

__all__ = ["open_file", "read_header", "seal_file"]


def seal_file(
    key: SiteKey,
    data: bytes | BinaryIO,
    path: Path,
    *,
    object_id: str,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> None:
    """Seal ``data`` (bytes, or a binary stream read to EOF) into ``path``, atomically, mode 0600.

    Memory use is constant for a stream. A rotation journal left at ``path`` by an interrupted
    rotation of the object this replaces is removed.
    """
    frame_object_id(object_id)
    check_chunk_size(chunk_size)
    path = Path(path)
    src = as_reader(data) if isinstance(data, bytes | bytearray | memoryview) else data
    with atomic_writer(path, mode=0o600) as handle:
        seal_stream(key, src, handle, object_id=object_id, chunk_size=chunk_size)
    discard_journal(path)


def open_file(keys: SiteKey | Keyring, path: Path, *, object_id: str) -> bytes:
    """Verify and decrypt the sealed file ``path`` into memory; the plaintext never touches disk.

    If the header does not open and a rotation journal for this object exists (a rotation was
    interrupted), the journal's copy of the header is tried instead.

    Raises
    ------
    IntegrityError
        For every authentication failure, with one message.
    OSError
        If ``path`` cannot be read.
    """
    frame_object_id(object_id)
    path = Path(path)
    with open(path, "rb") as src:
        header = src.read(HEADER_SIZE)
        try:
            return _open_rest(keys, header, src, object_id)
        except IntegrityError:
            saved = matching_journal(path, header)
            if saved is None:
                raise
        src.seek(HEADER_SIZE)
        return _open_rest(keys, saved, src, object_id)


def _open_rest(keys: SiteKey | Keyring, header: bytes, src: BinaryIO, object_id: str) -> bytes:
    out = io.BytesIO()
    open_payload(keys, header, src, out, object_id=object_id)
    return out.getvalue()


def read_header(path: Path) -> SealedHeader:
    """Parse the header of the sealed file ``path`` without a key, e.g. to learn which key it needs.

    Nothing is authenticated yet (see :class:`SealedHeader`): use the result to route, and let
    :func:`open_file` decide. After an interrupted rotation left a torn header, the journal's copy is
    returned.

    Raises
    ------
    IntegrityError
        If neither the file nor a journal holds a well-formed header.
    """
    path = Path(path)
    with open(path, "rb") as src:
        raw = src.read(HEADER_SIZE)
    candidates = [raw]
    saved = matching_journal(path, raw)
    if saved is not None:
        candidates.append(saved)
    for candidate in candidates:
        try:
            return SealedHeader.parse(candidate)
        except MalformedHeader:
            continue
    raise IntegrityError(f"sealed object file {str(path)!r} has no valid header")
