"""The ClientApp's ledger mod: every training message is booked, under the site's own key, before it trains.

It sits right under the policy check (``client.client_app``) and above SecAgg+, so what it books and
what it keeps is exactly what leaves the site::

    site_policy_mod             the policy: app, model, secure aggregation, sites, delta, early budget check
      epsilon_ledger_mod        book (or refuse, or answer a re-delivery), then train, then settle
        private_aggregation_mod SecAgg+ masking, clipping, this site's noise share
          the ClientApp         trains (DP-SGD when sample-dp is on)

For the message that trains (a plain fit, or SecAgg+'s masked-vector stage) it

1. sizes the round's privacy cost from the store's sealed *manifest* (records, patients, the most
   records of one patient; no record is decrypted) and the site's own policy (the honest contributors it
   assumes for distributed noise; ``q = 1`` for client level), never from a number the server sends;
2. books it in the sealed ledger, as one step with the budget check (:meth:`EpsilonLedger.book`): keyed
   by the ledger's own counter and the message id; the server's ``server-round`` is recorded only;
3. answers an exact re-delivery of a booked message with the reply it stored then (never a second
   training), or refuses it (``replayed-message``) once that reply is no longer kept;
4. refuses (``budget-exhausted``) when the round would take the patient-level epsilon over
   ``max_epsilon``: the refusal is an error reply carrying the code only, nothing of the data;
5. trains; marks the booking *sent* with the reply (kept for re-delivery) or *void* if training failed
   before anything left; adds the run's epsilon to the reply's metrics (``sample-epsilon``) and leaves
   the booking's counter and ledger head for the audit mod, which writes them into ``round.taken``.

A ledger older than what the site's audit log recorded (restored from a backup) stops the site with a
``fedscan-error`` instead of letting it spend the forgotten budget again.
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path
from typing import Final, cast

from flwr.app import ConfigRecord, Context, Message
from flwr.app.message_type import MessageType
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage

from client.dp_sgd import TrainingPopulation, round_release
from client.epsilon_ledger import EpsilonLedger, Release
from client.policy import Refusal, SitePolicy
from client.site import SiteDir
from common.config import RunConfig
from common.errors import IntegrityError, TrainingError
from common.flower_runtime.message_packing import recorddict_from_bytes, recorddict_to_bytes
from common.privacy.refusals import ERROR_PREFIX

__all__ = [
    "LEDGER_STATE_KEY",
    "epsilon_ledger_mod",
    "planned_releases",
    "training_population",
]

log = logging.getLogger("fedscan.site")

#: Context-state record where this mod leaves the booking for the audit mod and the noise mod.
LEDGER_STATE_KEY: Final = "fedscan.ledger"
_FIT_METRICS: Final = "fitres.metrics"


def planned_releases(config: RunConfig, population: TrainingPopulation, policy: SitePolicy) -> list[Release]:
    """What one training round at this site releases, as its ledger books it.

    DP-SGD's mechanism over the site's own population; distributed client-level noise at ``q = 1``
    with the noise multiplier the site can rely on when at least ``policy.min_honest_sites`` sites
    (itself included) add their share; ``none`` when the site adds no noise itself.
    """
    releases: list[Release] = []
    if config.sample_dp:
        releases.append(round_release(config, population))
    if config.client_dp == "distributed":
        releases.append(
            Release("client", 1.0, config.client_dp_noise, 1, honest_sites=policy.min_honest_sites)
        )
    return releases or [Release("none")]


@functools.lru_cache(maxsize=64)
def _population(store_dir: str, mtime_ns: int) -> TrainingPopulation:
    from client.site_init import load_site_key
    from client.store import read_manifest

    site = SiteDir(Path(store_dir).parent)
    manifest = read_manifest(site.store_dir, load_site_key(site))
    return TrainingPopulation.of_patients([r.patient for r in manifest.records if r.split == "train"])


def training_population(site: SiteDir) -> TrainingPopulation:
    """The site's training population from its sealed manifest (keyed pseudonyms counted, no pixel read)."""
    manifest = site.store_dir / "manifest.fseal"
    return _population(str(site.store_dir), manifest.stat().st_mtime_ns if manifest.exists() else 0)


