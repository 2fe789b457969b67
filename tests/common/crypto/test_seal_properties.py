"""Property tests for seal/open: round trips, and every kind of tampering fails with one message.

Small chunk sizes (16-100 bytes) give objects of many chunks while staying fast.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.crypto import (
    Keyring,
    generate_key,
    open_bytes,
    open_stream,
    seal_bytes,
    seal_stream,
)
from common.crypto.format import HEADER_SIZE, sealed_size
from common.errors import ConfigError, IntegrityError

KEY = generate_key()
OTHER_KEY = generate_key()
OID = "site-a/record-1"
QUICK = settings(max_examples=60, deadline=None)

payloads = st.binary(max_size=64 * 5)
chunk_sizes = st.sampled_from([16, 64, 100])


def _fails(blob: bytes, *, keys: object = KEY, object_id: str = OID) -> None:
    message = f"sealed object {object_id!r} failed authentication"
    with pytest.raises(IntegrityError, match=f"^{re.escape(message)}$"):
        open_bytes(keys, blob, object_id=object_id)  # type: ignore[arg-type]


def _chunks(blob: bytes, chunk_size: int) -> list[bytes]:
    body, step = blob[HEADER_SIZE:], chunk_size + 16
    return [body[i : i + step] for i in range(0, len(body), step)]


@QUICK
@given(data=payloads, chunk_size=chunk_sizes)
def test_round_trip(data: bytes, chunk_size: int) -> None:
    blob = seal_bytes(KEY, data, object_id=OID, chunk_size=chunk_size)
    assert len(blob) == sealed_size(len(data), chunk_size)
    assert open_bytes(KEY, blob, object_id=OID) == data
    assert open_bytes(Keyring([OTHER_KEY, KEY]), blob, object_id=OID) == data


@QUICK
@given(data=payloads, chunk_size=chunk_sizes)
def test_streams_round_trip(data: bytes, chunk_size: int) -> None:
    sealed = io.BytesIO()
    written = seal_stream(KEY, io.BytesIO(data), sealed, object_id=OID, chunk_size=chunk_size)
    assert written == len(sealed.getvalue())
    plain = io.BytesIO()
    assert open_stream(KEY, io.BytesIO(sealed.getvalue()), plain, object_id=OID) == len(data)
    assert plain.getvalue() == data


@QUICK
@given(data=payloads, chunk_size=chunk_sizes, where=st.integers(min_value=0), bits=st.integers(1, 255))
def test_flipping_any_byte_fails(data: bytes, chunk_size: int, where: int, bits: int) -> None:
    blob = bytearray(seal_bytes(KEY, data, object_id=OID, chunk_size=chunk_size))
    blob[where % len(blob)] ^= bits
    _fails(bytes(blob))


@QUICK
@given(data=payloads, chunk_size=chunk_sizes, cut=st.integers(min_value=0))
def test_truncating_anywhere_fails(data: bytes, chunk_size: int, cut: int) -> None:
    blob = seal_bytes(KEY, data, object_id=OID, chunk_size=chunk_size)
    _fails(blob[: cut % len(blob)])


@QUICK
@given(data=st.binary(min_size=1, max_size=64 * 5), chunk_size=chunk_sizes)
def test_truncating_at_every_chunk_boundary_fails(data: bytes, chunk_size: int) -> None:
    blob = seal_bytes(KEY, data, object_id=OID, chunk_size=chunk_size)
    for boundary in range(HEADER_SIZE, len(blob), chunk_size + 16):
        _fails(blob[:boundary])


@QUICK
@given(data=payloads, chunk_size=chunk_sizes, extra=st.binary(min_size=1, max_size=200))
def test_appending_fails(data: bytes, chunk_size: int, extra: bytes) -> None:
    _fails(seal_bytes(KEY, data, object_id=OID, chunk_size=chunk_size) + extra)


@QUICK
@given(data=st.binary(min_size=33, max_size=64 * 5), chunk_size=st.sampled_from([16, 32]), pick=st.data())
def test_reordering_chunks_fails(data: bytes, chunk_size: int, pick: st.DataObject) -> None:
    blob = seal_bytes(KEY, data, object_id=OID, chunk_size=chunk_size)
    chunks = _chunks(blob, chunk_size)
    order = pick.draw(st.permutations(range(len(chunks))))
    if list(order) == sorted(order):
        order = order[1:] + order[:1]
    _fails(blob[:HEADER_SIZE] + b"".join(chunks[i] for i in order))


@QUICK
@given(a=payloads, b=payloads, chunk_size=chunk_sizes, pick=st.data())
def test_swapping_chunks_between_objects_fails(
    a: bytes, b: bytes, chunk_size: int, pick: st.DataObject
) -> None:
    # Same key, same object id, same sizes' worth of chunks: only the per-object data key differs.
    blob_a = seal_bytes(KEY, a, object_id=OID, chunk_size=chunk_size)
    blob_b = seal_bytes(KEY, b, object_id=OID, chunk_size=chunk_size)
    chunks_a, chunks_b = _chunks(blob_a, chunk_size), _chunks(blob_b, chunk_size)
    index = pick.draw(st.integers(0, min(len(chunks_a), len(chunks_b)) - 1))
    chunks_a[index] = chunks_b[index]
    _fails(blob_a[:HEADER_SIZE] + b"".join(chunks_a))


@QUICK
@given(a=payloads, b=payloads, chunk_size=chunk_sizes)
def test_swapping_headers_fails(a: bytes, b: bytes, chunk_size: int) -> None:
    blob_a = seal_bytes(KEY, a, object_id=OID, chunk_size=chunk_size)
    blob_b = seal_bytes(KEY, b, object_id=OID, chunk_size=chunk_size)
    _fails(blob_b[:HEADER_SIZE] + blob_a[HEADER_SIZE:])


@QUICK
@given(data=payloads, other=st.text(min_size=1, max_size=40).filter(lambda s: s != OID))
def test_wrong_object_id_fails(data: bytes, other: str) -> None:
    _fails(seal_bytes(KEY, data, object_id=OID, chunk_size=64), object_id=other)


@QUICK
@given(data=payloads)
def test_wrong_or_unknown_key_fails(data: bytes) -> None:
    blob = seal_bytes(KEY, data, object_id=OID, chunk_size=64)
    _fails(blob, keys=OTHER_KEY)
    _fails(blob, keys=Keyring([OTHER_KEY]))


def test_empty_object_is_one_final_empty_chunk() -> None:
    blob = seal_bytes(KEY, b"", object_id=OID, chunk_size=64)
    assert len(blob) == HEADER_SIZE + 16
    _fails(blob[:HEADER_SIZE])


def test_truncated_stream_does_not_report_success() -> None:
    blob = seal_bytes(KEY, bytes(1000), object_id=OID, chunk_size=64)
    with pytest.raises(IntegrityError):
        open_stream(KEY, io.BytesIO(blob[:-80]), io.BytesIO(), object_id=OID)


@pytest.mark.parametrize("object_id", ["", None, "x" * 70000])
def test_bad_object_id_is_a_config_error(object_id: object) -> None:
    with pytest.raises(ConfigError):
        seal_bytes(KEY, b"data", object_id=object_id)  # type: ignore[arg-type]


@pytest.mark.parametrize("chunk_size", [0, 15, 1 << 25, 1.5])
def test_bad_chunk_size_is_a_config_error(chunk_size: object) -> None:
    with pytest.raises(ConfigError):
        seal_bytes(KEY, b"data", object_id=OID, chunk_size=chunk_size)  # type: ignore[arg-type]


class _Trickle(io.RawIOBase):
    """A source that returns at most 7 bytes per read, like a pipe or socket."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        size = min(7, len(buffer), len(self._data))
        buffer[:size] = self._data[:size]
        self._data = self._data[size:]
        return size


