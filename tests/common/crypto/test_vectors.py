"""Known-answer vectors for the sealed-object format v1 (``tests/vectors/sealed_v1.json``).

Three independent checks: the deterministic seam reproduces every vector byte for byte; the public
``open_bytes`` opens them; and a from-scratch reader written here from ``docs/sealed-format.md`` alone
(with pyca/cryptography directly) decrypts them, so the implementation and the document cannot drift
apart together.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from common.crypto import SiteKey, open_bytes, read_header
from common.crypto.stream import _seal_stream_with

VECTORS_FILE = Path(__file__).resolve().parents[2] / "vectors" / "sealed_v1.json"
DOC = json.loads(VECTORS_FILE.read_text())
CASES = DOC["vectors"]


def _ids(case: dict[str, Any]) -> str:
    return f"size={case['size']}"


def test_vector_sizes_cover_the_edges() -> None:
    chunk = DOC["chunk_size"]
    assert [c["size"] for c in CASES] == [0, 1, chunk - 1, chunk, chunk * 5 // 2]


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_seam_reproduces_vector(case: dict[str, Any]) -> None:
    key = SiteKey.from_material(bytes.fromhex(DOC["site_key"]))
    assert key.key_id == DOC["site_key_id"]
    out = io.BytesIO()
    written = _seal_stream_with(
        key,
        io.BytesIO(bytes.fromhex(case["plaintext"])),
        out,
        object_id=DOC["object_id"],
        chunk_size=DOC["chunk_size"],
        data_key=bytes.fromhex(DOC["data_key"]),
        nonce_prefix=bytes.fromhex(DOC["nonce_prefix"]),
        wrap_nonce=bytes.fromhex(DOC["wrap_nonce"]),
    )
    assert out.getvalue().hex() == case["sealed"]
    assert written == len(out.getvalue())


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_open_bytes_opens_vector(case: dict[str, Any]) -> None:
    key = SiteKey.from_material(bytes.fromhex(DOC["site_key"]))
    plain = open_bytes(key, bytes.fromhex(case["sealed"]), object_id=DOC["object_id"])
    assert plain.hex() == case["plaintext"]


def test_read_header_of_vector(tmp_path: Path) -> None:
    path = tmp_path / "v.fseal"
    path.write_bytes(bytes.fromhex(CASES[-1]["sealed"]))
    header = read_header(path)
    assert (header.version, header.chunk_size, header.key_id) == (1, DOC["chunk_size"], DOC["site_key_id"])
    assert header.nonce_prefix.hex() == DOC["nonce_prefix"]


def _reference_open(site_key: bytes, blob: bytes, object_id: str) -> bytes:
    """Open a v1 object following docs/sealed-format.md only (no fedscan code)."""
    prefix, key_id, wrap_nonce, wrapped = blob[:20], blob[20:28], blob[28:40], blob[40:88]
    magic, version, flags, chunk_size, nonce_prefix = struct.unpack(">5sBHI8s", prefix)
    assert (magic, version, flags) == (b"FSEAL", 1, 0)
    assert key_id == hashlib.sha256(b"fedscan key-id v1\x00" + site_key).digest()[:8]
    oid = object_id.encode()
    framed = struct.pack(">H", len(oid)) + oid
    wrap_key = HKDF(hashes.SHA256(), 32, None, b"fedscan seal v1 wrap-key").derive(site_key)
    data_key = AESGCM(wrap_key).decrypt(
        wrap_nonce, wrapped, b"fedscan-seal v1 wrap\x00" + prefix + key_id + framed
    )
    body = blob[88:]
    step = chunk_size + 16
    chunks = [body[i : i + step] for i in range(0, len(body), step)] or [b""]
    plain = b""
    for index, chunk in enumerate(chunks):
        final = index == len(chunks) - 1
        nonce = nonce_prefix + struct.pack(">I", index)
        aad = b"fedscan-seal v1 chunk\x00" + prefix + framed + struct.pack(">IB", index, final)
        plain += AESGCM(data_key).decrypt(nonce, chunk, aad)
    return plain


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_vector_matches_the_written_format(case: dict[str, Any]) -> None:
    plain = _reference_open(bytes.fromhex(DOC["site_key"]), bytes.fromhex(case["sealed"]), DOC["object_id"])
    assert plain.hex() == case["plaintext"]
