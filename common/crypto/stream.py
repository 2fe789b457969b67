"""Streaming seal and open: the chunked AES-256-GCM payload of a sealed object.

Each object gets a fresh random 256-bit data key and nonce prefix; the data key is wrapped under the
site key (:mod:`common.crypto.envelope`) into the header (:mod:`common.crypto.format`). The payload is
cut into fixed-size chunks, each sealed with nonce ``prefix || index`` and associated data binding the
object id, the header prefix, the index and a final-chunk flag. That is the STREAM construction of
Hoang, Reyhanitabar, Rogaway and Vizár (2015): reordering, dropping, duplicating or swapping chunks,
truncating anywhere (a chunk boundary included, since the new last chunk lacks the final flag),
appending, or editing the header all fail authentication. An empty object still has one, empty, final
chunk, so cutting an object back to its header is detected too.

Memory is constant: two input and two output chunk buffers, reused (an input already in memory is
sliced, not copied). When chunks are large and the destination is an OS file, the write of chunk ``i``
runs on a helper thread while chunk ``i + 1`` is sealed (the cipher and the ``write`` system call both
release the GIL), so sealing to disk is bounded by the disk rather than by the cipher.

:func:`open_stream` writes each chunk as soon as it verifies, so after an ``IntegrityError`` the
destination may hold a verified prefix of the plaintext: discard it. :func:`open_bytes` and
:func:`common.crypto.files.open_file` return only fully verified plaintext.

Randomness is drawn only in :func:`seal_stream`; :func:`_seal_stream_with` is the deterministic seam
the known-answer vectors in ``tests/vectors/sealed_v1.json`` are generated and checked with.
"""

from __future__ import annotations

import io
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO, cast

from common.crypto.envelope import unwrap_data_key, wrap_data_key
from common.crypto.format import (
    DATA_KEY_SIZE,
    DEFAULT_CHUNK_SIZE,
    HEADER_SIZE,
    MAX_CHUNKS,
    NONCE_PREFIX_SIZE,
    VERSION,
    MalformedHeader,
    SealedHeader,
    check_chunk_size,
    chunk_aad,
    chunk_aad_base,
    chunk_nonce,
    frame_object_id,
)
from common.crypto.hazmat import primitives as _primitives
from common.crypto.hazmat.primitives import TAG_SIZE, AesGcm, AuthenticationFailed
from common.crypto.keys import Keyring, SiteKey
from common.errors import ConfigError, IntegrityError

__all__ = [
    "MemoryReader",
    "as_reader",
    "integrity_failure",
    "open_bytes",
    "open_payload",
    "open_stream",
    "seal_bytes",
    "seal_stream",
]

#: Chunks at least this large are written to an OS file on a helper thread, overlapping the next
#: chunk's sealing; below it the thread hand-off would cost more than it hides.
_OVERLAP_MIN_CHUNK = 1 << 16


def _should_overlap(dst: BinaryIO, chunk_size: int) -> bool:
    """Overlap writes only where they leave the interpreter: an OS file (the write system call
    releases the GIL). An in-memory sink copies under the GIL, so a thread would only add hand-offs.
    """
    if chunk_size < _OVERLAP_MIN_CHUNK:
        return False
    try:
        dst.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True


def integrity_failure(object_id: str) -> IntegrityError:
    """The one error every authentication failure becomes, whatever its cause (no oracle)."""
    return IntegrityError(f"sealed object {object_id!r} failed authentication")


class MemoryReader(io.RawIOBase):
    """A read-only stream over a buffer that never copies it (``io.BytesIO`` copies a memoryview).

    Besides ``readinto``, :meth:`take` hands out slices of the buffer itself, so sealing and opening
    in memory read their input without a copy.
    """

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        super().__init__()
        self._view = memoryview(data).cast("B")
        self._pos = 0

    def readable(self) -> bool:
        return True

    def take(self, size: int) -> memoryview:
        """Return (without copying) the next ``size`` bytes, fewer at the end, and advance."""
        piece = self._view[self._pos : self._pos + size]
        self._pos += len(piece)
        return piece

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        piece = self.take(len(buffer))
        buffer[: len(piece)] = piece
        return len(piece)


def as_reader(data: bytes | bytearray | memoryview) -> BinaryIO:
    """Wrap an in-memory buffer as a binary stream, without copying it."""
    return cast(BinaryIO, MemoryReader(data))


def _read_full(src: BinaryIO, buffer: memoryview) -> int:
    """Fill ``buffer`` from ``src``, looping over short reads; return the bytes read (< len at EOF)."""
    readinto = getattr(src, "readinto", None)
    got = 0
    while got < len(buffer):
        if readinto is not None:
            size = readinto(buffer[got:])
        else:
            data = src.read(len(buffer) - got)
            size = None if data is None else len(data)
            if size:
                buffer[got : got + size] = data
        if size is None:
            raise ConfigError("Sealing and opening need a blocking stream; this one returned no data yet.")
        if size == 0:
            break
        got += size
    return got


