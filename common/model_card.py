"""The model card: a signed provenance record that ships with the final model.

It says which sites trained the model (pseudonymous ids) on which data (their manifest hashes), with
which app and configuration, for how many rounds, with or without secure aggregation, under which
privacy budget (epsilon per site and federation-level), with which metrics -- and it carries the chain
of checkpoint hashes from the initial model to the final one, so anyone holding a checkpoint can place
it in the run. Like the audit log it holds no PHI: every field is checked against the same value kinds
(:mod:`common.audit.events`).

File format (JSON, canonical encoding)::

    {"card": {...}, "signature": {"algorithm": "ed25519", "signer": "server", "key_id": "<16 hex>",
     "public_key": "<base64>", "card_sha256": "<hex>", "sig": "<base64>"}}

``card_sha256`` is the SHA-256 of the canonical JSON of ``card``; ``sig`` is the signer's Ed25519
signature of the ASCII bytes ``fedscan-model-card-v1:<card_sha256>``. :func:`model_sha256` defines
the model hash used here and in the audit log's round events.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from common.audit.canonical import canonical_json, sha256_hex
from common.audit.events import KINDS, is_token
from common.audit.log import utc_timestamp
from common.audit.verify import VerifiedLog
from common.crypto import SigningKey, VerifyKey, load_verify_key
from common.errors import AuditError, KeyMaterialError
from common.fsio import write_atomic

__all__ = [
    "CARD_FORMAT",
    "ModelCard",
    "SiteProvenance",
    "card_from_server_log",
    "check_card_against_log",
    "load_model_card",
    "model_sha256",
    "sign_model_card",
    "verify_model_card",
    "write_model_card",
]

CARD_FORMAT: Final = "fedscan-model-card-v1"
_SIGNING_LABEL: Final = b"fedscan-model-card-v1:"
_MODEL_LABEL: Final = b"fedscan-model-v1\n"


def model_sha256(arrays: Sequence[np.ndarray]) -> str:
    """SHA-256 of a model's parameter arrays, independent of how they are stored.

    Hashes ``fedscan-model-v1\\n``, then for each array in order the canonical JSON of
    ``{"dtype": <little-endian dtype string>, "shape": [...]}``, a newline, and the array's bytes in
    C order, little-endian. Sites and the server compute it on the arrays they hold, so the model a
    site trained from and the model the server sent compare equal exactly when they are.
    """
    digest = hashlib.sha256(_MODEL_LABEL)
    for array in arrays:
        a = np.asarray(array)
        a = a.astype(a.dtype.newbyteorder("<"), copy=False) if a.dtype.byteorder == ">" else a
        a = np.ascontiguousarray(a)
        digest.update(canonical_json({"dtype": a.dtype.str, "shape": list(a.shape)}) + b"\n")
        digest.update(a.tobytes())
    return digest.hexdigest()


def _require(kind: str, value: object, what: str) -> None:
    check, described = KINDS[kind]
    if not check(value):
        raise AuditError(f"Model card field {what} must be {described}.")


@dataclass(frozen=True)
class SiteProvenance:
    """One site's contribution: pseudonymous id, data manifest hash, examples, epsilon spent."""

    site_id: str
    manifest_sha256: str | None = None
    examples: int | None = None
    epsilon: float | None = None
    rounds: int | None = None

    def __post_init__(self) -> None:
        _require("token", self.site_id, "site_id")
        for name, kind in (("manifest_sha256", "sha256"), ("examples", "count"), ("epsilon", "epsilon")):
            if getattr(self, name) is not None:
                _require(kind, getattr(self, name), f"{self.site_id}.{name}")
        if self.rounds is not None:
            _require("count", self.rounds, f"{self.site_id}.rounds")


