"""Sealed, hash-chained checkpoints of the global model, one per round, for resuming after a crash.

``<out-dir>/checkpoints/round-NNNN.fseal`` holds, sealed with AES-256-GCM under the server key
(``<out-dir>/keys/server.key``, 0600 in a 0700 folder, created on first use) and bound to the object id
``checkpoint/round-NNNN`` (:mod:`common.crypto`): the global model after round NNNN, the strategy's
state (FedAdam's moments), the round number, the training-configuration digest
(:meth:`common.config.RunConfig.training_digest`) and the SHA-256 of the previous checkpoint's sealed
file. Sealing makes a checkpoint unreadable and unforgeable without the key; the chain makes a deleted,
reordered or substituted checkpoint visible; the digest refuses to resume under another configuration.

The payload is an ``.npz`` (no pickle): ``meta`` (UTF-8 JSON as uint8), ``model_<i>`` and ``state_<i>``.
Files are written atomically, so a crash leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.crypto import SiteKey, generate_key, load_key_file, open_file, seal_file, write_key_file
from common.errors import ConfigError, IntegrityError

__all__ = ["CHECKPOINT_DIR", "Checkpoint", "CheckpointStore", "load_or_create_server_key"]

CHECKPOINT_DIR = "checkpoints"
SERVER_KEY = Path("keys") / "server.key"
_NAME = re.compile(r"^round-(\d{4,})\.fseal$")


def load_or_create_server_key(out_dir: Path) -> SiteKey:
    """The run's server key (``keys/server.key`` under ``out_dir``), created 0600 if it is not there."""
    path = Path(out_dir) / SERVER_KEY
    if not path.exists():
        write_key_file(path, generate_key())
    return load_key_file(path)


@dataclass(frozen=True)
class Checkpoint:
    """One verified checkpoint: the model after ``round`` and what is needed to continue from it."""

    round: int
    arrays: list[np.ndarray]
    strategy_state: list[np.ndarray]
    config_digest: str
    previous_sha256: str
    sha256: str  # of this checkpoint's sealed file: the next one's ``previous_sha256``


def _object_id(server_round: int) -> str:
    return f"checkpoint/round-{server_round:04d}"


def _encode(meta: dict[str, object], arrays: list[np.ndarray], state: list[np.ndarray]) -> bytes:
    named = {"meta": np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)}
    named.update({f"model_{i}": a for i, a in enumerate(arrays)})
    named.update({f"state_{i}": a for i, a in enumerate(state)})
    buffer = io.BytesIO()
    np.savez(buffer, **named)  # type: ignore[arg-type]
    return buffer.getvalue()


def _decode(payload: bytes) -> tuple[dict[str, object], list[np.ndarray], list[np.ndarray]]:
    with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
        meta = json.loads(npz["meta"].tobytes().decode())
        arrays = [npz[f"model_{i}"] for i in range(int(meta["num_arrays"]))]
        state = [npz[f"state_{i}"] for i in range(int(meta["num_state"]))]
    return meta, arrays, state


class CheckpointStore:
    """The checkpoints of one run directory; :meth:`save` after each round, :meth:`latest` to resume."""

    def __init__(self, directory: Path, key: SiteKey) -> None:
        self.directory = Path(directory)
        self.key = key

    @classmethod
    def for_run(cls, out_dir: Path) -> CheckpointStore:
        """The store under ``out_dir/checkpoints``, with the run's server key (created if needed)."""
        return cls(Path(out_dir) / CHECKPOINT_DIR, load_or_create_server_key(Path(out_dir)))

    def path(self, server_round: int) -> Path:
        return self.directory / f"round-{server_round:04d}.fseal"

    def rounds(self) -> list[int]:
        """Round numbers that have a checkpoint file, in order (not yet verified)."""
        if not self.directory.exists():
            return []
        found = (_NAME.match(p.name) for p in self.directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def save(
        self,
        server_round: int,
        arrays: list[np.ndarray],
        strategy_state: list[np.ndarray],
        *,
        config_digest: str,
    ) -> Path:
        """Seal the model after ``server_round``, chained to the checkpoint of the round before."""
        previous = self.path(server_round - 1)
        previous_sha = hashlib.sha256(previous.read_bytes()).hexdigest() if previous.exists() else ""
        meta = {
            "format": 1,
            "round": server_round,
            "config_sha256": config_digest,
            "previous_sha256": previous_sha,
            "num_arrays": len(arrays),
            "num_state": len(strategy_state),
        }
        path = self.path(server_round)
        self.directory.mkdir(parents=True, exist_ok=True)
        seal_file(self.key, _encode(meta, arrays, strategy_state), path, object_id=_object_id(server_round))
        return path

    def load(self, server_round: int) -> Checkpoint:
        """Open and decode one checkpoint (IntegrityError if it was edited, swapped or renamed)."""
        path = self.path(server_round)
        meta, arrays, state = _decode(open_file(self.key, path, object_id=_object_id(server_round)))
        if meta.get("round") != server_round:
            raise IntegrityError(f"Checkpoint {path.name} says it is round {meta.get('round')}.")
        return Checkpoint(
            round=server_round,
            arrays=arrays,
            strategy_state=state,
            config_digest=str(meta["config_sha256"]),
            previous_sha256=str(meta["previous_sha256"]),
            sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        )

    def latest(self, config_digest: str) -> Checkpoint | None:
        """The last checkpoint of an unbroken, verified chain from round 1; ``None`` if there is none.

        Raises
        ------
        IntegrityError
            A checkpoint does not open under the server key, or the chain is broken (a round missing,
            or a checkpoint that does not name its predecessor's hash).
        ConfigError
            The checkpoints were written under another training configuration.
        """
        rounds = self.rounds()
        if not rounds:
            return None
        if rounds != list(range(1, rounds[-1] + 1)):
            raise IntegrityError(f"Checkpoints in {self.directory} are not a gapless chain: rounds {rounds}.")
        previous_sha = ""
        checkpoint = None
        for server_round in rounds:
            checkpoint = self.load(server_round)
            if checkpoint.previous_sha256 != previous_sha:
                raise IntegrityError(
                    f"Checkpoint chain broken at round {server_round}: it does not name the hash of the "
                    f"checkpoint before it."
                )
            if checkpoint.config_digest != config_digest:
                raise ConfigError(
                    f"Checkpoint of round {server_round} was written under another training configuration "
                    f"({checkpoint.config_digest[:12]}..., this run {config_digest[:12]}...); resume with "
                    f"the same settings or start a new run directory."
                )
            previous_sha = checkpoint.sha256
        return checkpoint
