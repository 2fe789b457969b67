"""fedscan's cryptographic recipe: sealed objects, site keys and key rotation.

This package is the only place in fedscan that touches ``cryptography.hazmat``, and only in its
:mod:`common.crypto.hazmat` subpackage (an import-linter contract keeps it so); everything exported here
is a safe recipe with no nonce, mode or padding to choose. A *sealed object* is a payload encrypted with
AES-256-GCM in chunks under a fresh per-object data key, which is wrapped under the site key in an
authenticated header bound to the object's id (format: ``docs/sealed-format.md``). Every authentication
failure raises :class:`common.errors.IntegrityError` with the same message, whatever the cause.

Typical use::

    key = load_key_file(site_dir / "keys" / "site.key")
    seal_file(key, payload, path, object_id="shard-0001")
    payload = open_file(key, path, object_id="shard-0001")
    rewrap_file(path, old=key, new=generate_key(), object_id="shard-0001")
"""

from __future__ import annotations

from common.crypto.files import open_file, read_header, seal_file
from common.crypto.format import SealedHeader
from common.crypto.keys import (
    KEY_SIZE,
    Keyring,
    SiteKey,
    derive_key_from_passphrase,
    generate_key,
    key_from_env,
    key_from_text,
    load_key_file,
    write_key_file,
)
from common.crypto.rotation import rewrap_file
from common.crypto.signing import (
    SigningKey,
    VerifyKey,
    generate_signing_key,
    load_signing_key,
    load_verify_key,
    sign,
    verify,
    write_signing_key,
    write_verify_key,
)
from common.crypto.stream import open_bytes, open_stream, seal_bytes, seal_stream

__all__ = [
    "KEY_SIZE",
    "Keyring",
    "SealedHeader",
    "SiteKey",
    "derive_key_from_passphrase",
    "generate_key",
    "key_from_env",
    "key_from_text",
    "load_key_file",
    "open_bytes",
    "open_file",
    "open_stream",
    "read_header",
    "rewrap_file",
    "seal_bytes",
    "seal_file",
    "seal_stream",
    "write_key_file",
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
