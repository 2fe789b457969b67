"""Generate ``tests/vectors/sealed_v1.json``: known-answer vectors for the sealed-object format v1.

The vectors go through the private deterministic seam ``common.crypto.stream._seal_stream_with`` with
fixed site key, data key, nonce prefix and wrap nonce (never do that outside tests: fixed nonces under
a fixed key are exactly what GCM must never see twice). Regenerate only when the format version
changes; a diff in this file for an unchanged format is a bug.

Run: ``/work/venv/bin/python tests/vectors/make_sealed_vectors.py``
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from common.crypto.keys import SiteKey
from common.crypto.stream import _seal_stream_with

OUT = Path(__file__).with_name("sealed_v1.json")

SITE_KEY = bytes(range(32))
DATA_KEY = bytes(range(0x40, 0x60))
NONCE_PREFIX = bytes.fromhex("a0a1a2a3a4a5a6a7")
WRAP_NONCE = bytes.fromhex("b0b1b2b3b4b5b6b7b8b9babb")
OBJECT_ID = "site-a/shard-000001"
CHUNK_SIZE = 64
#: Empty, one byte, one chunk minus one, exactly one chunk, two and a half chunks.
SIZES = (0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE * 5 // 2)


def plaintext(size: int) -> bytes:
    """A deterministic, non-repeating-looking plaintext of ``size`` bytes."""
    return bytes((7 * i + 3) % 251 for i in range(size))


def build() -> dict[str, object]:
    """Seal every size through the seam and return the JSON document."""
    key = SiteKey.from_material(SITE_KEY)
    vectors = []
    for size in SIZES:
        out = io.BytesIO()
        _seal_stream_with(
            key,
            io.BytesIO(plaintext(size)),
            out,
            object_id=OBJECT_ID,
            chunk_size=CHUNK_SIZE,
            data_key=DATA_KEY,
            nonce_prefix=NONCE_PREFIX,
            wrap_nonce=WRAP_NONCE,
        )
        vectors.append({"size": size, "plaintext": plaintext(size).hex(), "sealed": out.getvalue().hex()})
    return {
        "format": "fedscan sealed object v1 (docs/sealed-format.md)",
        "site_key": SITE_KEY.hex(),
        "site_key_id": key.key_id,
        "data_key": DATA_KEY.hex(),
        "nonce_prefix": NONCE_PREFIX.hex(),
        "wrap_nonce": WRAP_NONCE.hex(),
        "object_id": OBJECT_ID,
        "chunk_size": CHUNK_SIZE,
        "vectors": vectors,
    }


def main() -> None:
    OUT.write_text(json.dumps(build(), indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