def _write_all(dst: BinaryIO, data: memoryview) -> None:
    """Write all of ``data``, looping over short writes (raw streams may write less than asked)."""
    while len(data):
        written = dst.write(data)
        if written is None:
            raise ConfigError("Sealing and opening need a blocking stream; this one accepted no data.")
        data = data[written:]


class _BlockReader:
    """Reads a stream in blocks of ``block_size`` bytes, alternating between two buffers.

    A block returned by :meth:`next` stays valid until :meth:`next` has been called twice more, which
    is what a loop holding the current block and one block of look-ahead needs. From a
    :class:`MemoryReader` the blocks are slices of the caller's buffer: no copy at all.
    """

    def __init__(self, src: BinaryIO, block_size: int) -> None:
        self._src = src
        self._block_size = block_size
        self._memory = src if isinstance(src, MemoryReader) else None
        self._buffers: list[bytearray] = []
        if self._memory is None:
            self._buffers = [bytearray(block_size), bytearray(block_size)]
        self._turn = 0

    def next(self) -> memoryview:
        """The next block: exactly ``block_size`` bytes, or fewer (possibly none) at the end."""
        if self._memory is not None:
            return self._memory.take(self._block_size)
        block = memoryview(self._buffers[self._turn])
        self._turn ^= 1
        return block[: _read_full(self._src, block)]


class _ChunkWriter:
    """Writes chunks in order, optionally overlapping each write with the caller's next chunk.

    The caller alternates between two buffers: a buffer passed to :meth:`write` is not touched again
    until the following :meth:`write` returns, which first waits for the previous write to finish.
    The helper thread is started only once a second chunk exists, so one-chunk objects never pay
    for it.
    """

    def __init__(self, dst: BinaryIO, *, overlap: bool) -> None:
        self._dst = dst
        self._overlap = overlap
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None

    def write(self, data: memoryview, *, last: bool) -> None:
        self.wait()
        if not self._overlap or (last and self._pool is None):
            _write_all(self._dst, data)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedscan-chunk-writer")
        self._pending = self._pool.submit(_write_all, self._dst, data)

    def wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None


def _seal_stream_with(
    key: SiteKey,
    src: BinaryIO,
    dst: BinaryIO,
    *,
    object_id: str,
    chunk_size: int,
    data_key: bytes,
    nonce_prefix: bytes,
    wrap_nonce: bytes,
) -> int:
    """Seal with caller-chosen data key and nonces: the deterministic seam for known-answer tests.

    Never call this with fixed values outside tests: reusing a (data key, nonce prefix) pair for two
    different plaintexts breaks GCM completely.
    """
    check_chunk_size(chunk_size)
    framed = frame_object_id(object_id)
    if len(data_key) != DATA_KEY_SIZE or len(nonce_prefix) != NONCE_PREFIX_SIZE or len(wrap_nonce) != 12:
        raise ConfigError("The data key, nonce prefix and wrap nonce must be 32, 8 and 12 bytes.")
    blank = SealedHeader(VERSION, chunk_size, nonce_prefix, key.key_id, b"", b"")
    header = wrap_data_key(blank, key, data_key, object_id=object_id, wrap_nonce=wrap_nonce)
    header_bytes = header.to_bytes()
    _write_all(dst, memoryview(header_bytes))
    written = len(header_bytes)

    cipher = AesGcm(data_key)
    base = chunk_aad_base(header.prefix, framed)
    blocks = _BlockReader(src, chunk_size)
    sealed = [bytearray(chunk_size + TAG_SIZE), bytearray(chunk_size + TAG_SIZE)]
    writer = _ChunkWriter(dst, overlap=_should_overlap(dst, chunk_size))
    try:
        block = blocks.next()
        index = 0
        while True:
            if index >= MAX_CHUNKS:
                raise ConfigError(f"The object is too large for {MAX_CHUNKS} chunks of {chunk_size} bytes.")
            # A full chunk is final only if nothing follows it: read ahead one chunk to know.
            following = blocks.next() if len(block) == chunk_size else memoryview(b"")
            final = not following
            out = memoryview(sealed[index & 1])[: len(block) + TAG_SIZE]
            cipher.seal_into(chunk_nonce(nonce_prefix, index), block, chunk_aad(base, index, final), out)
            writer.write(out, last=final)
            written += len(out)
            if final:
                return written
            block = following
            index += 1
    finally:
        writer.close()


