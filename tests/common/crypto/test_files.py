"""Sealed files: atomic writes (including a SIGKILL mid-write), header peeks, and key rotation."""

from __future__ import annotations

import io
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import common.crypto.rotation as rotation
from common.crypto import (
    Keyring,
    generate_key,
    open_file,
    read_header,
    rewrap_file,
    seal_file,
)
from common.crypto.format import HEADER_SIZE, PREFIX_SIZE
from common.crypto.rotation import journal_path
from common.errors import IntegrityError

OID = "site-a/shard-000007"
DATA = bytes(range(256)) * 40  # 10 KiB: several chunks at chunk_size=1024


def test_seal_file_round_trip_and_mode(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "store" / "a.fseal"
    seal_file(key, DATA, path, object_id=OID, chunk_size=1024)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert open_file(key, path, object_id=OID) == DATA
    assert open_file(Keyring([generate_key(), key]), path, object_id=OID) == DATA
    assert [p.name for p in path.parent.iterdir()] == ["a.fseal"]


def test_seal_file_from_a_stream_and_memoryview(tmp_path: Path) -> None:
    key = generate_key()
    seal_file(key, io.BytesIO(DATA), tmp_path / "s.fseal", object_id=OID)
    seal_file(key, memoryview(DATA), tmp_path / "m.fseal", object_id=OID)
    assert open_file(key, tmp_path / "s.fseal", object_id=OID) == DATA
    assert open_file(key, tmp_path / "m.fseal", object_id=OID) == DATA


def test_open_file_refuses_another_object_id_or_key(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "a.fseal"
    seal_file(key, DATA, path, object_id=OID)
    with pytest.raises(IntegrityError, match="'other' failed authentication"):
        open_file(key, path, object_id="other")
    with pytest.raises(IntegrityError):
        open_file(generate_key(), path, object_id=OID)


def test_read_header(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "a.fseal"
    seal_file(key, DATA, path, object_id=OID, chunk_size=4096)
    header = read_header(path)
    assert (header.version, header.key_id, header.chunk_size, header.size) == (
        1,
        key.key_id,
        4096,
        HEADER_SIZE,
    )
    assert "wrapped_key" not in repr(header)
    path.write_bytes(b"not a sealed object at all, but long enough to hold a header" * 3)
    with pytest.raises(IntegrityError):
        read_header(path)


# ---- a crash while sealing -----------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import io, sys, time
    from pathlib import Path
    from common.crypto import SiteKey, seal_file

    class SlowZeros(io.RawIOBase):
        # Endless-looking source: announces itself after 8 MiB, then trickles so the parent can kill it.
        def __init__(self):
            self.sent = 0
        def readable(self):
            return True
        def readinto(self, buffer):
            if self.sent >= 8 << 20:
                if self.sent == 8 << 20:
                    print("writing", flush=True)
                time.sleep(0.01)
            size = min(len(buffer), 1 << 20)
            buffer[:size] = bytes(size)
            self.sent += size
            return size

    key = SiteKey.from_material(bytes.fromhex(sys.argv[1]))
    seal_file(key, SlowZeros(), Path(sys.argv[2]), object_id="big")
    """
)


def test_sigkill_during_seal_file_leaves_previous_file_intact(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "big.fseal"
    seal_file(key, b"previous version", path, object_id="big")
    before = path.read_bytes()

    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, key.material.hex(), str(path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "writing"
        partial = [p for p in tmp_path.iterdir() if p.name != "big.fseal"]
        assert partial and partial[0].stat().st_size >= 4 << 20  # killed mid-write, for real
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    assert path.read_bytes() == before
    assert open_file(key, path, object_id="big") == b"previous version"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "big.fseal"]
    assert all(name.startswith(".big.fseal.") and name.endswith(".tmp") for name in leftovers)


# ---- rotation ------------------------------------------------------------------------------------


def test_rewrap_moves_the_object_to_the_new_key(tmp_path: Path) -> None:
    old, new = generate_key(), generate_key()
    path = tmp_path / "a.fseal"
    seal_file(old, DATA, path, object_id=OID, chunk_size=1024)
    before = path.read_bytes()

    rewrap_file(path, old, new, object_id=OID)

    after = path.read_bytes()
    assert after[HEADER_SIZE:] == before[HEADER_SIZE:]  # payload untouched
    assert after[:PREFIX_SIZE] == before[:PREFIX_SIZE]
    assert after[:HEADER_SIZE] != before[:HEADER_SIZE]
    assert read_header(path).key_id == new.key_id
    assert open_file(new, path, object_id=OID) == DATA
    with pytest.raises(IntegrityError):
        open_file(old, path, object_id=OID)  # the old key is no longer needed, nor sufficient
    assert not journal_path(path).exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_rewrap_with_a_keyring_and_back(tmp_path: Path) -> None:
    old, new = generate_key(), generate_key()
    path = tmp_path / "a.fseal"
    seal_file(old, DATA, path, object_id=OID)
    rewrap_file(path, Keyring([new, old]), new, object_id=OID)
    rewrap_file(path, Keyring([new, old]), old, object_id=OID)
    assert open_file(old, path, object_id=OID) == DATA


def test_rewrap_with_the_wrong_key_or_id_changes_nothing(tmp_path: Path) -> None:
    old, new = generate_key(), generate_key()
    path = tmp_path / "a.fseal"
    seal_file(old, DATA, path, object_id=OID)
    before = path.read_bytes()
    with pytest.raises(IntegrityError):
        rewrap_file(path, new, new, object_id=OID)
    with pytest.raises(IntegrityError):
        rewrap_file(path, old, new, object_id="another-object")
    assert path.read_bytes() == before and not journal_path(path).exists()


@pytest.mark.parametrize("torn_at", range(0, HEADER_SIZE + 1, 4))
def test_crash_while_rewriting_the_header_never_loses_both_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, torn_at: int
) -> None:
    # Simulate a power cut during step 3: only the first `torn_at` bytes of the new header land.
    old, new = generate_key(), generate_key()
    path = tmp_path / "a.fseal"
    seal_file(old, DATA, path, object_id=OID, chunk_size=1024)

    real_pwrite = os.pwrite

    def torn_pwrite(fd: int, data: bytes, offset: int) -> int:
        real_pwrite(fd, data[:torn_at], offset)
        raise OSError("simulated power cut")

    with monkeypatch.context() as patch:
        patch.setattr(rotation.os, "pwrite", torn_pwrite, raising=True)
        with pytest.raises(OSError, match="simulated"):
            rewrap_file(path, old, new, object_id=OID)

    assert journal_path(path).exists()
    assert open_file(old, path, object_id=OID) == DATA  # through the journal if the header is torn
    assert open_file(Keyring([old, new]), path, object_id=OID) == DATA
    assert read_header(path).chunk_size == 1024

    rewrap_file(path, old, new, object_id=OID)  # running the rotation again completes it
    assert open_file(new, path, object_id=OID) == DATA
    assert not journal_path(path).exists()


def test_crash_after_the_header_write_opens_under_either_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = generate_key(), generate_key()
    path = tmp_path / "a.fseal"
    seal_file(old, DATA, path, object_id=OID)

    def lost_unlink(target: Path) -> None:
        raise OSError("simulated crash before the journal was removed")

    with monkeypatch.context() as patch:
        patch.setattr(rotation, "discard_journal", lost_unlink)
        with pytest.raises(OSError, match="simulated"):
            rewrap_file(path, old, new, object_id=OID)

    assert journal_path(path).exists()
    assert open_file(new, path, object_id=OID) == DATA
    assert open_file(old, path, object_id=OID) == DATA
    rewrap_file(path, new, new, object_id=OID)
    assert not journal_path(path).exists()
    with pytest.raises(IntegrityError):
        open_file(old, path, object_id=OID)


def test_a_journal_of_a_replaced_object_is_ignored(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "a.fseal"
    seal_file(key, b"first", path, object_id=OID)
    stale = path.read_bytes()[:HEADER_SIZE]
    seal_file(key, b"second", path, object_id=OID)
    journal_path(path).write_bytes(stale)  # as if left by a crashed rotation of the first object
    blob = bytearray(path.read_bytes())
    blob[PREFIX_SIZE] ^= 1  # and the live header is damaged
    path.write_bytes(bytes(blob))
    with pytest.raises(IntegrityError):
        open_file(key, path, object_id=OID)
    with pytest.raises(IntegrityError):
        rewrap_file(path, key, generate_key(), object_id=OID)


def test_seal_file_removes_a_stale_journal(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "a.fseal"
    seal_file(key, b"first", path, object_id=OID)
    journal_path(path).write_bytes(path.read_bytes()[:HEADER_SIZE])
    seal_file(key, b"second", path, object_id=OID)
    assert not journal_path(path).exists()
