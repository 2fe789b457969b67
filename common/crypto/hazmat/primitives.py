"""Symmetric primitives: AES-256-GCM, HKDF-SHA256, scrypt and the one source of randomness.

Everything here is a thin, typed wrapper over pyca/cryptography (see :mod:`common.crypto.hazmat`).
These functions know nothing about objects, headers or files; they take keys, nonces and associated
data as they are given, and the caller is responsible for never repeating a (key, nonce) pair.

Randomness is drawn in exactly one place, :func:`random_bytes`, so that the recipe above can push it to
its edge and keep a deterministic seam for known-answer tests.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

__all__ = [
    "NONCE_SIZE",
    "TAG_SIZE",
    "AesGcm",
    "AuthenticationFailed",
    "hkdf_sha256",
    "random_bytes",
    "scrypt",
]

#: AES-GCM nonce length in bytes (the 96-bit nonce NIST SP 800-38D recommends).
NONCE_SIZE = 12
#: AES-GCM authentication tag length in bytes (full 128-bit tag, never truncated).
TAG_SIZE = 16

Buffer = bytes | bytearray | memoryview


class AuthenticationFailed(Exception):
    """An AES-GCM tag did not verify.

    Internal: the recipe layer translates it into :class:`common.errors.IntegrityError` with the
    object id, which this layer does not know.
    """


def random_bytes(size: int) -> bytes:
    """Return ``size`` bytes from the operating system's CSPRNG (``os.urandom``)."""
    return os.urandom(size)


class AesGcm:
    """AES-256-GCM under one 32-byte key, with allocation-free ``*_into`` variants.

    Parameters
    ----------
    key
        The 256-bit key. Other lengths are refused: fedscan uses AES-256 only.
    """

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("AES-256-GCM needs a 32-byte key.")
        self._aead = AESGCM(key)

    def seal(self, nonce: bytes, plaintext: Buffer, aad: bytes) -> bytes:
        """Encrypt and authenticate; return ciphertext followed by the 16-byte tag."""
        return self._aead.encrypt(nonce, plaintext, aad)

    def open(self, nonce: bytes, ciphertext: Buffer, aad: bytes) -> bytes:
        """Verify and decrypt ``ciphertext || tag``; raise :class:`AuthenticationFailed` on any mismatch."""
        try:
            return self._aead.decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise AuthenticationFailed from None

    def seal_into(self, nonce: bytes, plaintext: Buffer, aad: bytes, out: memoryview) -> int:
        """Like :meth:`seal`, writing into ``out`` (exactly ``len(plaintext) + TAG_SIZE`` bytes).

        Writing into a reused buffer avoids allocating a fresh chunk per call, which is what keeps the
        streaming recipe at the speed of the bare cipher.
        """
        return self._aead.encrypt_into(nonce, plaintext, aad, out)

    def open_into(self, nonce: bytes, ciphertext: Buffer, aad: bytes, out: memoryview) -> int:
        """Like :meth:`open`, writing into ``out`` (exactly ``len(ciphertext) - TAG_SIZE`` bytes)."""
        if len(ciphertext) < TAG_SIZE:
            raise AuthenticationFailed
        try:
            return self._aead.decrypt_into(nonce, ciphertext, aad, out)
        except InvalidTag:
            raise AuthenticationFailed from None


def hkdf_sha256(key: bytes, *, info: bytes, length: int = 32) -> bytes:
    """Derive a sub-key from a uniformly random key with HKDF-SHA256 (RFC 5869), no salt.

    Used for domain separation: the site key never keys AES directly, so the same key file could
    safely serve another purpose (e.g. an HMAC) without the two uses interacting.
    """
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(key)


def scrypt(passphrase: bytes, salt: bytes, *, n: int, r: int, p: int, length: int = 32) -> bytes:
    """Stretch a passphrase with scrypt (RFC 7914)."""
    return Scrypt(salt=salt, length=length, n=n, r=r, p=p).derive(passphrase)
