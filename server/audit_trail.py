"""The ServerApp's audit trail: the run in the server's own signed log, and the model card at the end.

The server keeps its log under the run's output directory: ``<out-dir>/audit/audit.jsonl``, signed with
``<out-dir>/keys/audit.key`` (Ed25519, 0600, created on first use next to the checkpoints' server key;
its public half is ``<out-dir>/audit/audit.pub``). A resumed run appends to the same log. The events:

``run.start``
    run id (:func:`common.audit.federation.run_token`), the run config's hash and its token-valued
    settings, the app hash, SecAgg+/DP flags, the sites connected (asked for their ids with
    :data:`common.audit.federation.SITE_IDENTITY_TASK`), rounds, and the hash of the initial model;
``round.aggregated``
    per round: the model the round started from (what every site received), the participants (the
    site id each accepted update carried; under SecAgg+ the sites whose masked vectors are in the sum),
    the new global model, failures, examples, federation-level and per-site epsilon, metrics, and the
    head of each participant's own audit log (anchored here: reconciliation checks it is still there);
``checkpoint.saved``
    the model hash of each round's checkpoint, chained to the previous one, with the sealed file's hash;
``model.final`` and ``run.end``
    the published model and the signed model card (``<out-dir>/model_card.json``, next to the final
    model), or ``run.end`` with status ``failed``.

Model hashes are :func:`common.model_card.model_sha256` over the arrays the server sends, so they match
the ``model_sha256`` of each site's ``round.taken`` when (and only when) the site trained from exactly
that model: that is what ``fedscan audit reconcile`` checks.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from common.app_identity import app_hash
from common.audit import AuditLog, is_token, read_verified_log
from common.audit.events import KINDS
from common.audit.federation import (
    AUDIT_HEAD_METRIC,
    AUDIT_SEQ_METRIC,
    MANIFEST_METRIC,
    SERVER_ACTOR,
    SITE_ID_METRIC,
    SITE_IDENTITY_TASK,
    run_token,
)
from common.config import RunConfig
from common.crypto import (
    SigningKey,
    generate_signing_key,
    load_signing_key,
    write_signing_key,
    write_verify_key,
)
from common.errors import FedscanError, KeyMaterialError
from common.model_card import card_from_server_log, model_sha256, write_model_card

if TYPE_CHECKING:
    from flwr.app import Context
    from flwr.server import Grid

    from server.checkpoints import CheckpointStore
    from server.run_records import RoundRecord

__all__ = [
    "AUDIT_KEY",
    "AUDIT_LOG",
    "MODEL_CARD",
    "ServerAuditTrail",
    "adopt_audit_key",
    "create_audit_key",
    "fit_participants",
    "load_or_create_audit_key",
    "query_site_ids",
    "run_config_map",
]

log = logging.getLogger("fedscan.server")

AUDIT_KEY = Path("keys") / "audit.key"
AUDIT_LOG = Path("audit") / "audit.jsonl"
AUDIT_PUBKEY = Path("audit") / "audit.pub"
MODEL_CARD = "model_card.json"
#: Run-config keys that are paths on the coordinator's disk: covered by the config hash, not listed.
_PATH_KEYS = ("site-dirs", "out-dir", "central-test-set")
_METRICS = (
    "train_loss",
    "eval_loss",
    "accuracy",
    "balanced_accuracy",
    "auc",
    "sensitivity",
    "specificity",
    "f1",
)


def create_audit_key(key_file: Path, pubkey_file: Path) -> SigningKey:
    """A new server audit key at ``key_file`` (0600, never overwritten) and its public half (PEM)."""
    key = generate_signing_key()
    write_signing_key(key_file, key)
    pubkey_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_verify_key(pubkey_file, key)
    return key


def adopt_audit_key(key_file: Path, out_dir: Path) -> None:
    """Make a run under ``out_dir`` sign its log with the federation's audit key ``key_file`` (made by
    provisioning, whose public half auditors pin), unless the run already has a key."""
    target = Path(out_dir) / AUDIT_KEY
    if not key_file.exists() or target.exists():
        return
    key = load_signing_key(key_file)
    write_signing_key(target, key)
    (Path(out_dir) / AUDIT_PUBKEY).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_verify_key(Path(out_dir) / AUDIT_PUBKEY, key)


def load_or_create_audit_key(out_dir: Path) -> SigningKey:
    """The server's audit key under ``out_dir`` (created 0600 on first use, with its public half)."""
    path = Path(out_dir) / AUDIT_KEY
    if not path.exists():
        try:
            create_audit_key(path, Path(out_dir) / AUDIT_PUBKEY)
        except KeyMaterialError:
            if not path.exists():
                raise
    return load_signing_key(path)


