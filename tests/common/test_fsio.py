"""Crash-safe writes: a failed write leaves the old file, durable or not; modes from the start."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from common.fsio import atomic_writer, start_writeback, sync_filesystem, write_atomic


@pytest.mark.parametrize("durable", [True, False])
def test_a_write_that_raises_leaves_the_old_content_and_no_temporary_file(
    tmp_path: Path, durable: bool
) -> None:
    target = tmp_path / "out.dcm"
    write_atomic(target, b"old")
    with pytest.raises(RuntimeError), atomic_writer(target, durable=durable) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.dcm"]


@pytest.mark.parametrize("durable", [True, False])
def test_a_completed_write_replaces_the_file_with_the_requested_mode(tmp_path: Path, durable: bool) -> None:
    target = tmp_path / "sub" / "out.dcm"
    with atomic_writer(target, mode=0o600, durable=durable) as handle:
        handle.write(b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o277])
@pytest.mark.parametrize("mode", [0o600, 0o644, 0o640])
def test_the_mode_holds_whatever_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    target = tmp_path / "out.dcm"
    previous = os.umask(umask)
    try:
        with atomic_writer(target, mode=mode, durable=False) as handle:
            handle.write(b"new")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(target.stat().st_mode) == mode


def test_sync_filesystem_flushes_and_names_a_missing_path(tmp_path: Path) -> None:
    sync_filesystem(tmp_path)  # returns once the file system's dirty pages are on disk
    with pytest.raises(FileNotFoundError):
        sync_filesystem(tmp_path / "missing")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux only")
def test_start_writeback_is_taken_for_a_file_and_refused_for_a_pipe(tmp_path: Path) -> None:
    with open(tmp_path / "out.dcm", "wb") as handle:
        handle.write(os.urandom(1 << 20))
        handle.flush()
        assert start_writeback(handle.fileno())
    assert (tmp_path / "out.dcm").stat().st_size == 1 << 20
    read_end, write_end = os.pipe()
    try:
        assert not start_writeback(write_end)  # ESPIPE: the binding passes the arguments through
    finally:
        os.close(read_end)
        os.close(write_end)
