"""The key envelope: a per-object data key wrapped under the site key.

Why AES-256-GCM and not AES key wrap (RFC 3394): AES-KW takes no associated data, so it could not
bind the wrapped key to its object id and header; its integrity check is 64 bits instead of 128; and
GCM is the primitive the payload already uses, so the hazmat layer stays one cipher wide. GCM needs a
nonce: each wrap draws a fresh random 96-bit one, which is safe for far more than the 2**32 wraps per
site key NIST SP 800-38D allows with random nonces (a site wraps one key per object and per rotation).

The site key never keys AES directly: the wrap key is ``HKDF-SHA256(site key, info="fedscan seal v1
wrap-key")``, so the site key file could also serve another purpose without the uses interacting.
"""

from __future__ import annotations

from common.crypto.format import DATA_KEY_SIZE, SealedHeader, frame_object_id, wrap_aad
from common.crypto.hazmat import primitives as _primitives
from common.crypto.keys import Keyring, SiteKey

__all__ = ["find_key", "unwrap_data_key", "wrap_data_key"]

_WRAP_KEY_INFO = b"fedscan seal v1 wrap-key"


def _wrap_cipher(site_key: SiteKey) -> _primitives.AesGcm:
    return _primitives.AesGcm(_primitives.hkdf_sha256(site_key.material, info=_WRAP_KEY_INFO))


def find_key(keys: SiteKey | Keyring, key_id: str) -> SiteKey | None:
    """Return the held key named ``key_id``, or ``None`` (never raises: no oracle for callers)."""
    if isinstance(keys, SiteKey):
        return keys if keys.key_id == key_id else None
    return keys.find(key_id)


def wrap_data_key(
    header: SealedHeader, site_key: SiteKey, data_key: bytes, *, object_id: str, wrap_nonce: bytes
) -> SealedHeader:
    """Return ``header`` with its key slot set to ``data_key`` wrapped under ``site_key``.

    The wrap's associated data is the header prefix, the key id and the object id, so a key slot
    moved to another object, or a header with an edited prefix, fails to unwrap.
    """
    aad = wrap_aad(header.prefix, site_key.key_id, frame_object_id(object_id))
    wrapped = _wrap_cipher(site_key).seal(wrap_nonce, data_key, aad)
    return header.with_key_slot(site_key.key_id, wrap_nonce, wrapped)


def unwrap_data_key(header: SealedHeader, keys: SiteKey | Keyring, *, object_id: str) -> bytes:
    """Open the key slot of ``header`` with whichever held key it names.

    Raises
    ------
    AuthenticationFailed
        If the key is not held or the slot does not verify (the caller makes one ``IntegrityError``
        of both, so an attacker cannot tell them apart).
    """
    site_key = find_key(keys, header.key_id)
    if site_key is None:
        raise _primitives.AuthenticationFailed
    aad = wrap_aad(header.prefix, header.key_id, frame_object_id(object_id))
    data_key = _wrap_cipher(site_key).open(header.wrap_nonce, header.wrapped_key, aad)
    if len(data_key) != DATA_KEY_SIZE:
        raise _primitives.AuthenticationFailed
    return data_key
