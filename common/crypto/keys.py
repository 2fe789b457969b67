"""Site keys: generation, key files, environment and passphrase keys, and the rotation keyring.

A *site key* is 32 random bytes that never encrypts data itself: it wraps the per-object data keys of
:mod:`common.crypto.stream`. Deleting every copy of it crypto-shreds the site's store.

Key file format (``fedscan-key v1``), UTF-8 text, exactly two lines::

    fedscan-key v1 <key_id>
    <standard base64 of the 32 key bytes>

``key_id`` is 16 lowercase hex characters, the first 8 bytes of
``SHA-256(b"fedscan key-id v1\\x00" || key)``; it names the key in sealed headers and logs without
revealing it, and it lets :func:`load_key_file` detect a corrupted or hand-edited file. The file must be
a regular file owned by the current user with no group or other permission bits (``0600``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from common.crypto.hazmat import primitives as _primitives
from common.crypto.private_files import read_private_file
from common.errors import ConfigError, KeyMaterialError
from common.fsio import fsync_dir

__all__ = [
    "KEY_SIZE",
    "Keyring",
    "SiteKey",
    "derive_key_from_passphrase",
    "generate_key",
    "key_from_env",
    "key_from_text",
    "load_key_file",
    "write_key_file",
]

#: Site keys are 256-bit.
KEY_SIZE = 32

_KEY_ID_LABEL = b"fedscan key-id v1\x00"
_KEY_FILE_MAGIC = "fedscan-key"
_KEY_FILE_VERSION = "v1"
_KEY_FILE_MAX_BYTES = 4096
_KEY_ID_RE = re.compile(r"[0-9a-f]{16}")

#: scrypt cost for passphrase keys: N=2**15, r=8, p=1 uses 32 MiB and about 0.1 s here, the
#: interactive-login setting from the scrypt paper; raising it later needs a new key derivation label.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
#: Shortest salt accepted for passphrase keys (128 bits, as NIST SP 800-132 asks).
MIN_SALT_SIZE = 16


def _key_id(material: bytes) -> str:
    return hashlib.sha256(_KEY_ID_LABEL + material).digest()[:8].hex()


@dataclass(frozen=True)
class SiteKey:
    """A 256-bit site key and its public identifier.

    Attributes
    ----------
    key_id
        16 lowercase hex characters derived from the key (see the module docstring); safe to log.
    material
        The 32 secret bytes. Hidden from ``repr`` so that a traceback or log line never shows it.
    """

    key_id: str
    material: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.material, bytes) or len(self.material) != KEY_SIZE:
            raise ConfigError(f"A site key must be exactly {KEY_SIZE} bytes of key material.")
        if self.key_id != _key_id(self.material):
            raise ConfigError(
                "The key id does not match the key material; build keys with SiteKey.from_material()."
            )

    @classmethod
    def from_material(cls, material: bytes) -> SiteKey:
        """Build a key from 32 bytes, deriving its ``key_id``."""
        if not isinstance(material, bytes) or len(material) != KEY_SIZE:
            raise ConfigError(f"A site key must be exactly {KEY_SIZE} bytes of key material.")
        return cls(key_id=_key_id(material), material=material)


def generate_key() -> SiteKey:
    """Return a fresh random site key from the operating system's CSPRNG."""
    return SiteKey.from_material(_primitives.random_bytes(KEY_SIZE))


class Keyring:
    """One or more site keys, looked up by key id.

    Used while rotating (objects sealed under the old key and already re-wrapped ones both open) and
    by readers that must accept any key the site still holds.

    Parameters
    ----------
    keys
        The keys; at least one. Repeating a key is harmless.
    """

    __slots__ = ("_keys",)

    def __init__(self, keys: Iterable[SiteKey]) -> None:
        held: dict[str, SiteKey] = {}
        for key in keys:
            if not isinstance(key, SiteKey):
                raise ConfigError("A Keyring holds SiteKey objects only.")
            held[key.key_id] = key
        if not held:
            raise ConfigError("A Keyring needs at least one key.")
        self._keys = held

    def get(self, key_id: str) -> SiteKey:
        """Return the key with ``key_id``; raise :class:`KeyMaterialError` if it is not held."""
        try:
            return self._keys[key_id]
        except KeyError:
            raise KeyMaterialError(
                f"Key {key_id} is not in the keyring; load the key file that holds it."
            ) from None

    def find(self, key_id: str) -> SiteKey | None:
        """Return the key with ``key_id``, or ``None`` if it is not held."""
        return self._keys.get(key_id)

    @property
    def key_ids(self) -> tuple[str, ...]:
        """The ids of the held keys, in insertion order."""
        return tuple(self._keys)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def __iter__(self) -> Iterator[SiteKey]:
        return iter(self._keys.values())

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"Keyring(key_ids={list(self._keys)!r})"


# ---- key files -----------------------------------------------------------------------------------


def _render_key_file(key: SiteKey) -> bytes:
    encoded = base64.b64encode(key.material).decode("ascii")
    return f"{_KEY_FILE_MAGIC} {_KEY_FILE_VERSION} {key.key_id}\n{encoded}\n".encode("ascii")


