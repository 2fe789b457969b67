"""Crash-safe writes: a failed write leaves the old file, durable or not; modes from the start."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from common.fsio import atomic_writer, sync_filesystem, write_atomic


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


def test_sync_filesystem_flushes_and_names_a_missing_path(tmp_path: Path) -> None:
    sync_filesystem(tmp_path)  # returns once the file system's dirty pages are on disk
    with pytest.raises(FileNotFoundError):
        sync_filesystem(tmp_path / "missing")
