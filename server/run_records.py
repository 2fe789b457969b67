"""What a training run leaves at the aggregator: per-round metrics (JSONL) and the final model.

Only model parameters and aggregate metrics are ever here: the server never sees anything else.
``metrics.jsonl`` has one line per finished round, appended when the round ends (so a crash loses at
most the round in progress); on resume, lines after the checkpoint the run restarts from are dropped,
so the file always describes the rounds that led to the current model.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from common.fsio import write_atomic

__all__ = ["METRICS_FILE", "MODEL_FILE", "RoundRecord", "RunRecorder", "read_round_records"]

METRICS_FILE = "metrics.jsonl"
MODEL_FILE = "final_model.npz"


@dataclass
class RoundRecord:
    """One round, as aggregated across sites.

    The federated metrics (``accuracy`` ... ``f1``, ``per_class``) are those of the *union* of the
    sites' held-out splits, computed from the confusion counts and score histograms the sites send
    (``common.metrics``); ``per_site`` has each site's own accuracy and size; ``central`` holds the
    metrics on the server's public test set when it has one. Times are wall-clock seconds;
    ``site_compute_seconds`` is the sum over sites of the time their ClientApps spent in local training
    and evaluation (what the round would cost without any federation machinery, run one site at a time).
    """

    round: int
    sites_fit: int = 0
    failures: int = 0
    train_loss: float | None = None
    sites_evaluated: int = 0
    eval_loss: float | None = None
    accuracy: float | None = None
    examples_evaluated: int = 0
    balanced_accuracy: float | None = None
    auc: float | None = None
    sensitivity: float | None = None
    specificity: float | None = None
    f1: float | None = None
    per_class: dict[str, Any] = field(default_factory=dict)
    per_site: dict[str, Any] = field(default_factory=dict)
    central: dict[str, Any] | None = None
    rejected: list[str] = field(default_factory=list)
    started_at: float | None = None
    fit_seconds: float | None = None
    round_seconds: float | None = None
    site_compute_seconds: float = 0.0
    # SecAgg+ parameters, dropouts, site refusal codes, federation-level epsilon (server/privacy.py).
    privacy: dict[str, Any] = field(default_factory=dict)
    # Sites whose update was aggregated: site id -> examples, epsilon, manifest hash (server/audit_trail.py).
    participants: dict[str, Any] = field(default_factory=dict)


def _finite(value: Any) -> Any:
    """JSON has no NaN: undefined metrics (a class absent everywhere) are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


class RunRecorder:
    """Collects round records; appends each finished round to ``out_dir/metrics.jsonl`` if set.

    ``keep_until``: resume mode. Records of rounds up to it are kept (read back from the file), later
    ones dropped; ``None`` starts a fresh file.
    """

    def __init__(self, out_dir: str | Path | None, *, keep_until: int | None = None) -> None:
        self.out_dir = Path(out_dir) if out_dir else None
        self.rounds: dict[int, RoundRecord] = {}
        if self.out_dir is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if keep_until is not None:
            self.rounds = {r.round: r for r in read_round_records(self.out_dir) if r.round <= keep_until}
        lines = "".join(self._line(r) for r in sorted(self.rounds.values(), key=lambda r: r.round))
        write_atomic(self.out_dir / METRICS_FILE, lines.encode())

    @staticmethod
    def _line(record: RoundRecord) -> str:
        return json.dumps(_finite(asdict(record)), sort_keys=True) + "\n"

    def round(self, server_round: int) -> RoundRecord:
        return self.rounds.setdefault(server_round, RoundRecord(round=server_round))

    def finish_round(self, server_round: int) -> None:
        if self.out_dir is None:
            return
        with (self.out_dir / METRICS_FILE).open("a") as handle:
            handle.write(self._line(self.round(server_round)))

    def save_model(self, arrays: list[np.ndarray], *, config_digest: str) -> Path | None:
        if self.out_dir is None:
            return None
        buffer = io.BytesIO()
        np.savez(buffer, *arrays)
        path = self.out_dir / MODEL_FILE
        write_atomic(path, buffer.getvalue())
        write_atomic(
            self.out_dir / "final_model.json",
            json.dumps(
                {
                    "config_sha256": config_digest,
                    "rounds": max(self.rounds, default=0),
                    "arrays": len(arrays),
                }
            ).encode(),
        )
        return path


def read_round_records(out_dir: Path) -> list[RoundRecord]:
    """Parse ``metrics.jsonl`` (rounds completed so far); unknown keys from newer writers are ignored."""
    path = Path(out_dir) / METRICS_FILE
    if not path.exists():
        return []
    known = {f.name for f in fields(RoundRecord)}
    records = []
    for line in path.read_text().splitlines():
        if line.strip():
            body = json.loads(line)
            records.append(RoundRecord(**{k: v for k, v in body.items() if k in known}))
    return records
