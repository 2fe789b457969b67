"""The ClientApp's privacy chain under the ledger mod: SecAgg+, its range guard, client-level DP.

From the outside in, for a training message::

    secaggplus_mod              masks the update (only when the run config asks for secure aggregation)
      secagg_range_guard        refuses loudly if SecAgg+ would clip a value of this site's update
        client_dp_mod           Flower's fixedclipping_mod (the update's L2 norm <= client-dp-clip),
                                then, in distributed mode, this site's share of the Gaussian noise
          the ClientApp         trains (DP-SGD when sample-dp is on)

The round was booked in the site's epsilon ledger before any of this ran (:mod:`client.ledger_mod`).
Clipping and noise happen *inside* SecAgg+, so what the site masks is already clipped and noised, and
in distributed mode no one, the server included, ever sees an un-noised sum. Under client-level DP
every site weighs 1 (the reply's ``num_examples`` becomes 1): the aggregate is the plain mean of
clipped updates, whose sensitivity to one site is ``clip / n``, which is what the noise is calibrated to.

The site's noise share is calibrated against the number of honest contributors *the site* assumes
(``min_honest_sites`` in site.toml, default 1: the site adds all of the noise itself), never against
SecAgg+'s reconstruction threshold, which is a number the server sends.
"""

from __future__ import annotations

import functools
import math
import secrets
from collections.abc import Callable, Sequence
from typing import cast

import numpy as np
from flwr.app import Context, Message
from flwr.app.message_type import MessageType
from flwr.client.mod import fixedclipping_mod, secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_STATE
from flwr.compat.common import recorddict_compat as compat
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from client.ledger_mod import LEDGER_STATE_KEY
from common.config import RunConfig
from common.errors import TrainingError
from common.models import model_from_config

__all__ = ["client_dp_mod", "honest_sites", "private_aggregation_mod", "secagg_range_guard"]

Mod = Callable[[Message, Context, ClientAppCallable], Message]


@functools.lru_cache(maxsize=4)
def _frozen(config: RunConfig) -> tuple[int, ...]:
    return model_from_config(config).frozen_arrays


def _chain(mods: Sequence[Mod], last: ClientAppCallable) -> ClientAppCallable:
    call = last
    for mod in reversed(mods):
        call = functools.partial(lambda m, c, mod, nxt: mod(m, c, nxt), mod=mod, nxt=call)
    return call


def _secagg_state(context: Context) -> dict:
    record = context.state.config_records.get(RECORD_KEY_STATE)
    return dict(record) if record is not None else {}


def secagg_range_guard(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Fail loudly instead of letting SecAgg+ clip this site's update to ``[-clipping_range, +]``.

    SecAgg+ scales a site's values by ``num_examples / max_weight`` and clips them to the range before
    quantising; a clipped value is silently wrong in the aggregate. The server derives both so that
    this never happens (``common.privacy.secagg_parameters``); this guard proves it, site by site.
    """
    reply = call_next(msg, context)
    state = _secagg_state(context)
    if msg.metadata.message_type != MessageType.TRAIN or reply.has_error() or "clipping_range" not in state:
        return reply
    fitres = compat.recorddict_to_fitres(reply.content, keep_input=True)
    limit, max_weight = float(state["clipping_range"]), float(state["max_weight"])
    ratio = fitres.num_examples / max_weight
    if ratio > 1:
        raise TrainingError(
            f"fedscan-error: this site's weight {fitres.num_examples} exceeds "
            f"SecAgg+ max_weight {max_weight:g}."
        )
    # Frozen arrays (the SVM's standardiser) are the server's own: it restores them after aggregation.
    frozen = _frozen(RunConfig.from_flower(context.run_config))
    arrays = parameters_to_ndarrays(fitres.parameters)
    largest = max(
        (float(np.max(np.abs(a))) for i, a in enumerate(arrays) if a.size and i not in frozen), default=0.0
    )
    if largest * ratio > limit:
        raise TrainingError(
            f"fedscan-error: a value of this site's update ({largest * ratio:.4g} after weighting) exceeds "
            f"the SecAgg+ clipping range +-{limit:g}; SecAgg+ would clip it silently."
        )
    return reply


def client_dp_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Client-level DP at the site: clip the update (Flower's ``fixedclipping_mod``), then in
    ``distributed`` mode add this site's share of the noise; every site weighs 1."""
    config = RunConfig.from_flower(context.run_config)
    if config.client_dp == "none" or msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, context)
    # The clipping norm comes from the run config both ends share (the server does not send it).
    msg.content.config_records["fitins.config"][KEY_CLIPPING_NORM] = float(config.client_dp_clip)
    reply = fixedclipping_mod(msg, context, call_next)
    if reply.has_error():
        return reply
    fitres = compat.recorddict_to_fitres(reply.content, keep_input=True)
    if config.client_dp == "distributed":
        arrays = parameters_to_ndarrays(fitres.parameters)
        # With at least `h` honest sites in the sum (the site's own assumption), each adding 1/h of the
        # variance, the sum carries at least (noise * clip)^2: what the ledger booked.
        std = config.client_dp_noise * config.client_dp_clip / math.sqrt(honest_sites(context, config))
        rng = np.random.default_rng(secrets.randbits(128))  # never the run's seed: the server knows it
        frozen = _frozen(config)
        arrays = [
            a
            if index in frozen or a.dtype.kind != "f"
            else (a + rng.normal(0.0, std, a.shape)).astype(a.dtype)
            for index, a in enumerate(arrays)
        ]
        fitres.parameters = ndarrays_to_parameters(arrays)
    fitres.num_examples = 1
    reply.content = compat.fitres_to_recorddict(fitres, keep_input=True)
    return reply


def honest_sites(context: Context, config: RunConfig) -> int:
    """The honest contributors this site assumes: what the ledger mod booked the round with, else the
    site's policy (``min_honest_sites``); never a number from the server."""
    booking = context.state.config_records.get(LEDGER_STATE_KEY)
    if booking is not None and "honest-sites" in booking:
        return int(cast(int, booking["honest-sites"]))
    from client.client_app import resolve_site_dir
    from client.policy_mod import site_policy

    return site_policy(resolve_site_dir(context, config)).min_honest_sites


def private_aggregation_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """The whole chain of this module, with SecAgg+ exactly when the run config asks for it (as the
    ServerApp does, so both ends agree; the policy mod refuses a plain round when they do not)."""
    config = RunConfig.from_flower(context.run_config)
    inner = _chain([client_dp_mod], call_next)
    if config.secure_aggregation:
        return secaggplus_mod(msg, context, _chain([secagg_range_guard], inner))
    return inner(msg, context)
