"""Sealed, hash-chained checkpoints: round trip, tamper evidence, config binding, key permissions."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from common.errors import ConfigError, IntegrityError
from server.checkpoints import CheckpointStore, load_or_create_server_key

ARRAYS = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([7], dtype=np.int64)]


def _run(tmp_path: Path, rounds: int = 3) -> CheckpointStore:
    store = CheckpointStore.for_run(tmp_path)
    for r in range(1, rounds + 1):
        store.save(
            r, [a + r for a in ARRAYS], [np.full(2, r, np.float64)] if r > 1 else [], config_digest="cfg"
        )
    return store


def test_latest_returns_the_last_round_with_arrays_and_state(tmp_path: Path) -> None:
    latest = _run(tmp_path).latest("cfg")
    assert latest is not None and latest.round == 3
    np.testing.assert_array_equal(latest.arrays[0], ARRAYS[0] + 3)
    assert latest.arrays[1].dtype == np.int64
    np.testing.assert_array_equal(latest.strategy_state[0], [3.0, 3.0])
    assert CheckpointStore.for_run(tmp_path / "other").latest("cfg") is None


def test_server_key_is_private_and_checkpoints_are_not_plaintext(tmp_path: Path) -> None:
    store = _run(tmp_path)
    key_file = tmp_path / "keys" / "server.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(key_file.parent).st_mode) == 0o700
    assert load_or_create_server_key(tmp_path).material == store.key.material  # reused, not replaced
    assert (ARRAYS[0] + 1).tobytes() not in store.path(1).read_bytes()


def test_swapped_deleted_or_foreign_checkpoints_are_refused(tmp_path: Path) -> None:
    store = _run(tmp_path)
    with pytest.raises(ConfigError, match="another training configuration"):
        store.latest("other-config")
    # A checkpoint renamed to another round does not open (object id bound in the seal).
    shutil.copy(store.path(1), store.path(2))
    with pytest.raises(IntegrityError):
        store.latest("cfg")
    # A round missing from the chain.
    store = _run(tmp_path / "b")
    store.path(2).unlink()
    with pytest.raises(IntegrityError, match="gapless"):
        store.latest("cfg")
    # A checkpoint from another run, sealed under another key.
    other = _run(tmp_path / "c")
    store = _run(tmp_path / "d")
    shutil.copy(other.path(3), store.path(3))
    with pytest.raises(IntegrityError):
        store.latest("cfg")


def test_a_rewritten_earlier_checkpoint_breaks_the_chain(tmp_path: Path) -> None:
    store = _run(tmp_path)
    store.save(2, ARRAYS, [], config_digest="cfg")  # same key, new content: round 3 no longer chains
    with pytest.raises(IntegrityError, match="chain broken at round 3"):
        store.latest("cfg")
