"""Verifying a finished model the way an auditor or a site would: signature, card, hashes, the run's log.

``fedscan audit verify-model --kit K MODEL`` takes a run's output directory (``model_card.json``,
``final_model.npz``, ``audit/audit.jsonl``) and checks, against the federation's own keys:

1. the model card's signature is the **server's audit key from the signed federation manifest** (or
   the key given), not whatever key the card embeds;
2. the model's **array hash** (``model_sha256``: SHA-256 over the parameter arrays' dtype, shape and
   bytes, :func:`common.model_card.model_sha256`; the same hash the card, the audit logs and the sites'
   ``round.taken`` entries use) of ``final_model.npz`` equals the card's;
3. the server's audit log verifies against that same key, and the card agrees with it (final model,
   initial model, checkpoints, participants: :func:`common.model_card.check_card_against_log`).

It also reports the **file hash** (``file_sha256``: SHA-256 of the ``final_model.npz`` bytes), which
names the file, not the model: two files holding the same arrays have one model hash and may have two
file hashes. Every problem is listed; the verdict is ok only when there is none.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.audit import read_verified_log
from common.crypto import VerifyKey
from common.errors import AuditError, InputError
from common.model_card import check_card_against_log, load_model_card, model_sha256
from server.audit_trail import AUDIT_LOG, MODEL_CARD
from server.run_records import MODEL_FILE

__all__ = ["ModelVerification", "verify_run_model"]


@dataclass(frozen=True)
class ModelVerification:
    """What checking one model found."""

    model: str
    run_id: str | None
    model_sha256: str | None
    file_sha256: str | None
    card_signer: str | None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "model": self.model,
            "ok": self.ok,
            "run_id": self.run_id,
            "model_sha256": self.model_sha256,
            "file_sha256": self.file_sha256,
            "card_signer": self.card_signer,
            "problems": list(self.problems),
        }


def _arrays(path: Path) -> list[np.ndarray]:
    with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as npz:
        return [npz[f"arr_{i}"] for i in range(len(npz.files))]


def verify_run_model(run_dir: Path, server_key: VerifyKey) -> ModelVerification:
    """Check the model in a run's output directory against ``server_key`` (see the module docstring).

    Raises
    ------
    InputError
        If ``run_dir`` is not a run's output directory (no model card and no model).
    """
    run_dir = Path(run_dir)
    card_path, model_path, log_path = run_dir / MODEL_CARD, run_dir / MODEL_FILE, run_dir / AUDIT_LOG
    if not card_path.exists() and not model_path.exists():
        raise InputError(f"{run_dir} holds no {MODEL_CARD} or {MODEL_FILE}: not a run's output directory.")
    problems: list[str] = []
    card = None
    try:
        card = load_model_card(card_path, pubkeys=[server_key])
    except AuditError as error:
        problems.append(f"model card: {error}")
    model_digest = file_digest = None
    if model_path.exists():
        data = model_path.read_bytes()
        file_digest = hashlib.sha256(data).hexdigest()
        try:
            model_digest = model_sha256(_arrays(model_path))
        except (ValueError, OSError, KeyError) as error:
            problems.append(f"{MODEL_FILE} cannot be read as model arrays ({error})")
    else:
        problems.append(f"{MODEL_FILE} is missing")
    if card is not None and model_digest is not None and card.model_sha256 != model_digest:
        problems.append(
            f"{MODEL_FILE} holds model {model_digest[:16]}..., the card names {card.model_sha256[:16]}..."
        )
    if card is not None:
        if not log_path.exists():
            problems.append(f"the server's audit log {AUDIT_LOG} is missing: the card cannot be checked")
        else:
            verified = read_verified_log(log_path, actor_keys={"server": server_key}, require_pinned=True)
            if not verified.verification.ok:
                problems.append(f"the server's audit log does not verify: {verified.verification.failure}")
            problems += [f"card vs log: {p}" for p in check_card_against_log(card, verified)]
    return ModelVerification(
        model=str(run_dir),
        run_id=card.run_id if card is not None else None,
        model_sha256=model_digest,
        file_sha256=file_digest,
        card_signer=server_key.key_id if card is not None else None,
        problems=problems,
    )