def test_short_reads_do_not_end_chunks_early() -> None:
    data = bytes(range(256)) * 3
    sealed = io.BytesIO()
    seal_stream(KEY, _Trickle(data), sealed, object_id=OID, chunk_size=64)  # type: ignore[arg-type]
    assert sealed.getvalue()[HEADER_SIZE:] and len(sealed.getvalue()) == sealed_size(len(data), 64)
    assert open_bytes(KEY, sealed.getvalue(), object_id=OID) == data


def test_large_chunks_through_an_os_file_use_the_writer_thread(tmp_path: Path) -> None:
    # 3.5 chunks of 64 KiB through real files: the overlapped-write path, both directions.
    data = bytes(range(256)) * (64 * 14)
    path = tmp_path / "big.fseal"
    with open(path, "wb") as dst:
        seal_stream(KEY, io.BytesIO(data), dst, object_id=OID, chunk_size=1 << 16)
    with open(path, "rb") as src, open(tmp_path / "plain", "wb") as dst:
        assert open_stream(KEY, src, dst, object_id=OID) == len(data)
    assert (tmp_path / "plain").read_bytes() == data
    truncated = path.read_bytes()[: -(1 << 16)]
    with pytest.raises(IntegrityError), open(tmp_path / "plain2", "wb") as dst:
        open_stream(KEY, io.BytesIO(truncated), dst, object_id=OID)