def seal_stream(
    key: SiteKey,
    src: BinaryIO,
    dst: BinaryIO,
    *,
    object_id: str,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> int:
    """Seal everything readable from ``src`` into ``dst`` as one sealed object.

    Parameters
    ----------
    key
        The site key that wraps the object's fresh data key.
    src, dst
        Binary streams; read to EOF and written from their current positions. Memory use does not
        depend on the object's size.
    object_id
        The name the object will be opened under; bound into its authentication, so the object does
        not open under any other id (a renamed or swapped file fails).
    chunk_size
        Plaintext bytes per chunk (16 B to 16 MiB). 1 MiB keeps AES-GCM at full speed; smaller chunks
        suit small objects and tests.

    Returns
    -------
    int
        Bytes written to ``dst`` (header and chunks).
    """
    return _seal_stream_with(
        key,
        src,
        dst,
        object_id=object_id,
        chunk_size=chunk_size,
        data_key=_primitives.random_bytes(DATA_KEY_SIZE),
        nonce_prefix=_primitives.random_bytes(NONCE_PREFIX_SIZE),
        wrap_nonce=_primitives.random_bytes(12),
    )


def open_payload(
    keys: SiteKey | Keyring, header_bytes: bytes, src: BinaryIO, dst: BinaryIO, *, object_id: str
) -> int:
    """Open a sealed object whose header was read separately and whose chunks ``src`` yields.

    The split lets :func:`common.crypto.files.open_file` retry with a rotation journal's copy of the
    header. Returns the plaintext bytes written to ``dst``.
    """
    framed = frame_object_id(object_id)
    try:
        header = SealedHeader.parse(header_bytes)
        data_key = unwrap_data_key(header, keys, object_id=object_id)
    except (MalformedHeader, AuthenticationFailed):
        raise integrity_failure(object_id) from None

    chunk_size = header.chunk_size
    full = chunk_size + TAG_SIZE
    cipher = AesGcm(data_key)
    base = chunk_aad_base(header.prefix, framed)
    blocks = _BlockReader(src, full)
    plain = [bytearray(chunk_size), bytearray(chunk_size)]
    writer = _ChunkWriter(dst, overlap=_should_overlap(dst, chunk_size))
    total = 0
    try:
        block = blocks.next()
        index = 0
        while True:
            if index >= MAX_CHUNKS or len(block) < TAG_SIZE:
                raise AuthenticationFailed
            following = blocks.next() if len(block) == full else memoryview(b"")
            final = not following
            out = memoryview(plain[index & 1])[: len(block) - TAG_SIZE]
            cipher.open_into(
                chunk_nonce(header.nonce_prefix, index), block, chunk_aad(base, index, final), out
            )
            writer.write(out, last=final)
            total += len(out)
            if final:
                return total
            block = following
            index += 1
    except AuthenticationFailed:
        raise integrity_failure(object_id) from None
    finally:
        writer.close()


def open_stream(keys: SiteKey | Keyring, src: BinaryIO, dst: BinaryIO, *, object_id: str) -> int:
    """Verify and decrypt the sealed object read from ``src`` into ``dst``.

    Parameters
    ----------
    keys
        The site key, or a :class:`Keyring` during rotation; the header names the key it needs.
    src, dst
        Binary streams. ``src`` must end where the object ends (trailing bytes fail authentication).
    object_id
        The id the object was sealed under.

    Returns
    -------
    int
        Plaintext bytes written to ``dst``.

    Raises
    ------
    IntegrityError
        For every failure: wrong or unknown key, wrong object id, any edit, truncation, reordering,
        or swap. ``dst`` may then hold a verified prefix of the plaintext, which must be discarded.
    """
    frame_object_id(object_id)
    header_bytes = bytearray(HEADER_SIZE)
    if _read_full(src, memoryview(header_bytes)) != HEADER_SIZE:
        raise integrity_failure(object_id)
    return open_payload(keys, bytes(header_bytes), src, dst, object_id=object_id)


def seal_bytes(
    key: SiteKey,
    data: bytes | memoryview,
    *,
    object_id: str,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> bytes:
    """Seal an in-memory object; see :func:`seal_stream` for the parameters."""
    out = io.BytesIO()
    seal_stream(key, as_reader(data), out, object_id=object_id, chunk_size=chunk_size)
    return out.getvalue()


def open_bytes(keys: SiteKey | Keyring, blob: bytes, *, object_id: str) -> bytes:
    """Open an in-memory sealed object; returns the plaintext only if all of it verified.

    Raises
    ------
    IntegrityError
        For every failure, with the same message (see :func:`open_stream`).
    """
    out = io.BytesIO()
    open_stream(keys, as_reader(blob), out, object_id=object_id)
    return out.getvalue()
