"""Ed25519 (RFC 8032): keys from seeds and raw bytes, signatures, and the PEM and OpenSSH encodings.

Thin wrappers over pyca/cryptography (:mod:`common.crypto.hazmat`); :mod:`common.crypto.signing` is the
recipe on top (key files, key ids, one verify that never raises).
"""

from __future__ import annotations

from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "private_from_seed",
    "public_from_raw",
    "public_openssh",
    "public_pem",
    "public_raw",
    "raw_from_pem",
    "sign",
    "verify",
]


def private_from_seed(seed: bytes) -> Any:
    """The private key whose 32-byte RFC 8032 seed is ``seed`` (ValueError if it is not 32 bytes)."""
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_raw(private: Any) -> bytes:
    """The 32 raw bytes of a private key's public half."""
    public = private.public_key()
    return bytes(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def public_from_raw(raw: bytes) -> Any:
    """The public key of 32 raw bytes (ValueError if they are not one)."""
    return Ed25519PublicKey.from_public_bytes(raw)


def sign(private: Any, data: bytes) -> bytes:
    """The 64-byte signature of ``data``."""
    return bytes(private.sign(data))


def verify(public: Any, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``public``'s signature of ``data``."""
    try:
        public.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def public_pem(public: Any) -> str:
    """PEM SubjectPublicKeyInfo."""
    encoded = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return bytes(encoded).decode("ascii")


def public_openssh(public: Any) -> str:
    """One OpenSSH line ``ssh-ed25519 AAAA...`` (no comment)."""
    encoded = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return bytes(encoded).decode("ascii")


def raw_from_pem(text: str) -> bytes | None:
    """The raw key of a PEM Ed25519 public key, or ``None`` if the text is not one."""
    try:
        loaded = serialization.load_pem_public_key(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return None
    if not isinstance(loaded, Ed25519PublicKey):
        return None
    return bytes(loaded.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
