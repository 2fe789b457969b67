"""The sealed-object byte layout (format v1): header fields, nonces and associated data.

Pure functions and constants, no keys and no I/O; ``docs/sealed-format.md`` is the prose version of
this module and the two must change together. Layout::

    offset size  field
    0      5     magic          b"FSEAL"
    5      1     version        1
    6      2     flags          0 (reserved; any other value is refused)
    8      4     chunk_size     plaintext bytes per chunk, big-endian u32
    12     8     nonce_prefix   random, per object
    -- the 20 bytes above are the *header prefix*: fixed for the life of the object --
    20     8     key_id         site key id (the 16 hex characters as 8 raw bytes)
    28     12    wrap_nonce     random, per wrap
    40     48    wrapped_key    AES-256-GCM(wrap key, wrap_nonce, data key, wrap AAD): 32 bytes + tag
    88     ...   chunks         each ``min(chunk_size, rest)`` plaintext bytes + 16-byte tag

The last 68 header bytes (the *key slot*) are the only bytes a key rotation rewrites.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass, field

from common.errors import ConfigError

__all__ = [
    "DATA_KEY_SIZE",
    "DEFAULT_CHUNK_SIZE",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_CHUNKS",
    "MAX_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "NONCE_PREFIX_SIZE",
    "PREFIX_SIZE",
    "VERSION",
    "MalformedHeader",
    "SealedHeader",
    "check_chunk_size",
    "chunk_aad",
    "chunk_aad_base",
    "chunk_nonce",
    "frame_object_id",
    "sealed_size",
    "wrap_aad",
]

MAGIC = b"FSEAL"
VERSION = 1
#: Per-object data key (AES-256).
DATA_KEY_SIZE = 32
NONCE_PREFIX_SIZE = 8
KEY_ID_SIZE = 8
WRAP_NONCE_SIZE = 12
WRAPPED_KEY_SIZE = DATA_KEY_SIZE + 16
#: Bytes of the rotation-invariant header prefix (magic .. nonce_prefix).
PREFIX_SIZE = 20
#: Total header size; the first chunk starts here.
HEADER_SIZE = PREFIX_SIZE + KEY_ID_SIZE + WRAP_NONCE_SIZE + WRAPPED_KEY_SIZE
#: Smallest and largest chunk sizes accepted (the largest bounds what a reader allocates).
MIN_CHUNK_SIZE = 16
MAX_CHUNK_SIZE = 1 << 24
DEFAULT_CHUNK_SIZE = 1 << 20
#: The chunk counter is 32 bits wide in the nonce, so an object has at most 2**32 chunks.
MAX_CHUNKS = 1 << 32

_PREFIX = struct.Struct(">5sBHI8s")
_CHUNK_TAIL = struct.Struct(">IB")
_WRAP_LABEL = b"fedscan-seal v1 wrap\x00"
_CHUNK_LABEL = b"fedscan-seal v1 chunk\x00"
_MAX_OBJECT_ID_BYTES = 0xFFFF

assert HEADER_SIZE == 88 and _PREFIX.size == PREFIX_SIZE


class MalformedHeader(ValueError):
    """The bytes are not a v1 header (internal; callers turn it into ``IntegrityError``)."""


@dataclass(frozen=True)
class SealedHeader:
    """The parsed header of a sealed object.

    Parsing does not authenticate: ``key_id`` and ``chunk_size`` are trustworthy only after the
    wrapped key has been opened (its associated data covers every header field). Use an unopened
    header to route (which key does this object need?), never to decide anything else.

    Attributes
    ----------
    version
        Format version (1).
    chunk_size
        Plaintext bytes per chunk.
    nonce_prefix
        The 8-byte random prefix of every chunk nonce.
    key_id
        Id of the site key that wraps the data key, 16 lowercase hex characters.
    wrap_nonce, wrapped_key
        The key slot: the data key encrypted under the site's wrap key.
    """

    version: int
    chunk_size: int
    nonce_prefix: bytes
    key_id: str
    wrap_nonce: bytes = field(repr=False)
    wrapped_key: bytes = field(repr=False)

    #: Size of the encoded header in bytes.
    size = HEADER_SIZE

    @property
    def prefix(self) -> bytes:
        """The 20 rotation-invariant bytes, bound into every chunk's and the wrap's associated data."""
        return _PREFIX.pack(MAGIC, self.version, 0, self.chunk_size, self.nonce_prefix)

    def to_bytes(self) -> bytes:
        """Encode the header (exactly :data:`HEADER_SIZE` bytes)."""
        return self.prefix + bytes.fromhex(self.key_id) + self.wrap_nonce + self.wrapped_key

    def with_key_slot(self, key_id: str, wrap_nonce: bytes, wrapped_key: bytes) -> SealedHeader:
        """Return a copy with a new key slot (what a rotation writes)."""
        return dataclasses.replace(self, key_id=key_id, wrap_nonce=wrap_nonce, wrapped_key=wrapped_key)

    @classmethod
    def parse(cls, raw: bytes) -> SealedHeader:
        """Decode a header; raise :class:`MalformedHeader` if it is not a well-formed v1 header."""
        if len(raw) != HEADER_SIZE:
            raise MalformedHeader("short header")
        magic, version, flags, chunk_size, nonce_prefix = _PREFIX.unpack_from(raw, 0)
        if magic != MAGIC or version != VERSION or flags != 0:
            raise MalformedHeader("not a v1 sealed object")
        if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
            raise MalformedHeader("chunk size out of range")
        at = PREFIX_SIZE
        key_id = bytes(raw[at : at + KEY_ID_SIZE]).hex()
        at += KEY_ID_SIZE
        wrap_nonce = bytes(raw[at : at + WRAP_NONCE_SIZE])
        at += WRAP_NONCE_SIZE
        wrapped_key = bytes(raw[at : at + WRAPPED_KEY_SIZE])
        return cls(VERSION, chunk_size, nonce_prefix, key_id, wrap_nonce, wrapped_key)


def check_chunk_size(chunk_size: int) -> int:
    """Return ``chunk_size`` if a writer may use it, else raise :class:`ConfigError`."""
    if not isinstance(chunk_size, int) or not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ConfigError(
            f"The chunk size must be an integer between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE} bytes."
        )
    return chunk_size


def frame_object_id(object_id: str) -> bytes:
    """Encode ``object_id`` unambiguously for associated data: big-endian u16 length, then UTF-8.

    Raises
    ------
    ConfigError
        If the id is not a non-empty string of at most 65535 UTF-8 bytes.
    """
    if not isinstance(object_id, str) or not object_id:
        raise ConfigError("The object id must be a non-empty string.")
    try:
        encoded = object_id.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError("The object id must be valid Unicode text.") from None
    if len(encoded) > _MAX_OBJECT_ID_BYTES:
        raise ConfigError(f"The object id must be at most {_MAX_OBJECT_ID_BYTES} bytes of UTF-8.")
    return struct.pack(">H", len(encoded)) + encoded


def wrap_aad(prefix: bytes, key_id: str, framed_object_id: bytes) -> bytes:
    """Associated data of the key slot: label, header prefix, key id, object id."""
    return _WRAP_LABEL + prefix + bytes.fromhex(key_id) + framed_object_id


def chunk_aad_base(prefix: bytes, framed_object_id: bytes) -> bytes:
    """The part of every chunk's associated data that does not depend on the chunk."""
    return _CHUNK_LABEL + prefix + framed_object_id


def chunk_aad(base: bytes, index: int, final: bool) -> bytes:
    """Associated data of chunk ``index``: the base, the index (u32) and the final flag (u8)."""
    return base + _CHUNK_TAIL.pack(index, 1 if final else 0)


def chunk_nonce(nonce_prefix: bytes, index: int) -> bytes:
    """The 96-bit nonce of chunk ``index``: ``nonce_prefix || index`` (big-endian u32)."""
    return nonce_prefix + index.to_bytes(4, "big")


def sealed_size(plaintext_size: int, chunk_size: int) -> int:
    """Size of the sealed object for a plaintext of ``plaintext_size`` bytes (always >= 1 chunk)."""
    chunks = max(1, -(-plaintext_size // chunk_size))
    return HEADER_SIZE + plaintext_size + 16 * chunks
