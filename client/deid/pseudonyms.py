"""Keyed pseudonyms: UIDs, patient IDs and per-patient date shifts derived from the site secret.

Everything here is HMAC-SHA256 under sub-keys derived from the site's de-identification secret
(32 random bytes written by ``fedscan site init``), with one sub-key per purpose so that a value of
one kind can never be replayed as another. Without the secret nobody can map a pseudonym back to the
original or test a guess; with it, the same input always gives the same output, across files, series,
runs and worker processes.

Outputs are *self-authenticating*: each carries a short tag (a second HMAC over its payload) that lets
the holder of the secret recognise its own outputs. Feeding an output back in returns it unchanged,
which makes de-identifying an already de-identified file a no-op (a fixed point by construction):

- UIDs become ``2.25.<integer>``, the integer being an RFC 9562 version 8 UUID whose 128 bits are a
  74-bit keyed payload, the version and variant bits, and a 48-bit tag. At most 44 characters, digits
  and dots only (PS3.5 9.1, B.2).
- Patient IDs become ``FS`` + 24 base-32 characters (an 80-bit keyed payload and a 40-bit tag).
- The temporal offset of a patient is minus 1 to 3652 whole days plus 0 to 86399 seconds
  (:class:`~client.deid.dates.TemporalShift`), keyed by the original (0010,0020) *Patient ID*: dates
  and times move together, so intervals survive and no time of day does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from functools import lru_cache
from typing import Final

from client.deid.dates import TemporalShift
from common.errors import KeyMaterialError

__all__ = [
    "MAX_SHIFT_DAYS",
    "KeyedPseudonyms",
    "patient_pseudonym",
    "pseudonymize_uid",
]

#: Dates move back by 1 to MAX_SHIFT_DAYS days (about ten years), never by zero.
MAX_SHIFT_DAYS: Final = 3652

_MIN_SECRET_BYTES: Final = 16
_UID_ROOT: Final = "2.25."
_PATIENT_PREFIX: Final = "FS"
_UID_PAYLOAD: Final = 10  # bytes; 6 of its 80 bits are fixed by the UUID version and variant
_UID_TAG: Final = 6
_PATIENT_PAYLOAD: Final = 10
_PATIENT_TAG: Final = 5


def _subkey(secret: bytes, purpose: str) -> bytes:
    return hmac.new(secret, b"fedscan/deid/v1/" + purpose.encode("ascii"), hashlib.sha256).digest()


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


class KeyedPseudonyms:
    """The keyed derivations of one site secret.

    Parameters
    ----------
    secret : bytes
        The site's de-identification secret; at least 16 bytes (``fedscan site init`` writes 32).

    Raises
    ------
    KeyMaterialError
        If the secret is not bytes or is too short to be a key.
    """

    __slots__ = ("_date", "_file", "_patient", "_patient_tag", "_uid", "_uid_cache", "_uid_tag")

    def __init__(self, secret: bytes) -> None:
        if not isinstance(secret, bytes | bytearray) or len(secret) < _MIN_SECRET_BYTES:
            raise KeyMaterialError(
                f"The de-identification secret must be at least {_MIN_SECRET_BYTES} random bytes; "
                "create one with 'fedscan site init'."
            )
        key = bytes(secret)
        self._uid = _subkey(key, "uid")
        self._uid_tag = _subkey(key, "uid-tag")
        self._patient = _subkey(key, "patient-id")
        self._patient_tag = _subkey(key, "patient-id-tag")
        self._date = _subkey(key, "date-shift")
        self._file = _subkey(key, "report-file")
        self._uid_cache: dict[str, str] = {}

    def __repr__(self) -> str:  # never print key material
        return "KeyedPseudonyms(<secret>)"

    # ---- UIDs -------------------------------------------------------------------------------
    def uid(self, uid: str) -> str:
        """Map a UID to its keyed ``2.25.`` pseudonym; our own pseudonyms map to themselves.

        Leading and trailing spaces and NUL padding are ignored, so a UID matches itself however it
        was padded. The empty string stays empty (an empty Type 2 UID).
        """
        text = uid.strip(" \x00")
        if not text:
            return ""
        cache = self._uid_cache
        found = cache.get(text)
        if found is not None:
            return found
        if self.is_own_uid(text):
            result = text
        else:
            payload = bytearray(_mac(self._uid, text.encode("ascii", "replace"))[:_UID_PAYLOAD])
            payload[6] = (payload[6] & 0x0F) | 0x80  # UUID version 8 (custom)
            payload[8] = (payload[8] & 0x3F) | 0x80  # RFC 9562 variant
            tag = _mac(self._uid_tag, bytes(payload))[:_UID_TAG]
            result = _UID_ROOT + str(int.from_bytes(bytes(payload) + tag, "big"))
        if len(cache) < 1_000_000:
            cache[text] = result
        return result

    def is_own_uid(self, uid: str) -> bool:
        """Whether ``uid`` is a pseudonym this secret produced (verifies its tag)."""
        if not uid.startswith(_UID_ROOT):
            return False
        digits = uid[len(_UID_ROOT) :]
        if not digits.isdigit() or digits.startswith("0") or len(digits) > 39:
            return False
        value = int(digits)
        if value >= 1 << 128:
            return False
        raw = value.to_bytes(16, "big")
        payload, tag = raw[:_UID_PAYLOAD], raw[_UID_PAYLOAD:]
        if payload[6] >> 4 != 0x8 or payload[8] >> 6 != 0b10:
            return False
        return hmac.compare_digest(tag, _mac(self._uid_tag, payload)[:_UID_TAG])

    # ---- patients ---------------------------------------------------------------------------
    def patient(self, patient_id: str) -> str:
        """Map a (0010,0020) *Patient ID* to its keyed pseudonym; pseudonyms map to themselves.

        Trailing spaces (value padding) are ignored; the empty ID has a pseudonym too, so that every
        output carries a Patient ID.
        """
        text = patient_id.strip(" \x00")
        if self.is_own_patient(text):
            return text
        payload = _mac(self._patient, text.encode("utf-8"))[:_PATIENT_PAYLOAD]
        tag = _mac(self._patient_tag, payload)[:_PATIENT_TAG]
        return _PATIENT_PREFIX + base64.b32encode(payload + tag).decode("ascii")

    def is_own_patient(self, patient_id: str) -> bool:
        """Whether ``patient_id`` is a patient pseudonym this secret produced."""
        if not patient_id.startswith(_PATIENT_PREFIX) or len(patient_id) != len(_PATIENT_PREFIX) + 24:
            return False
        try:
            raw = base64.b32decode(patient_id[len(_PATIENT_PREFIX) :])
        except (binascii.Error, ValueError):
            return False
        payload, tag = raw[:_PATIENT_PAYLOAD], raw[_PATIENT_PAYLOAD:]
        return hmac.compare_digest(tag, _mac(self._patient_tag, payload)[:_PATIENT_TAG])

    # ---- input files --------------------------------------------------------------------------
    def file_key(self, relative_path: str) -> str:
        """A keyed name for an input file (``f-`` + 20 hex digits), for reports that must not show paths.

        Export paths are often named after patients; a report names a rejected file by this key, and an
        operator holding the secret finds the file by computing the key of each path (the console shows
        the paths themselves).
        """
        return "f-" + _mac(self._file, relative_path.encode("utf-8", "surrogateescape")).hex()[:20]

    # ---- dates and times ----------------------------------------------------------------------
    def temporal_shift(self, patient_id: str) -> TemporalShift:
        """The keyed offset of one patient's dates and times.

        Whole days in -MAX_SHIFT_DAYS..-1 plus seconds in 0..86399, from independent parts of one HMAC
        of the original (0010,0020) *Patient ID*.
        """
        text = patient_id.strip(" \x00")
        digest = _mac(self._date, text.encode("utf-8"))
        days = -(1 + int.from_bytes(digest[:8], "big") % MAX_SHIFT_DAYS)
        return TemporalShift(days, int.from_bytes(digest[8:16], "big") % 86_400)

    def date_shift_days(self, patient_id: str) -> int:
        """The whole-day part of :meth:`temporal_shift` (how far a lone date moves)."""
        return self.temporal_shift(patient_id).days


@lru_cache(maxsize=8)
def _keys(secret: bytes) -> KeyedPseudonyms:
    return KeyedPseudonyms(secret)


def pseudonymize_uid(secret: bytes, uid: str) -> str:
    """The ``2.25.`` UID that replaces ``uid`` under the site ``secret``.

    Deterministic (the same input always gives the same output), one-way without the secret,
    idempotent (``pseudonymize_uid(s, pseudonymize_uid(s, u)) == pseudonymize_uid(s, u)``), and
    consistent with what :class:`~client.deid.engine.Deidentifier` writes, so that ingest can find a
    de-identified study from its original (0020,000D) *Study Instance UID*.
    """
    return _keys(bytes(secret)).uid(uid)


def patient_pseudonym(secret: bytes, patient_id: str) -> str:
    """The pseudonymous (0010,0020) *Patient ID* that replaces ``patient_id`` under ``secret``."""
    return _keys(bytes(secret)).patient(patient_id)