def run_config_map(config: RunConfig) -> dict[str, Any]:
    """The run config's settings the log can hold as they are (flags, numbers, tokens); paths and free
    strings are left out (``config_sha256`` covers every key)."""
    check = KINDS["config"][0]
    return {
        key: value
        for key, value in config.to_flower().items()
        if key not in _PATH_KEYS and check({key: value})
    }


def _site_token(value: object, fallback: str) -> str:
    text = str(value) if value is not None else ""
    if is_token(text):
        return text
    return f"unidentified-{hashlib.sha256(fallback.encode()).hexdigest()[:12]}"


def fit_participants(results: Iterable[tuple[Any, Any]]) -> dict[str, dict[str, Any]]:
    """The sites behind a round's accepted fit results: site id -> examples, epsilon, manifest hash.

    The id is the one each site's reply carries (:data:`SITE_ID_METRIC`, its audit actor); a reply
    without one is listed as ``unidentified-<hash of its node id>`` so that it still counts.
    """
    sites: dict[str, dict[str, Any]] = {}
    for proxy, res in results:
        metrics = res.metrics or {}
        site = _site_token(metrics.get(SITE_ID_METRIC), str(getattr(proxy, "cid", id(proxy))))
        info: dict[str, Any] = {"examples": int(res.num_examples)}
        epsilon = metrics.get("sample-epsilon")
        if isinstance(epsilon, int | float) and math.isfinite(epsilon) and epsilon >= 0:
            info["epsilon"] = float(epsilon)
        manifest = metrics.get(MANIFEST_METRIC)
        if KINDS["sha256"][0](manifest):
            info["manifest_sha256"] = manifest
        head, seq = metrics.get(AUDIT_HEAD_METRIC), metrics.get(AUDIT_SEQ_METRIC)
        if KINDS["sha256"][0](head) and KINDS["count"][0](seq):
            info["audit_head"], info["audit_seq"] = head, seq
        sites[site] = info
    return dict(sorted(sites.items()))


def query_site_ids(grid: Grid, config: RunConfig, timeout: float = 60.0) -> dict[int, str]:
    """Every connected site's audit id (node id -> id), asked once at the start of a run.

    A site that does not answer (an older ClientApp, a refusal) is left out and logged: the run does
    not depend on it, only ``run.start``'s list of sites does.
    """
    from flwr.app import Message
    from flwr.common import GetPropertiesIns
    from flwr.common.constant import MessageTypeLegacy
    from flwr.compat.common import recorddict_compat as compat

    deadline = time.monotonic() + timeout
    nodes = sorted(grid.get_node_ids())
    while len(nodes) < config.min_fit_sites and time.monotonic() < deadline:
        time.sleep(0.2)
        nodes = sorted(grid.get_node_ids())
    content = compat.getpropertiesins_to_recorddict(GetPropertiesIns({"task": SITE_IDENTITY_TASK}))
    messages = [
        Message(content=content, dst_node_id=n, message_type=MessageTypeLegacy.GET_PROPERTIES, group_id="0")
        for n in nodes
    ]
    found: dict[int, str] = {}
    for reply in grid.send_and_receive(messages, timeout=timeout):
        if reply.has_error():
            log.warning("A site did not tell its audit id: %s", reply.error.reason)
            continue
        value = compat.recorddict_to_getpropertiesres(reply.content).properties.get(SITE_ID_METRIC)
        if is_token(value):
            found[reply.metadata.src_node_id] = cast(str, value)
    return found