@dataclass(frozen=True)
class ModelCard:
    """Provenance of a final model; see the module docstring.

    ``checkpoints`` is the chain ``((0, initial hash), (1, after round 1), ..., (n, final hash))``;
    rounds must increase and the last hash must be ``model_sha256``.
    """

    run_id: str
    model_sha256: str
    checkpoints: tuple[tuple[int, str], ...]
    sites: tuple[SiteProvenance, ...]
    config_sha256: str
    secure_aggregation: bool
    dp: bool
    app_sha256: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    epsilon: float | None = None
    delta: float | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    created: str = field(default_factory=utc_timestamp)

    def __post_init__(self) -> None:
        _require("token", self.run_id, "run_id")
        _require("sha256", self.model_sha256, "model_sha256")
        _require("sha256", self.config_sha256, "config_sha256")
        _require("config", dict(self.config), "config")
        _require("metrics", dict(self.metrics), "metrics")
        _require("flag", self.secure_aggregation, "secure_aggregation")
        _require("flag", self.dp, "dp")
        if self.app_sha256 is not None:
            _require("sha256", self.app_sha256, "app_sha256")
        if self.epsilon is not None:
            _require("epsilon", self.epsilon, "epsilon")
        if self.delta is not None:
            _require("number", self.delta, "delta")
        if not self.checkpoints or self.checkpoints[-1][1] != self.model_sha256:
            raise AuditError("The model card's checkpoint chain must end with the final model's hash.")
        rounds = [r for r, _ in self.checkpoints]
        if rounds[0] != 0 or any(b <= a for a, b in zip(rounds, rounds[1:], strict=False)):
            raise AuditError("The model card's checkpoint chain must start at round 0 and increase.")
        for number, digest in self.checkpoints:
            _require("count", number, "checkpoint round")
            _require("sha256", digest, f"checkpoint {number}")
        ids = [s.site_id for s in self.sites]
        if len(set(ids)) != len(ids):
            raise AuditError("The model card lists a site twice.")

    @property
    def rounds(self) -> int:
        """The number of the last round in the checkpoint chain."""
        return self.checkpoints[-1][0]

    @property
    def initial_model_sha256(self) -> str:
        """The hash the chain starts from."""
        return self.checkpoints[0][1]

    def to_dict(self) -> dict[str, Any]:
        """The ``card`` object of the file format."""
        return {
            "format": CARD_FORMAT,
            "run_id": self.run_id,
            "created": self.created,
            "model_sha256": self.model_sha256,
            "initial_model_sha256": self.initial_model_sha256,
            "rounds": self.rounds,
            "checkpoints": [{"round": r, "sha256": h} for r, h in self.checkpoints],
            "sites": [
                {k: v for k, v in vars(s).items() if v is not None}
                for s in sorted(self.sites, key=lambda s: s.site_id)
            ],
            "app_sha256": self.app_sha256,
            "config": dict(self.config),
            "config_sha256": self.config_sha256,
            "secure_aggregation": self.secure_aggregation,
            "privacy": {
                "dp": self.dp,
                "epsilon_federation": self.epsilon,
                "delta": self.delta,
                "epsilon_per_site": {s.site_id: s.epsilon for s in self.sites if s.epsilon is not None},
            },
            "metrics": dict(self.metrics),
        }

    @classmethod
    def from_dict(cls, card: Mapping[str, Any]) -> ModelCard:
        """Rebuild a card from its ``card`` object (validating every field)."""
        try:
            if card["format"] != CARD_FORMAT:
                raise AuditError(f"Not a {CARD_FORMAT} model card.")
            privacy = card["privacy"]
            return cls(
                run_id=card["run_id"],
                model_sha256=card["model_sha256"],
                checkpoints=tuple((c["round"], c["sha256"]) for c in card["checkpoints"]),
                sites=tuple(SiteProvenance(**s) for s in card["sites"]),
                config_sha256=card["config_sha256"],
                secure_aggregation=card["secure_aggregation"],
                dp=privacy["dp"],
                app_sha256=card["app_sha256"],
                config=card["config"],
                epsilon=privacy["epsilon_federation"],
                delta=privacy["delta"],
                metrics=card["metrics"],
                created=card["created"],
            )
        except (KeyError, TypeError) as error:
            raise AuditError(f"The model card is malformed (missing or wrong field {error}).") from None


