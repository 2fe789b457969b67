"""Ed25519 signing keys: who wrote an audit entry or a model card, checkable offline by anyone.

A *signing key* is an Ed25519 private key (RFC 8032) held by one actor (a site or the server); its
*verify key* (the public half) is given to auditors, e.g. in the site kit. Ed25519 signatures are
deterministic: the same key and message always give the same 64 bytes, so no randomness is drawn
while signing, only when a key is generated (:func:`generate_signing_key`, through
:func:`common.crypto.hazmat.primitives.random_bytes`); :meth:`SigningKey.from_seed` is the deterministic
seam used by the RFC 8032 known-answer tests.

Signing-key file format (``fedscan-signing-key v1``), UTF-8 text, exactly two lines, mode 0600::

    fedscan-signing-key v1 <key_id>
    <standard base64 of the 32-byte Ed25519 seed>

It follows the conventions of :mod:`common.crypto.keys` (atomic creation with ``link(2)``, never
overwritten; the loader checks type, owner and mode on the opened descriptor, and that ``key_id``
matches the material).

Public keys travel in three interchangeable forms, all accepted by :func:`load_verify_key`:

- raw: standard base64 of the 32 public-key bytes (44 characters); this is what audit logs embed;
- PEM ``-----BEGIN PUBLIC KEY-----`` (SubjectPublicKeyInfo), what :func:`write_verify_key` writes and
  what ``openssl pkeyutl -verify -pubin -rawin`` reads;
- OpenSSH ``ssh-ed25519 AAAA... [comment]``.

``key_id`` is 16 lowercase hex characters, the first 8 bytes of
``SHA-256(b"fedscan signing-key-id v1\\x00" || raw public key)``: it names the key in audit entries
without being the key, and is the same whichever form the key arrived in.

The Ed25519 arithmetic and encodings are :mod:`common.crypto.hazmat.ed25519`'s; this module is the
recipe on top.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import re
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.crypto.hazmat import ed25519
from common.crypto.hazmat import primitives as _primitives
from common.crypto.private_files import read_private_file
from common.errors import KeyMaterialError
from common.fsio import fsync_dir

__all__ = [
    "SIGNATURE_SIZE",
    "SigningKey",
    "VerifyKey",
    "generate_signing_key",
    "load_signing_key",
    "load_verify_key",
    "sign",
    "verify",
    "write_signing_key",
    "write_verify_key",
]

#: Ed25519 signatures are 64 bytes; seeds and public keys 32.
SIGNATURE_SIZE = 64
_SEED_SIZE = 32
_KEY_ID_LABEL = b"fedscan signing-key-id v1\x00"
_FILE_MAGIC = "fedscan-signing-key"
_FILE_VERSION = "v1"
_FILE_MAX_BYTES = 4096
_KEY_ID_RE = re.compile(r"[0-9a-f]{16}")
_SSH_TYPE = b"ssh-ed25519"


def _key_id(raw_public: bytes) -> str:
    return hashlib.sha256(_KEY_ID_LABEL + raw_public).digest()[:8].hex()


@dataclass(frozen=True, eq=False)
class VerifyKey:
    """An Ed25519 public key and its id; safe to print, publish and embed in logs.

    Build one with :meth:`from_raw` or :func:`load_verify_key`.
    """

    raw: bytes
    key_id: str
    _key: Any = field(repr=False, compare=False)

    @classmethod
    def from_raw(cls, raw: bytes) -> VerifyKey:
        """Build a key from its 32 raw bytes; raise :class:`KeyMaterialError` if they are not a key."""
        if not isinstance(raw, bytes) or len(raw) != _SEED_SIZE:
            raise KeyMaterialError("An Ed25519 public key is exactly 32 bytes.")
        try:
            key = ed25519.public_from_raw(raw)
        except ValueError:
            raise KeyMaterialError("Those 32 bytes are not an Ed25519 public key.") from None
        return cls(raw=raw, key_id=_key_id(raw), _key=key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifyKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def to_base64(self) -> str:
        """Standard base64 of the raw key (44 characters), the form audit logs embed."""
        return base64.b64encode(self.raw).decode("ascii")

    def to_pem(self) -> str:
        """PEM SubjectPublicKeyInfo, readable by ``openssl pkey -pubin``."""
        return ed25519.public_pem(self._key)

    def to_openssh(self, comment: str = "") -> str:
        """One OpenSSH line, ``ssh-ed25519 AAAA... [comment]``."""
        text = ed25519.public_openssh(self._key)
        return f"{text} {comment}" if comment else text

    def verify(self, data: bytes, signature: bytes) -> bool:
        """Return whether ``signature`` is this key's Ed25519 signature of ``data``."""
        if len(signature) != SIGNATURE_SIZE:
            return False
        return ed25519.verify(self._key, data, signature)


