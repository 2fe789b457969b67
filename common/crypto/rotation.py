"""Key rotation: re-wrap a sealed file's data key under a new site key, payload untouched.

A rotation rewrites only the 88-byte header (the payload is sealed under the per-object data key,
which does not change), so its cost is a few small writes and fsyncs per object, whatever the size.

Crash safety
------------
The header is rewritten in place, and the design does not assume a sector write is atomic (a power
cut during a write may leave a torn sector on some devices). A small *rollback journal* next to the
object, ``.<name>.rewrap``, holds a copy of the last header known to open. Steps:

1. Verify the current header under the old key(s) (falling back to a journal left by an earlier
   crash: that is recovery).
2. Write the verified header to the journal atomically (temporary file, fsync, rename, directory
   fsync).
3. ``pwrite`` the new header over the old one at offset 0, then ``fsync`` the object.
4. Remove the journal and fsync the directory.

A crash before step 3 leaves the object untouched. A crash during or after step 3 leaves a durable
journal that opens under the old key, and a main header that is old, new or torn; once step 3's fsync
returns, the main header opens under the new key. So at every instant the object opens under the old
key (through the journal if need be) or the new one, never under neither. Both
:func:`common.crypto.files.open_file` and :func:`rewrap_file` fall back to the journal, and running
the rotation again completes it.

A journal is only used if its header prefix (magic, version, chunk size, nonce prefix) equals the
object's: rotation never changes those bytes, and the random nonce prefix differs between objects, so
a journal left behind by an object that was later replaced at the same path is ignored. The key slot
it holds is bound to the object id, so a journal cannot be moved to another object either.

Until step 4 completes, the old key's wrap also exists in the journal: a rotation prompted by a leaked
key is complete only when no ``.*.rewrap`` file remains (and, on SSDs, overwritten sectors may survive
in the flash translation layer, which no file-level design can prevent).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from common.crypto.envelope import unwrap_data_key, wrap_data_key
from common.crypto.format import (
    HEADER_SIZE,
    PREFIX_SIZE,
    MalformedHeader,
    SealedHeader,
    frame_object_id,
)
from common.crypto.hazmat import primitives as _primitives
from common.crypto.hazmat.primitives import AuthenticationFailed
from common.crypto.keys import Keyring, SiteKey
from common.crypto.stream import integrity_failure
from common.errors import ConfigError
from common.fsio import atomic_writer, fsync_dir

__all__ = ["discard_journal", "journal_path", "matching_journal", "rewrap_file"]

_JOURNAL_SUFFIX = ".rewrap"


def journal_path(path: Path) -> Path:
    """Where the rotation journal of the sealed file ``path`` lives (a hidden sibling)."""
    path = Path(path)
    return path.with_name(f".{path.name}{_JOURNAL_SUFFIX}")


def matching_journal(path: Path, header_bytes: bytes) -> bytes | None:
    """Return the journal's header for ``path`` if one exists and belongs to this object, else ``None``.

    "Belongs" means the journal's prefix equals the object's (``header_bytes[:20]``), see the module
    docstring; the journal is not authenticated here, only by whoever unwraps it.
    """
    try:
        saved = journal_path(path).read_bytes()
    except FileNotFoundError:
        return None
    if len(saved) != HEADER_SIZE or saved[:PREFIX_SIZE] != bytes(header_bytes[:PREFIX_SIZE]):
        return None
    return saved


def _open_current_header(
    fd: int, path: Path, keys: SiteKey | Keyring, object_id: str
) -> tuple[SealedHeader, bytes]:
    """Return the header that opens under ``keys`` and its data key: the object's, else the journal's."""
    main = os.pread(fd, HEADER_SIZE, 0)
    candidates = [main]
    saved = matching_journal(path, main)
    if saved is not None:
        candidates.append(saved)
    for raw in candidates:
        try:
            header = SealedHeader.parse(raw)
            return header, unwrap_data_key(header, keys, object_id=object_id)
        except (MalformedHeader, AuthenticationFailed):
            continue
    raise integrity_failure(object_id)


def rewrap_file(path: Path, old: SiteKey | Keyring, new: SiteKey, *, object_id: str) -> None:
    """Re-wrap the data key of the sealed file ``path`` under ``new``, without touching the payload.

    Parameters
    ----------
    path
        A file written by :func:`common.crypto.files.seal_file`.
    old
        The key (or keyring) that opens the current header.
    new
        The key the object will need from now on; ``old`` is no longer needed afterwards.
    object_id
        The object's id (the key slot is bound to it).

    Raises
    ------
    IntegrityError
        If no header of the object (nor its journal) opens under ``old``. Only the header is checked:
        the payload is not read, which is what keeps rotation cost independent of object size.
    OSError
        If ``path`` cannot be opened for writing, or a write fails (the object stays openable).
    """
    path = Path(path)
    frame_object_id(object_id)
    if not isinstance(new, SiteKey):
        raise ConfigError("The new key of a rotation must be a SiteKey.")
    fd = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    try:
        current, data_key = _open_current_header(fd, path, old, object_id)
        rewrapped = wrap_data_key(
            current, new, data_key, object_id=object_id, wrap_nonce=_primitives.random_bytes(12)
        ).to_bytes()
        with atomic_writer(journal_path(path), mode=0o600) as handle:
            handle.write(current.to_bytes())
        if os.pwrite(fd, rewrapped, 0) != len(rewrapped):
            raise OSError(f"short write while re-wrapping {path}")
        os.fsync(fd)
    finally:
        os.close(fd)
    discard_journal(path)


def discard_journal(path: Path) -> None:
    """Remove the rotation journal of ``path`` if there is one, durably."""
    journal = journal_path(path)
    with contextlib.suppress(FileNotFoundError):
        journal.unlink()
        fsync_dir(journal.parent)