def sign_model_card(card: ModelCard, key: SigningKey, *, signer: str) -> dict[str, Any]:
    """Return the signed document (``{"card": ..., "signature": ...}``) for ``card``."""
    if not is_token(signer):
        raise AuditError("The signer must be a pseudonymous token such as 'server'.")
    body = card.to_dict()
    digest = sha256_hex(canonical_json(body))
    signature = key.sign(_SIGNING_LABEL + digest.encode("ascii"))
    return {
        "card": body,
        "signature": {
            "algorithm": "ed25519",
            "signer": signer,
            "key_id": key.key_id,
            "public_key": key.verify_key.to_base64(),
            "card_sha256": digest,
            "sig": base64.b64encode(signature).decode("ascii"),
        },
    }


def write_model_card(path: Path, card: ModelCard, key: SigningKey, *, signer: str) -> dict[str, Any]:
    """Sign ``card`` and write it to ``path`` atomically (canonical JSON plus a newline)."""
    document = sign_model_card(card, key, signer=signer)
    write_atomic(Path(path), canonical_json(document) + b"\n", mode=0o644)
    return document


def verify_model_card(
    document: Mapping[str, Any], pubkeys: Iterable[VerifyKey | str | Path] = ()
) -> ModelCard:
    """Check a signed card and return it.

    With ``pubkeys`` (verify keys, or key files or text as :func:`common.crypto.load_verify_key` reads
    them), the signing key must be one of them; without, the embedded public key is used (integrity
    only: anyone can sign a card with their own key).

    Raises
    ------
    AuditError
        If the card was altered, the signature does not verify, or the key is not pinned.
    """
    try:
        body, sig = document["card"], document["signature"]
        digest = sha256_hex(canonical_json(body))
        embedded = VerifyKey.from_raw(base64.b64decode(sig["public_key"], validate=True))
        signature = base64.b64decode(sig["sig"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error, KeyMaterialError):
        raise AuditError("The model card is malformed (expected 'card' and 'signature' objects).") from None
    if digest != sig.get("card_sha256"):
        raise AuditError("The model card was altered: its content does not match card_sha256.")
    pinned = {k.key_id: k for k in (k if isinstance(k, VerifyKey) else load_verify_key(k) for k in pubkeys)}
    if pinned and embedded.key_id not in pinned:
        raise AuditError(f"The model card is signed by key {embedded.key_id}, which is not a pinned key.")
    if embedded.key_id != sig.get("key_id") or not embedded.verify(
        _SIGNING_LABEL + digest.encode("ascii"), signature
    ):
        raise AuditError("The model card's signature does not verify.")
    return ModelCard.from_dict(body)


def load_model_card(path: Path, pubkeys: Iterable[VerifyKey | str | Path] = ()) -> ModelCard:
    """Read and verify a card file written by :func:`write_model_card`."""
    try:
        document = json.loads(Path(path).read_bytes())
    except (OSError, ValueError) as error:
        raise AuditError(f"Cannot read model card {path}: {error}.") from None
    return verify_model_card(document, pubkeys)


def card_from_server_log(
    server_log: VerifiedLog,
    run_id: str,
    *,
    manifests: Mapping[str, str] | None = None,
    metrics: Mapping[str, float] | None = None,
    final_model_sha256: str | None = None,
    rounds: int | None = None,
    delta: float | None = None,
) -> ModelCard:
    """Build the card of run ``run_id`` from the server's verified audit log.

    Uses ``run.start`` (config, app hash, secure aggregation, DP, initial model), ``round.aggregated``
    (participants, examples, epsilons, metrics), ``checkpoint.saved`` (the chain) and ``model.final``.
    ``manifests`` maps site id to the data manifest hash the site reported; ``metrics`` overrides the
    last round's metrics. A server writing the card *before* its ``model.final`` entry (so that the
    entry can carry the card's hash) passes the final model's hash and the number of rounds instead;
    ``delta`` is the run's DP delta (only recorded when DP is on).

    Raises
    ------
    AuditError
        If the log failed verification or lacks the run's ``run.start`` or ``model.final`` (and no
        ``final_model_sha256`` was given).
    """
    if not server_log.verification.ok:
        raise AuditError(f"The server's log does not verify: {server_log.verification.failure}.")
    events = [e for e in server_log.entries if e.details.get("run_id") == run_id]
    start = next((e.details for e in events if e.event == "run.start"), None)
    final = next((e.details for e in reversed(events) if e.event == "model.final"), None)
    if final is None and final_model_sha256 is not None:
        final = {"model_sha256": final_model_sha256, **({"rounds": rounds} if rounds is not None else {})}
    if start is None or final is None:
        raise AuditError(f"The server's log has no complete run {run_id} (run.start and model.final).")
    if "initial_model_sha256" not in start:
        raise AuditError(f"Run {run_id}'s run.start does not name the initial model (initial_model_sha256).")
    chain = {0: str(start["initial_model_sha256"])}
    chain.update(
        {int(e.details["round"]): e.details["model_sha256"] for e in events if e.event == "checkpoint.saved"}
    )
    last = max(chain)
    if chain[last] != final["model_sha256"]:
        chain[max(int(final.get("rounds", last + 1)), last + 1)] = final["model_sha256"]
    sites: dict[str, dict[str, Any]] = {}
    epsilon: float | None = None
    last_metrics: Mapping[str, float] = {}
    for e in events:
        if e.event != "round.aggregated":
            continue
        for site in e.details["participants"]:
            sites.setdefault(site, {"rounds": 0})["rounds"] += 1
        for site, eps in e.details.get("epsilons", {}).items():
            sites.setdefault(site, {"rounds": 0})["epsilon"] = eps
        epsilon = e.details.get("epsilon", epsilon)
        last_metrics = e.details.get("metrics", last_metrics)
    provenance = tuple(
        SiteProvenance(site_id=s, manifest_sha256=(manifests or {}).get(s), **info)
        for s, info in sorted(sites.items())
    )
    return ModelCard(
        run_id=run_id,
        model_sha256=final["model_sha256"],
        checkpoints=tuple(sorted(chain.items())),
        sites=provenance,
        config_sha256=start["config_sha256"],
        secure_aggregation=bool(start.get("secagg", False)),
        dp=bool(start.get("dp", False)),
        app_sha256=start.get("app_sha256"),
        config=start.get("config", {}),
        epsilon=epsilon,
        delta=delta if start.get("dp") else None,
        metrics=dict(metrics if metrics is not None else last_metrics),
    )


def check_card_against_log(card: ModelCard, server_log: VerifiedLog) -> list[str]:
    """Compare a card with the server's audit log; return the differences (empty if consistent).

    Checks that every checkpoint in the card was logged as ``checkpoint.saved`` (or is the logged
    initial/final model) with the same hash, that the final model matches ``model.final``, and that the
    card's sites are exactly the sites the log lists as participants.
    """
    events = [e for e in server_log.entries if e.details.get("run_id") == card.run_id]
    logged = {
        int(e.details["round"]): e.details["model_sha256"] for e in events if e.event == "checkpoint.saved"
    }
    finals = [e.details["model_sha256"] for e in events if e.event == "model.final"]
    starts = [e.details.get("initial_model_sha256") for e in events if e.event == "run.start"]
    problems: list[str] = []
    if not finals or finals[-1] != card.model_sha256:
        problems.append("the final model hash differs from the log's model.final")
    if starts and starts[0] is not None and starts[0] != card.initial_model_sha256:
        problems.append("the initial model hash differs from the log's run.start")
    for number, digest in card.checkpoints[1:-1]:
        if logged.get(number) != digest:
            problems.append(f"checkpoint of round {number} differs from the log (or was not logged)")
    participants = {s for e in events if e.event == "round.aggregated" for s in e.details["participants"]}
    if participants != {s.site_id for s in card.sites}:
        problems.append("the card's sites differ from the participants in the log")
    return problems