@dataclass(frozen=True, eq=False)
class SigningKey:
    """An Ed25519 private key; its seed is hidden from ``repr`` so no log line or traceback shows it."""

    seed: bytes = field(repr=False)
    verify_key: VerifyKey
    _key: Any = field(repr=False)

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        """Build the key whose RFC 8032 32-byte private seed is ``seed`` (deterministic)."""
        if not isinstance(seed, bytes) or len(seed) != _SEED_SIZE:
            raise KeyMaterialError("An Ed25519 private key seed is exactly 32 bytes.")
        key = ed25519.private_from_seed(seed)
        return cls(seed=seed, verify_key=VerifyKey.from_raw(ed25519.public_raw(key)), _key=key)

    @property
    def key_id(self) -> str:
        """The id of the public half (see the module docstring)."""
        return self.verify_key.key_id

    def sign(self, data: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature of ``data``."""
        return ed25519.sign(self._key, data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SigningKey) and other.verify_key == self.verify_key

    def __hash__(self) -> int:
        return hash(self.verify_key)


def generate_signing_key() -> SigningKey:
    """Return a fresh signing key seeded from the operating system's CSPRNG."""
    return SigningKey.from_seed(_primitives.random_bytes(_SEED_SIZE))


def sign(key: SigningKey, data: bytes) -> bytes:
    """Sign ``data`` with ``key``; a 64-byte Ed25519 signature (function form of :meth:`SigningKey.sign`)."""
    return key.sign(data)


def verify(pubkey: VerifyKey, data: bytes, signature: bytes) -> bool:
    """Return whether ``signature`` is ``pubkey``'s signature of ``data``; never raises on a bad one."""
    return pubkey.verify(data, signature)


# ---- key files -----------------------------------------------------------------------------------


def _refuse(path: Path, problem: str, fix: str) -> KeyMaterialError:
    return KeyMaterialError(f"Signing key file {path} {problem}; {fix}.")


def write_signing_key(path: Path, key: SigningKey) -> None:
    """Write ``key`` to a new file at ``path``, mode 0600, atomically; never overwrite.

    Same procedure as :func:`common.crypto.write_key_file`: parent created 0700, temporary file
    fsynced, then published with ``link(2)`` (fails if ``path`` exists), directory fsynced.

    Raises
    ------
    KeyMaterialError
        If ``path`` already exists: replacing a signing key orphans the logs it signed, so that must be
        a deliberate act.
    """
    path = Path(path)
    exists = _refuse(path, "already exists", "refusing to overwrite it (move it away first)")
    if os.path.lexists(path):
        raise exists
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    body = f"{_FILE_MAGIC} {_FILE_VERSION} {key.key_id}\n{base64.b64encode(key.seed).decode('ascii')}\n"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(body.encode("ascii"))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp_name, path)
        except FileExistsError:
            raise exists from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
    fsync_dir(path.parent)


