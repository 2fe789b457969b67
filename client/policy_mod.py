"""The outermost ClientApp mod: every message is checked against the site's policy first.

It runs before SecAgg+, before any clipping and before the ClientApp builds its client (which is what
decrypts the store), so a refused round never touches patient data. What it reads to decide: the
run config and the message (model kind, whether the message belongs to the SecAgg+ protocol, how many
sites the protocol shows), ``site.toml``, the code this process runs (:func:`client.policy.app_hash`)
and, only when the site has a privacy budget, its sealed epsilon ledger. Only after every other check
has passed, and only for a site with a budget, does it open the store's *manifest* to size the round's
privacy cost (the training population sets DP-SGD's sampling rate): an early refusal, so that a site
whose budget cannot pay for the round does not even join its SecAgg+ setup. The binding check is the
ledger mod's (:mod:`client.ledger_mod`), which books the round in the same step.

A refusal is recorded at the site with its reason (``privacy/refusals.jsonl``) and answered with an
error reply whose reason is only ``fedscan-refusal:<code>``: the server learns the code, nothing more.
This mod also answers the server's ``training-size`` query (SecAgg+'s ``max_weight``).
"""

from __future__ import annotations

import functools
import logging
from typing import cast

from flwr.app import ConfigRecord, Context, Error, Message
from flwr.app.message_type import MessageType
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Code, GetPropertiesRes, Status
from flwr.common.constant import ErrorCode, MessageTypeLegacy
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.compat.common import recorddict_compat as compat

from client.epsilon_ledger import EpsilonLedger, LedgerEntry, patient_level_epsilon
from client.ledger_mod import planned_releases, training_population
from client.policy import (
    Refusal,
    RoundRequest,
    SitePolicy,
    app_hash,
    check_round,
    compare_parameters,
    npy_header,
    record_refusal,
)
from client.round_tally import count_round, read_tally, utc_day
from client.site import SiteDir
from client.site_config import SiteConfig
from common.config import RunConfig
from common.privacy.secagg_parameters import TRAINING_SIZE_TASK

__all__ = ["refusal_reply", "site_policy", "site_policy_mod", "training_records"]

log = logging.getLogger("fedscan.site")


def _site(context: Context, config: RunConfig) -> SiteDir:
    from client.client_app import resolve_site_dir  # client_app imports this module: import late

    return resolve_site_dir(context, config)


def _secagg_stage(msg: Message) -> tuple[str | None, ConfigRecord | None]:
    configs = msg.content.config_records.get(RECORD_KEY_CONFIGS)
    if configs is None or Key.STAGE not in configs:
        return None, None
    return str(configs[Key.STAGE]), configs


def _sites_in_round(stage: str, configs: ConfigRecord) -> int | None:
    """How many sites the SecAgg+ protocol shows this site at ``stage`` (itself included)."""
    if stage == Stage.SETUP:
        return int(cast(int, configs[Key.SAMPLE_NUMBER]))
    if stage == Stage.SHARE_KEYS:  # one public-key pair per neighbour, this site's own included
        return sum(1 for key in configs if key != Key.STAGE)
    if stage == Stage.COLLECT_MASKED_VECTORS:  # key shares forwarded from every other active site
        return len(cast(list, configs[Key.SOURCE_LIST])) + 1
    return None


def _server_round(msg: Message) -> int:
    fit_config = msg.content.config_records.get("fitins.config")
    return int(cast(int, fit_config.get("server-round", 0))) if fit_config is not None else 0


@functools.lru_cache(maxsize=16)
def _load_policy(config_file: str, mtime_ns: int) -> SitePolicy:
    from pathlib import Path

    return SiteConfig.load(Path(config_file)).policy


#: Where a legacy message carries the model the ClientApp loads (fit or evaluate instructions).
_MODEL_RECORDS = {MessageType.TRAIN: "fitins.parameters", MessageType.EVALUATE: "evaluateins.parameters"}


def _incoming_parameters(msg: Message) -> list[tuple[tuple[int, ...], str]] | None:
    """Shapes and dtypes of a training or evaluation message's model, read from each array's ``.npy``
    header (no array is loaded); ``None`` if the message carries no model."""
    record = msg.content.array_records.get(_MODEL_RECORDS.get(msg.metadata.message_type, ""))
    if record is None:
        return None
    return [
        npy_header(bytes(array.data))
        for _key, array in sorted(record.items(), key=lambda item: int(item[0]) if item[0].isdigit() else -1)
    ]


def _content_bytes(msg: Message) -> int:
    """Bytes a message carries: every array of every array record, and every byte string of its
    config records (the model is only one record; a server could add others of any size)."""
    total = sum(len(array.data) for record in msg.content.array_records.values() for array in record.values())
    for record in msg.content.config_records.values():
        for value in record.values():
            for item in value if isinstance(value, list) else (value,):
                if isinstance(item, bytes | str):
                    total += len(item)
    return total


@functools.lru_cache(maxsize=8)
def _expected_by_digest(digest: str, config: RunConfig) -> tuple[tuple[tuple[int, ...], str], ...]:
    from common.models import model_from_config

    return tuple((tuple(a.shape), a.dtype.str) for a in model_from_config(config).get_arrays())