def _stage(msg: Message) -> str | None:
    configs = msg.content.config_records.get(RECORD_KEY_CONFIGS) if msg.has_content() else None
    return str(configs[Key.STAGE]) if configs is not None and Key.STAGE in configs else None


def _server_round(msg: Message) -> int:
    fit_config = msg.content.config_records.get("fitins.config")
    return int(cast(int, fit_config.get("server-round", 0))) if fit_config is not None else 0


def epsilon_ledger_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Book, refuse or answer from the ledger, then train and settle (see the module docstring)."""
    if msg.metadata.message_type != MessageType.TRAIN or _stage(msg) not in (
        None,
        Stage.COLLECT_MASKED_VECTORS,
    ):
        return call_next(msg, context)
    from client.client_app import resolve_site_dir  # client_app imports this module: import late
    from client.policy_mod import refusal_reply, site_policy
    from client.site_audit import last_ledger_seq
    from client.site_init import load_site_key

    config = RunConfig.from_flower(context.run_config)
    site = resolve_site_dir(context, config)
    policy = site_policy(site)
    key = load_site_key(site)
    run, server_round = str(context.run_id), _server_round(msg)
    message_id = msg.metadata.message_id or msg.object_id  # computed before anything below changes msg
    releases = planned_releases(config, training_population(site), policy)
    ledger = EpsilonLedger(site)
    try:
        booking = ledger.book(
            key,
            message_id=message_id,
            run=run,
            server_round=server_round,
            releases=releases,
            delta=config.dp_delta,
            max_epsilon=policy.max_epsilon,
            budget_delta=policy.max_delta,
            not_before=last_ledger_seq(site),
        )
    except IntegrityError as error:
        raise TrainingError(f"{ERROR_PREFIX} {error}") from None
    if booking.previous is not None:
        stored = ledger.stored_reply(key, booking.previous)
        if stored is None:
            refusal = Refusal(
                "replayed-message",
                f"message {message_id[:16]}... was booked as {booking.previous.seq} "
                f"({booking.previous.state}); its reply is no longer kept and it is never trained twice",
            )
            return refusal_reply(msg, site, refusal, run=run, server_round=server_round)
        log.warning(
            "Message %s delivered again: answered with booking %d's reply.",
            message_id[:16],
            booking.previous.seq,
        )
        context.state.config_records[LEDGER_STATE_KEY] = ConfigRecord({"redelivery": True})
        return Message(recorddict_from_bytes(stored), reply_to=msg)
    if booking.entry is None:
        refusal = Refusal(
            "budget-exhausted",
            f"this round would bring the patient-level epsilon from {booking.spent:.4g} to "
            f"{booking.after:.4g}, over max_epsilon {policy.max_epsilon:g}",
        )
        return refusal_reply(msg, site, refusal, run=run, server_round=server_round)
    entry = booking.entry
    seq, head = booking.head
    context.state.config_records[LEDGER_STATE_KEY] = ConfigRecord(
        {"seq": seq, "head": head, "honest-sites": policy.min_honest_sites, "epsilon": booking.run_epsilon}
    )
    try:
        reply = call_next(msg, context)
    except BaseException:
        ledger.settle(key, entry, reply=None)  # nothing left the site
        raise
    if reply.has_error():
        ledger.settle(key, entry, reply=None)
        return reply
    metrics = reply.content.config_records.get(_FIT_METRICS)
    if metrics is not None:
        epsilon = booking.run_epsilon
        metrics["sample-epsilon"] = epsilon if math.isfinite(epsilon) else -1.0  # -1: no DP
    ledger.settle(key, entry, reply=recorddict_to_bytes(reply.content))
    return reply