def load_signing_key(path: Path) -> SigningKey:
    """Read and check a file written by :func:`write_signing_key`.

    Checks: :func:`common.crypto.private_files.read_private_file`'s (the opened descriptor, no symbolic
    link followed, and the folder holding it), then well formed, and its key id matching its material.

    Raises
    ------
    KeyMaterialError
        Naming the file, the problem and the fix.
    """
    path = Path(path)
    raw = read_private_file(
        path,
        max_bytes=_FILE_MAX_BYTES,
        label="Signing key file",
        missing_fix="create one with `fedscan site init` or provisioning",
    )
    return _parse_signing_key(path, raw)


def _parse_signing_key(path: Path, raw: bytes) -> SigningKey:
    malformed = _refuse(
        path,
        "is malformed (expected 'fedscan-signing-key v1 <key id>' then base64)",
        "restore it from backup",
    )
    try:
        lines = raw.decode("ascii").splitlines() if len(raw) <= _FILE_MAX_BYTES else []
    except UnicodeDecodeError:
        raise malformed from None
    if len(lines) != 2:
        raise malformed
    fields = lines[0].split(" ")
    if len(fields) != 3 or fields[:2] != [_FILE_MAGIC, _FILE_VERSION] or not _KEY_ID_RE.fullmatch(fields[2]):
        raise malformed
    try:
        seed = base64.b64decode(lines[1].strip(), validate=True)
    except binascii.Error:
        raise malformed from None
    if len(seed) != _SEED_SIZE:
        raise malformed
    key = SigningKey.from_seed(seed)
    if key.key_id != fields[2]:
        raise _refuse(
            path, "is corrupted (its key id does not match its key material)", "restore it from backup"
        )
    return key


def write_verify_key(path: Path, key: VerifyKey | SigningKey) -> None:
    """Write the public key as PEM to ``path`` (mode 0644, atomic replace: a public key is no secret)."""
    from common.fsio import write_atomic

    public = key.verify_key if isinstance(key, SigningKey) else key
    write_atomic(Path(path), public.to_pem().encode("ascii"), mode=0o644)


def load_verify_key(source: str | Path) -> VerifyKey:
    """Read a public key from a file or from text: PEM, OpenSSH line, or raw base64 (see module docs).

    ``source`` is read as a file if such a file exists, otherwise taken as the key text itself (so a
    command line can carry ``--pubkey <base64>``).

    Raises
    ------
    KeyMaterialError
        If the text is none of the accepted forms or not an Ed25519 key.
    """
    text = str(source)
    name = "the given public key"
    with contextlib.suppress(OSError, ValueError):
        candidate = Path(source)
        if candidate.is_file():
            name = f"public key file {candidate}"
            text = candidate.read_text(encoding="ascii", errors="replace")
    text = text.strip()
    raw = _parse_public_text(text)
    if raw is None:
        raise KeyMaterialError(
            f"{name[0].upper()}{name[1:]} is not an Ed25519 public key (expected PEM, an OpenSSH "
            "'ssh-ed25519 ...' line, or 44 characters of base64)."
        )
    return VerifyKey.from_raw(raw)


def _parse_public_text(text: str) -> bytes | None:
    if text.startswith("-----BEGIN"):
        return ed25519.raw_from_pem(text)
    if text.startswith("ssh-ed25519 "):
        return _parse_openssh(text.split()[1] if len(text.split()) > 1 else "")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == _SEED_SIZE else None


def _parse_openssh(blob_b64: str) -> bytes | None:
    # RFC 4253 wire format: string "ssh-ed25519", string key (each u32 length-prefixed).
    try:
        blob = base64.b64decode(blob_b64, validate=True)
        (n,) = struct.unpack(">I", blob[:4])
        if blob[4 : 4 + n] != _SSH_TYPE:
            return None
        (m,) = struct.unpack(">I", blob[4 + n : 8 + n])
        raw = blob[8 + n : 8 + n + m]
    except (binascii.Error, ValueError, struct.error):
        return None
    return raw if len(raw) == _SEED_SIZE and len(blob) == 8 + n + m else None
