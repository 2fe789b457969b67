"""One audit entry: its line format, its hash, its signature, and the link to the entry before it.

A log is a file of lines, one entry per line, each line ASCII and ending in ``\\n``::

    {"actor":"site-a","details":{...},"event":"round.taken","key":"<key id>","prev":"<hex>",
     "seq":7,"time":"2025-06-01T12:00:00.000000Z","v":1,"hash":"<64 hex>","sig":"<88 base64>"}

(shown wrapped; a real line has no whitespace). The line is the *body* -- the canonical JSON
(:mod:`common.audit.canonical`) of the eight fields ``actor, details, event, key, prev, seq, time, v``
-- with its closing brace replaced by ``,"hash":"<hash>","sig":"<sig>"}``:

``hash``
    SHA-256 of the body bytes (so ``hash`` and ``sig`` are not covered by it).
``sig``
    Standard base64 of the Ed25519 signature, by the key ``key`` names, of the ASCII bytes
    ``fedscan-audit-entry-v1:`` followed by ``hash`` in hex (the label keeps a log signature from ever
    being mistaken for a model-card signature made with the same key).
``prev``
    SHA-256 of the previous entry's complete line (body, hash and signature; without its newline),
    or 64 zeros for the log's first entry (``seq`` 0). Chaining whole lines, signatures included,
    means one valid signature vouches for every byte before it: see :mod:`common.audit.verify`.
``seq``
    0, 1, 2, ... with no gap, across rotated segments.
``time``
    UTC, ``YYYY-MM-DDTHH:MM:SS.ffffffZ``, taken under the log's lock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from common.audit.canonical import canonical_json
from common.crypto import SigningKey

__all__ = [
    "ENTRY_VERSION",
    "GENESIS_PREV",
    "SIGNING_LABEL",
    "Entry",
    "EntryFormatError",
    "decode_line",
    "encode_entry",
    "signed_message",
]

ENTRY_VERSION: Final = 1
GENESIS_PREV: Final = "0" * 64
SIGNING_LABEL: Final = b"fedscan-audit-entry-v1:"

_SUFFIX_RE = re.compile(rb',"hash":"([0-9a-f]{64})","sig":"([A-Za-z0-9+/]{86}==)"\}\Z')
_BODY_KEYS: Final = frozenset({"actor", "details", "event", "key", "prev", "seq", "time", "v"})
_TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
_KEY_RE = re.compile(r"[0-9a-f]{16}")
_HEX64_RE = re.compile(r"[0-9a-f]{64}")


class EntryFormatError(Exception):
    """A line is not a well-formed entry; ``reason`` is ``"malformed"`` or ``"not-canonical"``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Entry:
    """A decoded entry and the exact line it came from (without the newline)."""

    seq: int
    time: str
    actor: str
    key_id: str
    event: str
    details: Mapping[str, Any]
    prev: str
    hash: str
    signature: bytes
    line: bytes

    def line_hash(self) -> str:
        """SHA-256 of the line: what the next entry's ``prev`` must be."""
        return hashlib.sha256(self.line).hexdigest()

    def signed_ok(self, verify_key: Any) -> bool:
        """Whether ``sig`` is ``verify_key``'s signature of this entry's hash (see module docs)."""
        return bool(verify_key.verify(signed_message(self.hash), self.signature))


def signed_message(entry_hash: str) -> bytes:
    """The bytes an entry's signature covers: ``fedscan-audit-entry-v1:<hash hex>``."""
    return SIGNING_LABEL + entry_hash.encode("ascii")


def encode_entry(body: Mapping[str, Any], key: SigningKey) -> bytes:
    """Hash and sign ``body`` (the eight body fields) and return the line, without newline."""
    raw = canonical_json(body)
    digest = hashlib.sha256(raw).hexdigest()
    sig = base64.b64encode(key.sign(signed_message(digest))).decode("ascii")
    return raw[:-1] + f',"hash":"{digest}","sig":"{sig}"}}'.encode("ascii")


def decode_line(line: bytes) -> tuple[Entry, bytes]:
    """Parse one line (without newline) into an :class:`Entry` and its body bytes.

    Only the format is checked here (shape, field types, canonical encoding); hashes, links and
    signatures are :mod:`common.audit.verify`'s job.

    Raises
    ------
    EntryFormatError
        With reason ``"malformed"`` or ``"not-canonical"``.
    """
    match = _SUFFIX_RE.search(line)
    if match is None:
        raise EntryFormatError("malformed", 'the line does not end with the "hash" and "sig" fields')
    body = line[: match.start()] + b"}"
    try:
        fields = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise EntryFormatError("malformed", "the entry is not valid JSON") from None
    if not isinstance(fields, dict) or fields.keys() != _BODY_KEYS:
        raise EntryFormatError(
            "malformed", f"the entry must have exactly the fields {', '.join(sorted(_BODY_KEYS))}"
        )
    seq, time, actor, key, event = (fields[k] for k in ("seq", "time", "actor", "key", "event"))
    details, prev = fields["details"], fields["prev"]
    if (
        fields["v"] != ENTRY_VERSION
        or type(seq) is not int
        or seq < 0
        or not isinstance(time, str)
        or not _TIME_RE.fullmatch(time)
        or not isinstance(actor, str)
        or not isinstance(key, str)
        or not _KEY_RE.fullmatch(key)
        or not isinstance(event, str)
        or not isinstance(details, dict)
        or not isinstance(prev, str)
        or not _HEX64_RE.fullmatch(prev)
    ):
        raise EntryFormatError("malformed", "a field has the wrong type or shape")
    try:
        canonical = canonical_json(fields)
    except ValueError:
        raise EntryFormatError("not-canonical", "the entry holds a non-finite number") from None
    if canonical != body:
        raise EntryFormatError("not-canonical", "the entry is not in canonical JSON form")
    try:
        signature = base64.b64decode(match.group(2), validate=True)
    except binascii.Error:  # pragma: no cover - the regex admits only valid base64
        raise EntryFormatError("malformed", "the signature is not base64") from None
    if base64.b64encode(signature) != match.group(2):
        raise EntryFormatError("not-canonical", "the signature's base64 is not in canonical form")
    entry = Entry(
        seq=seq,
        time=time,
        actor=actor,
        key_id=key,
        event=event,
        details=details,
        prev=prev,
        hash=match.group(1).decode("ascii"),
        signature=signature,
        line=line,
    )
    return entry, body
