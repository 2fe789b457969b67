"""Canonical JSON and SHA-256: the exact bytes fedscan hashes and signs.

Canonical form: ``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
allow_nan=False)`` encoded as ASCII. Keys sorted by code point, no whitespace, every non-ASCII
character escaped as ``\\uXXXX`` (so the bytes are plain ASCII, hence valid UTF-8), integers in
decimal, floats in Python's shortest round-trip form, ``NaN`` and infinities refused. Audit details
and model cards hold only ids, counts, hashes and numbers, for which this agrees with RFC 8785 (JCS)
except for the spelling of some floats (e.g. ``1e-07`` vs ``1e-7``); a verifier never needs to
re-encode: it hashes the bytes as stored.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["canonical_json", "sha256_hex"]


def canonical_json(value: Any) -> bytes:
    """Encode ``value`` in fedscan's canonical JSON (see the module docstring).

    Raises
    ------
    ValueError
        If ``value`` holds a NaN or an infinity.
    TypeError
        If ``value`` holds something JSON cannot represent.
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def sha256_hex(data: bytes) -> str:
    """Lowercase hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()
