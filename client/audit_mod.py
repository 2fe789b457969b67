"""The ClientApp's audit mods: every training round the site takes or refuses, in the site's own log.

Two mods, at both ends of the ClientApp's chain (``client.client_app``)::

    site_audit_mod              outermost: sees the message as it arrived and the reply as it leaves
      site_policy_mod           may refuse (error reply with the refusal code)
        private_aggregation_mod SecAgg+ masking, clipping, DP noise, the epsilon ledger
          update_digest_mod     innermost: sees the NumPyClient's plain result, before any masking
            the ClientApp

``update_digest_mod`` hashes the plain update (:func:`common.model_card.model_sha256` of the arrays
local training returned) and notes the number of training examples and the loss in the message's
context state; nothing of it leaves the site. ``site_audit_mod`` then writes, before the reply leaves:

``round.taken``
    run id (:func:`common.audit.federation.run_token`), round, the hash of the model received (the
    reconciliation key with the server's ``round.aggregated``), the hash of the update before masking,
    examples, the site's epsilon in the run after the round (patient level, from the epsilon ledger,
    through the ``sample-epsilon`` metric), delta, SecAgg+/DP flags, app and manifest hashes, and the
    ledger's counter and head after the round's booking (``ledger_seq``, ``ledger_head``: a ledger
    restored from an older copy shows as a counter going backwards in reconciliation). An exact
    re-delivery answered from the ledger is not logged again;
``round.refused``
    run id, round and the policy's reason (:data:`REFUSAL_REASON`), with the model hash when the
    refused message carried the model.

It also adds the site's audit id, its manifest hash and the head of its log after ``round.taken`` to
the fit reply's metrics (:data:`common.audit.federation.SITE_ID_METRIC`, ``MANIFEST_METRIC``,
``AUDIT_HEAD_METRIC``, ``AUDIT_SEQ_METRIC``), so that the server lists participants under the id this
log is written by and anchors the log in its own, and answers the server's site-identity query.
A site that cannot write its log does not send its update: the round fails with ``fedscan-error``.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Final, cast

from flwr.app import ConfigRecord, Context, Message
from flwr.app.message_type import MessageType
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Code, GetPropertiesRes, Status, parameters_to_ndarrays
from flwr.common.constant import MessageTypeLegacy
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.compat.common import recorddict_compat as compat

from client.ledger_mod import LEDGER_STATE_KEY
from client.site import SiteDir
from client.site_audit import manifest_sha256, site_log
from client.site_config import SiteConfig
from common.app_identity import app_hash
from common.audit import Head
from common.audit.federation import (
    AUDIT_HEAD_METRIC,
    AUDIT_SEQ_METRIC,
    MANIFEST_METRIC,
    SITE_ID_METRIC,
    SITE_IDENTITY_TASK,
    run_token,
    site_actor,
)
from common.config import RunConfig
from common.errors import FedscanError, TrainingError
from common.model_card import model_sha256
from common.privacy.refusals import ERROR_PREFIX, parse_refusal

__all__ = ["REFUSAL_REASON", "site_audit_mod", "update_digest_mod"]

#: The site policy's refusal codes (what the server sees) -> ``round.refused`` reasons.
REFUSAL_REASON: Final = {
    "unapproved-app": "app_not_approved",
    "no-secure-aggregation": "secagg_required",
    "secure-aggregation-mismatch": "secagg_mismatch",
    "model-not-allowed": "model_not_allowed",
    "delta-too-large": "delta_too_large",
    "no-differential-privacy": "dp_required",
    "too-few-sites": "too_few_sites",
    "budget-exhausted": "budget_exhausted",
    "work-over-cap": "work_over_cap",
    "rate-over-cap": "rate_over_cap",
    "parameters-mismatch": "parameters_mismatch",
    "message-too-large": "message_too_large",
    "replayed-message": "message_replayed",
}
#: Context-state record where the innermost mod leaves the plain update's digest for the outermost.
_STATE_KEY: Final = "fedscan.audit"
_FIT_METRICS: Final = "fitres.metrics"


def _site(context: Context, config: RunConfig) -> SiteDir:
    from client.client_app import resolve_site_dir  # client_app imports this module: import late

    return resolve_site_dir(context, config)


@functools.lru_cache(maxsize=64)
def _actor(config_file: str, mtime_ns: int) -> str:
    from pathlib import Path

    return site_actor(SiteConfig.load(Path(config_file)).site_id)


def _site_actor(site: SiteDir) -> str:
    return _actor(str(site.config_file), site.config_file.stat().st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _manifest_digest(store_dir: str, mtime_ns: int) -> str:
    from pathlib import Path

    from client.site_init import load_site_key
    from client.store import read_manifest

    site = SiteDir(Path(store_dir).parent)
    return manifest_sha256(read_manifest(site.store_dir, load_site_key(site)))


def _site_manifest(site: SiteDir) -> str:
    manifest = site.store_dir / "manifest.fseal"
    return _manifest_digest(str(site.store_dir), manifest.stat().st_mtime_ns)


def _stage(msg: Message) -> str | None:
    configs = msg.content.config_records.get(RECORD_KEY_CONFIGS)
    return str(configs[Key.STAGE]) if configs is not None and Key.STAGE in configs else None


def _round(msg: Message) -> int:
    """The server round: the fit instructions' ``server-round``, else the message's group id (SecAgg+
    stages before the fit carry only the group id, which Flower sets to the round)."""
    fit_config = msg.content.config_records.get("fitins.config")
    if fit_config is not None and "server-round" in fit_config:
        return int(cast(int, fit_config["server-round"]))
    group = msg.metadata.group_id
    return int(group) if group.isdigit() else 0


def _received_model(msg: Message) -> str | None:
    """Hash of the global model in a fit message (``None`` for SecAgg+ stages that carry none)."""
    if "fitins.parameters" not in msg.content.array_records:
        return None
    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    return model_sha256(parameters_to_ndarrays(fitins.parameters))


def _answer_identity(msg: Message, actor: str) -> Message:
    res = GetPropertiesRes(Status(Code.OK, "OK"), {SITE_ID_METRIC: actor})
    return Message(compat.getpropertiesres_to_recorddict(res), reply_to=msg)


def _is_identity_query(msg: Message) -> bool:
    if msg.metadata.message_type != MessageTypeLegacy.GET_PROPERTIES:
        return False
    return compat.recorddict_to_getpropertiesins(msg.content).config.get("task") == SITE_IDENTITY_TASK


def _append(site: SiteDir, event: str, details: dict[str, Any]) -> Head:
    """Append one entry; the log's head right after it."""
    try:
        with site_log(site) as log:
            entry = log.append(event, **details)
            return Head(entry.seq, entry.line_hash())
    except FedscanError as error:
        raise TrainingError(f"{ERROR_PREFIX} the site could not write its audit log ({error})") from None