def write_key_file(path: Path, key: SiteKey) -> None:
    """Write ``key`` to a new file at ``path``, mode 0600, atomically; never overwrite.

    The parent directory is created with mode 0700 if it does not exist. The file is written to a
    temporary name, fsynced, then published with ``link(2)``, which fails if ``path`` already exists:
    so a concurrent writer or an existing key is never replaced, and a crash leaves either no key file
    or a complete one.

    Raises
    ------
    KeyMaterialError
        If ``path`` already exists (deleting a key file destroys every object sealed under it, so
        that must be a deliberate act).
    """
    path = Path(path)
    if os.path.lexists(path):
        raise KeyMaterialError(
            f"Key file {path} already exists; refusing to overwrite it (move it away first if you "
            "really mean to replace the key)."
        )
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(_render_key_file(key))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp_name, path)
        except FileExistsError:
            raise KeyMaterialError(
                f"Key file {path} already exists; refusing to overwrite it (move it away first if you "
                "really mean to replace the key)."
            ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
    fsync_dir(path.parent)


def _refuse(path: Path, problem: str, fix: str) -> KeyMaterialError:
    return KeyMaterialError(f"Key file {path} {problem}; {fix}.")


def load_key_file(path: Path) -> SiteKey:
    """Read and check a key file written by :func:`write_key_file`.

    The checks are :func:`common.crypto.private_files.read_private_file`'s: on the opened descriptor (no
    symbolic link followed), and on the folder holding the file (0700).

    Raises
    ------
    KeyMaterialError
        If the file is missing, not a regular file, not owned by the current user, readable or
        writable by group or others, or malformed. The message names the file, the problem and the fix.
    """
    path = Path(path)
    raw = read_private_file(
        path,
        max_bytes=_KEY_FILE_MAX_BYTES,
        label="Key file",
        missing_fix="create one with `fedscan site init` or restore it from backup",
    )
    return _parse_key_file(path, raw)


def _parse_key_file(path: Path, raw: bytes) -> SiteKey:
    malformed = _refuse(
        path,
        "is malformed (expected 'fedscan-key v1 <key id>' then base64 key material)",
        "restore it from backup",
    )
    if len(raw) > _KEY_FILE_MAX_BYTES:
        raise malformed
    try:
        lines = raw.decode("ascii").splitlines()
    except UnicodeDecodeError:
        raise malformed from None
    if len(lines) != 2:
        raise malformed
    fields = lines[0].split(" ")
    if len(fields) != 3 or fields[:2] != [_KEY_FILE_MAGIC, _KEY_FILE_VERSION]:
        raise malformed
    if not _KEY_ID_RE.fullmatch(fields[2]):
        raise malformed
    try:
        material = base64.b64decode(lines[1].strip(), validate=True)
    except binascii.Error:
        raise malformed from None
    if len(material) != KEY_SIZE:
        raise malformed
    key = SiteKey.from_material(material)
    if key.key_id != fields[2]:
        raise _refuse(
            path, "is corrupted (its key id does not match its key material)", "restore it from backup"
        )
    return key


# ---- keys from the environment or a passphrase ---------------------------------------------------


def key_from_text(value: str, source: str) -> SiteKey:
    """Parse a site key written as text: 32 bytes as hex (64 characters) or base64 (standard or URL-safe).

    ``source`` names where the text came from (an environment variable, a keyring entry) for the
    error message; the value itself is never echoed.

    Raises
    ------
    KeyMaterialError
        If the text is empty or not 32 bytes in either encoding.
    """
    value = value.strip()
    if not value:
        raise KeyMaterialError(
            f"{source} is empty; it must hold a 32-byte key as 64 hex characters or base64."
        )
    material: bytes | None = None
    if len(value) == 2 * KEY_SIZE:
        with contextlib.suppress(ValueError):
            material = bytes.fromhex(value)
    if material is None:
        padded = value + "=" * (-len(value) % 4)
        with contextlib.suppress(binascii.Error, ValueError):
            alphabet = b"-_" if ("-" in value or "_" in value) else b"+/"
            material = base64.b64decode(padded, altchars=alphabet, validate=True)
    if material is None or len(material) != KEY_SIZE:
        raise KeyMaterialError(
            f"{source} does not hold a 32-byte key; set it to 64 hex characters or the base64 of 32 bytes."
        )
    return SiteKey.from_material(material)


def key_from_env(var: str) -> SiteKey:
    """Read a site key from environment variable ``var``: 32 bytes as hex (64 chars) or base64.

    Meant for containers and CI where a secret store injects the key; the value is never echoed in
    error messages.

    Raises
    ------
    KeyMaterialError
        If the variable is unset, empty, or not 32 bytes in either encoding.
    """
    value = os.environ.get(var, "").strip()
    if not value:
        raise KeyMaterialError(
            f"Environment variable {var} is not set; export the site key (32 bytes as 64 hex characters "
            "or base64) from the secret store that holds it."
        )
    return key_from_text(value, f"Environment variable {var}")


def derive_key_from_passphrase(passphrase: str, salt: bytes) -> SiteKey:
    """Derive a site key from a passphrase with scrypt (N=2**15, r=8, p=1, 32-byte output).

    The passphrase is encoded as UTF-8 exactly as given (no Unicode normalization). The salt must be
    random, at least 16 bytes, and stored next to whatever needs the key again (it is not secret).
    N=2**15, r=8 costs 32 MiB and about 0.1 s per derivation, the scrypt paper's interactive setting.
    A passphrase key is only as strong as the passphrase: prefer :func:`generate_key` and a key file
    wherever a file can be protected.

    Raises
    ------
    ConfigError
        If the passphrase is empty or the salt shorter than 16 bytes.
    """
    if not isinstance(passphrase, str) or not passphrase:
        raise ConfigError("The passphrase must be a non-empty string.")
    if not isinstance(salt, bytes) or len(salt) < MIN_SALT_SIZE:
        raise ConfigError(f"The salt must be at least {MIN_SALT_SIZE} random bytes.")
    material = _primitives.scrypt(passphrase.encode("utf-8"), salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return SiteKey.from_material(material)