def _expected_parameters(config: RunConfig) -> tuple[tuple[tuple[int, ...], str], ...]:
    """The shapes and dtypes of the run's model as this site builds it (cached per configuration)."""
    return _expected_by_digest(config.training_digest(), config)


def site_policy(site: SiteDir) -> SitePolicy:
    """The site's policy from ``site.toml`` (read again whenever the file changes)."""
    return _load_policy(str(site.config_file), site.config_file.stat().st_mtime_ns)


def training_records(site: SiteDir) -> int:
    """The site's number of training records, from its sealed manifest (no pixel is decrypted)."""
    from client.site_init import load_site_key
    from client.store import read_manifest

    return read_manifest(site.store_dir, load_site_key(site)).count("train")


def refusal_reply(msg: Message, site: SiteDir, refusal: Refusal, *, run: str, server_round: int) -> Message:
    """Record ``refusal`` at the site (full reason) and answer with its code only: nothing else leaves."""
    record_refusal(site, refusal, run=run, server_round=server_round)
    log.warning("Refused round %d: %s (%s)", server_round, refusal.code, refusal.reason)
    return Message(Error(code=ErrorCode.MOD_FAILED_PRECONDITION, reason=refusal.wire_reason), reply_to=msg)


def _answer_training_size(msg: Message, site: SiteDir) -> Message:
    res = GetPropertiesRes(Status(Code.OK, "OK"), {"num-examples": training_records(site)})
    return Message(compat.getpropertiesres_to_recorddict(res), reply_to=msg)


def site_policy_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Check ``msg`` against the site's policy before anything else; refuse, answer, or pass it on."""
    config = RunConfig.from_flower(context.run_config)
    site = _site(context, config)
    policy = site_policy(site)
    kind = msg.metadata.message_type
    # The SecAgg+ stage counts only where SecAgg+ runs (private_aggregation_mod applies it exactly when
    # the run config asks for it): in a plain run a stage record is the server's word and nothing else,
    # and the message trains in the clear, so it is checked as the plain training message it is.
    uses_secagg = kind == MessageType.TRAIN and config.secure_aggregation
    stage, configs = _secagg_stage(msg) if uses_secagg else (None, None)
    training = kind == MessageType.TRAIN and stage != Stage.UNMASK
    trains_now = training and stage in (None, Stage.COLLECT_MASKED_VECTORS)  # this message runs fit
    private = config.sample_dp or config.client_dp == "distributed"
    spent = 0.0
    if training and policy.has_budget and private:
        from client.site_init import load_site_key

        spent = EpsilonLedger(site).spent(load_site_key(site), policy.max_delta)
    tally = read_tally(site) if trains_now else None
    # Training (in the stage that fits) and evaluation both load the model sent: both are held to it.
    carries_model = trains_now or kind == MessageType.EVALUATE
    incoming = _incoming_parameters(msg) if carries_model else None
    request = RoundRequest(
        app_hash=app_hash(),
        model=config.model,
        training=training,
        secure=stage is not None,
        run_wants_secure=config.secure_aggregation,
        num_sites=(
            _sites_in_round(stage, configs)
            if stage is not None and configs is not None
            else (config.min_fit_sites if training else None)
        ),
        delta=config.dp_delta,
        differentially_private=private,
        epsilon_spent=spent,
        local_epochs=config.local_epochs,
        local_steps=config.local_steps,
        batch_size=config.batch_size,
        threads=config.threads,
        run_rounds=config.num_server_rounds,
        rounds_in_run=tally.in_run(str(context.run_id)) if tally is not None else 0,
        rounds_today=tally.on_day(utc_day()) if tally is not None else 0,
        parameters_problem=(
            compare_parameters(incoming, _expected_parameters(config)) if incoming is not None else None
        ),
        message_bytes=_content_bytes(msg),
    )
    server_round = _server_round(msg)
    refusal = check_round(policy, request)
    if refusal is None and training and policy.has_budget:
        # Every other check passed: size this round's cost from the manifest (no record decrypted). An
        # early answer only; the ledger mod books the round and checks again in the same step.
        from client.site_init import load_site_key

        entries = EpsilonLedger(site).entries(load_site_key(site))
        planned = LedgerEntry(
            0,
            "planned",
            "planned",
            0,
            tuple(planned_releases(config, training_population(site), policy)),
            config.dp_delta,
        )
        after = patient_level_epsilon([*entries, planned], policy.max_delta)
        if after > policy.max_epsilon:
            refusal = Refusal(
                "budget-exhausted",
                f"this round would bring the patient-level epsilon from {spent:.4g} to {after:.4g}, over "
                f"max_epsilon {policy.max_epsilon:g}",
            )
    if refusal is not None:
        return refusal_reply(msg, site, refusal, run=str(context.run_id), server_round=server_round)
    if trains_now:
        count_round(site, str(context.run_id))
    if kind == MessageTypeLegacy.GET_PROPERTIES:
        ins = compat.recorddict_to_getpropertiesins(msg.content)
        if ins.config.get("task") == TRAINING_SIZE_TASK:
            return _answer_training_size(msg, site)
    return call_next(msg, context)