def _taken_details(
    config: RunConfig, context: Context, reply: Message, booking: ConfigRecord | None
) -> dict[str, Any]:
    state = context.state.config_records.pop(_STATE_KEY, None)
    metrics = reply.content.config_records.get(_FIT_METRICS)
    details: dict[str, Any] = {
        "secagg": config.secure_aggregation,
        "dp": config.sample_dp or config.client_dp != "none",
        "app_sha256": app_hash(),
    }
    if booking is not None and "seq" in booking:  # the ledger's head after this round's booking
        details["ledger_seq"] = int(cast(int, booking["seq"]))
        details["ledger_head"] = str(booking["head"])
    if state is not None:
        details["update_sha256"] = str(state["update_sha256"])
        details["examples"] = int(cast(int, state["examples"]))
        loss = float(cast(float, state.get("train_loss", math.nan)))
        if math.isfinite(loss):
            details["train_loss"] = loss
    epsilon = metrics.get("sample-epsilon") if metrics is not None else None
    if isinstance(epsilon, int | float) and math.isfinite(epsilon) and epsilon >= 0:
        details["epsilon"] = float(epsilon)
        details["delta"] = config.dp_delta
    return details


def site_audit_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Log the round this message belongs to as taken or refused (see the module docstring)."""
    kind = msg.metadata.message_type
    if kind not in (MessageType.TRAIN, MessageTypeLegacy.GET_PROPERTIES):
        return call_next(msg, context)
    config = RunConfig.from_flower(context.run_config)
    site = _site(context, config)
    if _is_identity_query(msg):
        return _answer_identity(msg, _site_actor(site))
    # As in the policy mod: a SecAgg+ stage means something only in a run that runs SecAgg+; in a plain
    # run a training message trains whatever stage it claims, and is logged as taken or refused.
    stage = _stage(msg) if config.secure_aggregation else None
    if kind != MessageType.TRAIN or stage == Stage.UNMASK:  # the unmask stage decides nothing new
        return call_next(msg, context)
    received = _received_model(msg)
    context.state.config_records.pop(_STATE_KEY, None)
    context.state.config_records.pop(LEDGER_STATE_KEY, None)
    reply = call_next(msg, context)
    booking = context.state.config_records.pop(LEDGER_STATE_KEY, None)
    round_details: dict[str, Any] = {"run_id": run_token(context.run_id), "round": _round(msg)}
    if reply.has_error():
        code = parse_refusal(reply.error.reason or "")
        if code is not None:
            refused = {**round_details, "reason": REFUSAL_REASON.get(code, "other"), "app_sha256": app_hash()}
            if received is not None:
                refused["model_sha256"] = received
            _append(site, "round.refused", refused)
        return reply
    if stage not in (None, Stage.COLLECT_MASKED_VECTORS) or received is None:
        return reply  # SecAgg+ setup and key sharing: the round is taken when the update is sent
    if booking is not None and booking.get("redelivery"):
        return reply  # the same reply to the same message again: the round was logged when taken
    actor = _site_actor(site)
    manifest = _site_manifest(site)
    details = {**round_details, "model_sha256": received, "manifest_sha256": manifest}
    head = _append(site, "round.taken", {**details, **_taken_details(config, context, reply, booking)})
    metrics = reply.content.config_records.get(_FIT_METRICS)
    if metrics is not None:  # what the server lists this site's participation under, and anchors
        metrics[SITE_ID_METRIC] = actor
        metrics[MANIFEST_METRIC] = manifest
        metrics[AUDIT_HEAD_METRIC] = head.sha256
        metrics[AUDIT_SEQ_METRIC] = head.seq
    return reply


def update_digest_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Innermost: note the plain update's hash, examples and loss for :func:`site_audit_mod`."""
    reply = call_next(msg, context)
    if msg.metadata.message_type != MessageType.TRAIN or reply.has_error():
        return reply
    if "fitres.parameters" not in reply.content.array_records:
        return reply
    fitres = compat.recorddict_to_fitres(reply.content, keep_input=True)
    loss = fitres.metrics.get("train_loss")
    context.state.config_records[_STATE_KEY] = ConfigRecord(
        {
            "update_sha256": model_sha256(parameters_to_ndarrays(fitres.parameters)),
            "examples": int(fitres.num_examples),
            "train_loss": float(loss) if isinstance(loss, int | float) else math.nan,
        }
    )
    return reply
