"""Crash-safe file writes: a reader sees the old file or the new one, never a half-written one.

The pattern is the classic one (POSIX rename is atomic within a file system): write to a temporary
file in the *same directory*, flush and fsync it, rename it over the target, then fsync the directory
so the rename itself survives a power cut.

Bulk writers of re-creatable files (de-identified copies) may skip the per-file fsyncs
(``durable=False``: still atomic for every reader, since rename is) and make the whole batch durable
with one :func:`sync_filesystem` before they report success.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "atomic_writer",
    "fsync_dir",
    "start_writeback",
    "sync_filesystem",
    "write_atomic",
    "write_private_atomic",
]


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_SYNC_FILE_RANGE_WRITE = 2  # Linux <fcntl.h>: start writeback of the range's dirty pages, do not wait


_LIBC = ctypes.CDLL(None, use_errno=True)  # this process's C library: syncfs, sync_file_range


def _libc_sync_file_range() -> Callable[..., int] | None:
    function = getattr(_LIBC, "sync_file_range", None)
    if function is not None:
        function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
        function.restype = ctypes.c_int
    return function


_sync_file_range = _libc_sync_file_range()


def start_writeback(fd: int) -> bool:
    """Ask the kernel to start writing ``fd``'s dirty pages now, without waiting for them.

    A later :func:`sync_filesystem` then finds most of a batch already on disk instead of writing it
    all at the end, and the disk works while the writer goes on computing. Advisory: returns whether
    the kernel took the request (Linux ``sync_file_range``); a refusal (not Linux, a pipe) changes
    nothing but the timing.
    """
    if _sync_file_range is None:
        return False
    return _sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE) == 0


def sync_filesystem(path: Path) -> None:
    """Flush every pending write of the file system holding ``path`` (Linux ``syncfs``, else ``sync``)."""
    syncfs = getattr(_LIBC, "syncfs", None)
    if syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if syncfs(fd) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"syncfs failed: {os.strerror(error)}", str(path))
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: Path, *, mode: int = 0o600, durable: bool = True) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` atomically when the block exits without error.

    The temporary file is created with ``mode`` from the start (never world-readable, even briefly)
    and removed if the block raises, so an interrupted write leaves the previous content intact.
    ``durable=False`` skips the fsyncs (and starts the file's writeback); the caller then owes a
    :func:`sync_filesystem`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        if os.fstat(fd).st_mode & 0o7777 != mode:  # mkstemp made it 0600 (less the umask's bits)
            os.fchmod(fd, mode)  # a second inode update per file, measurable in bulk writes
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
            else:
                start_writeback(handle.fileno())
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Atomically replace ``path`` with ``data`` (for non-secret files such as reports)."""
    with atomic_writer(path, mode=mode) as handle:
        handle.write(data)


def write_private_atomic(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``, readable by the owner only (0600)."""
    with atomic_writer(path, mode=0o600) as handle:
        handle.write(data)