def _metrics(record: RoundRecord) -> dict[str, float]:
    values = {name: getattr(record, name) for name in _METRICS}
    for name, value in (record.central or {}).items():
        values[f"central_{name}"] = value
    return {
        k: float(v)
        for k, v in values.items()
        if is_token(k) and isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


class ServerAuditTrail:
    """The server's side of one run in its audit log; build with :meth:`start`."""

    def __init__(self, out_dir: Path, key: SigningKey, config: RunConfig, run_id: str, initial: str) -> None:
        self.out_dir = out_dir
        self.key = key
        self.config = config
        self.run_id = run_id
        self.current = initial  # hash of the global model the next round starts from
        self.rounds = 0
        self.manifests: dict[str, str] = {}

    def _append(self, event: str, **details: Any) -> None:
        with AuditLog.open(self.out_dir / AUDIT_LOG, SERVER_ACTOR, self.key, role="server") as audit:
            audit.append(event, **details)

    @classmethod
    def start(
        cls,
        grid: Grid,
        context: Context,
        config: RunConfig,
        initial_arrays: list[np.ndarray],
        *,
        first_round: int = 1,
    ) -> ServerAuditTrail | None:
        """Write ``run.start``; ``None`` (no trail) for a run without an ``out-dir``."""
        if not config.out_dir:
            log.warning("No out-dir: this run keeps no audit log and gets no model card.")
            return None
        out_dir = Path(config.out_dir)
        initial = model_sha256(initial_arrays)
        trail = cls(out_dir, load_or_create_audit_key(out_dir), config, run_token(context.run_id), initial)
        sites = sorted(set(query_site_ids(grid, config, timeout=min(config.secagg_timeout, 120.0)).values()))
        trail._append(
            "run.start",
            run_id=trail.run_id,
            config_sha256=config.digest(),
            config=run_config_map(config),
            app_sha256=app_hash(),
            secagg=config.secure_aggregation,
            dp=config.sample_dp or config.client_dp != "none",
            sites=sites,
            rounds=config.num_server_rounds,
            min_fit_sites=config.min_fit_sites,
            initial_model_sha256=initial,
            first_round=first_round,
        )
        return trail

    def round_finished(
        self,
        server_round: int,
        arrays: list[np.ndarray],
        record: RoundRecord,
        checkpoints: CheckpointStore | None = None,
    ) -> None:
        """``round.aggregated`` (and ``checkpoint.saved`` if the round was checkpointed)."""
        new = model_sha256(arrays)
        participants = cast(Mapping[str, Mapping[str, Any]], getattr(record, "participants", {}) or {})
        details: dict[str, Any] = {
            "run_id": self.run_id,
            "round": server_round,
            "model_sha256": self.current,
            "participants": sorted(participants),
            "new_model_sha256": new,
            "failures": record.failures,
            "secagg": self.config.secure_aggregation,
            "metrics": _metrics(record),
        }
        if self.config.client_dp == "none":  # under client-level DP every site weighs 1
            details["examples"] = sum(int(p.get("examples", 0)) for p in participants.values())
        epsilons = {s: p["epsilon"] for s, p in participants.items() if "epsilon" in p}
        if epsilons:
            details["epsilons"] = epsilons
        heads = {s: p for s, p in participants.items() if "audit_head" in p}
        if heads:  # each site's own log, anchored here (reconciliation checks they are still there)
            details["site_log_heads"] = {s: p["audit_head"] for s, p in heads.items()}
            details["site_log_seqs"] = {s: p["audit_seq"] for s, p in heads.items()}
        privacy = record.privacy or {}
        federation = privacy.get("epsilon")  # never lower than a site's ledger (server/privacy.py)
        if isinstance(federation, int | float) and math.isfinite(federation):
            details["epsilon"] = float(federation)
        self.manifests.update(
            {s: p["manifest_sha256"] for s, p in participants.items() if "manifest_sha256" in p}
        )
        self._append("round.aggregated", **details)
        path = checkpoints.path(server_round) if checkpoints is not None else None
        if path is not None and path.exists():
            data = path.read_bytes()
            self._append(
                "checkpoint.saved",
                run_id=self.run_id,
                round=server_round,
                model_sha256=new,
                prev_model_sha256=self.current,
                bytes=len(data),
                file_sha256=hashlib.sha256(data).hexdigest(),
            )
        self.current = new
        self.rounds = server_round

    def finish(self, final_arrays: list[np.ndarray]) -> Path:
        """Write the signed model card next to the final model, then ``model.final`` and ``run.end``."""
        final = model_sha256(final_arrays)
        verified = read_verified_log(self.out_dir / AUDIT_LOG, pubkeys=[self.key.verify_key])
        card = card_from_server_log(
            verified,
            self.run_id,
            manifests=self.manifests,
            final_model_sha256=final,
            rounds=self.rounds,
            delta=self.config.dp_delta,
        )
        path = self.out_dir / MODEL_CARD
        document = write_model_card(path, card, self.key, signer=SERVER_ACTOR)
        self._append(
            "model.final",
            run_id=self.run_id,
            model_sha256=final,
            rounds=self.rounds,
            card_sha256=document["signature"]["card_sha256"],
            initial_model_sha256=card.initial_model_sha256,
        )
        self._append("run.end", run_id=self.run_id, status="completed", rounds=self.rounds)
        return path

    def failed(self) -> None:
        """``run.end`` with status ``failed`` (the run raised; no model is published).

        Called while the run's own error propagates: a log that cannot take the entry is reported
        here, not raised over that error.
        """
        try:
            self._append("run.end", run_id=self.run_id, status="failed", rounds=self.rounds)
        except (FedscanError, OSError) as error:
            log.error("Could not record the failed run in the audit log: %s", error)
