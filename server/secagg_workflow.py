"""SecAgg+ with parameters derived per round: Flower's workflow, told the federation it serves.

:class:`PrivateSecAggPlusWorkflow` derives, before every round, what Flower takes as fixed knobs
(:mod:`common.privacy.secagg_parameters`): shares and threshold from the number of sites sampled and
``secagg-dropout-fraction``, the clipping range from the current global model, ``max_weight`` from the
largest site (one ``training-size`` query before the first round; 1 under client-level DP), and
``secagg-timeout`` as the wait per stage. It keeps the protocol state and each stage's wall time, so a
halted round can say why and a round record can say what it cost.
"""

from __future__ import annotations

import logging
import time
from typing import Any, cast

import numpy as np
from flwr.app import Context, Message
from flwr.common import GetPropertiesIns, parameters_to_ndarrays
from flwr.common.constant import MessageTypeLegacy
from flwr.compat.common import recorddict_compat as compat
from flwr.server import Grid
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

from common.config import RunConfig
from common.errors import TrainingError
from common.models import model_from_config
from common.privacy.secagg_parameters import (
    TRAINING_SIZE_TASK,
    SecAggParameters,
    derive_secagg_parameters,
)

__all__ = ["PrivateSecAggPlusWorkflow", "query_training_sizes", "wait_for_nodes"]

log = logging.getLogger("fedscan.server")


def _current_arrays(context: Context) -> list[np.ndarray]:
    record = context.state.array_records[MAIN_PARAMS_RECORD]
    return parameters_to_ndarrays(compat.arrayrecord_to_parameters(record, keep_input=True))


def wait_for_nodes(grid: Grid, count: int, timeout: float = 120.0) -> list[int]:
    """Node ids once at least ``count`` sites are connected; a clear error after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= count:
            return nodes
        if time.monotonic() > deadline:
            raise TrainingError(f"Only {len(nodes)} of {count} sites connected within {timeout:.0f} s.")
        time.sleep(0.2)


def query_training_sizes(grid: Grid, config: RunConfig) -> dict[int, int]:
    """Every site's number of training records (``training-size`` query), by node id.

    Sites already reveal it in their plain fit replies (``num_examples``), so this costs no privacy;
    it lets SecAgg+'s ``max_weight`` be the largest site before the first round. A site that refuses
    the query (its policy) is left out.
    """
    nodes = wait_for_nodes(grid, config.min_fit_sites, config.secagg_timeout)
    content = compat.getpropertiesins_to_recorddict(GetPropertiesIns({"task": TRAINING_SIZE_TASK}))
    messages = [
        Message(content=content, dst_node_id=n, message_type=MessageTypeLegacy.GET_PROPERTIES, group_id="0")
        for n in nodes
    ]
    sizes: dict[int, int] = {}
    for reply in grid.send_and_receive(messages, timeout=config.secagg_timeout):
        if reply.has_error():
            log.warning("A site did not report its training size: %s", reply.error.reason)
            continue
        props = compat.recorddict_to_getpropertiesres(reply.content).properties
        sizes[reply.metadata.src_node_id] = int(cast(int, props["num-examples"]))
    return sizes


class PrivateSecAggPlusWorkflow(SecAggPlusWorkflow):
    """Flower's SecAgg+ workflow with parameters derived per round instead of fixed knobs.

    Before each round: the clipping range from the current global model's largest trainable magnitude
    (frozen arrays are restored by the strategy and do not count), ``max_weight`` from the sites'
    training sizes, the threshold from the dropout tolerance, the quantisation from the modulus. The
    protocol's state is kept (``last_state``) so a halted round can say why.
    """

    def __init__(self, config: RunConfig, num_sites: int) -> None:
        self.config = config
        self.num_sites = num_sites
        self.frozen = model_from_config(config).frozen_arrays
        self.largest_site: float | None = 1.0 if config.client_dp != "none" else None
        self.parameters = self._derive(parameter_scale=0.0)
        self.last_state: Any = None
        self.stage_seconds: dict[str, float] = {}
        super().__init__(**self.parameters.as_workflow_kwargs(), timeout=config.secagg_timeout)  # type: ignore[arg-type]

    def _derive(self, parameter_scale: float) -> SecAggParameters:
        noise = 0.0
        if self.config.client_dp == "distributed":
            # A site's share of the noise is its own choice (client.dp_mods: noise * clip / sqrt(h) for the
            # h honest sites it assumes, h >= 1): leave room for the largest, a site that trusts no one.
            noise = self.config.client_dp_noise * self.config.client_dp_clip
        return derive_secagg_parameters(
            self.num_sites,
            dropout_fraction=self.config.secagg_dropout_fraction,
            parameter_scale=parameter_scale,
            max_weight=self.largest_site or 1.0,
            noise_std=noise,
        )

    def prepare_round(self, grid: Grid, context: Context) -> SecAggParameters:
        """Derive this round's parameters from the sites sampled, the global model and their sizes."""
        nodes = wait_for_nodes(grid, self.config.min_fit_sites, self.config.secagg_timeout)
        # The number of sites the strategy samples (FedAvg's num_fit_clients) from those connected.
        self.num_sites = max(2, int(len(nodes) * self.config.fraction_fit), self.config.min_fit_sites)
        if self.largest_site is None:
            sizes = query_training_sizes(grid, self.config)
            if not sizes:
                raise TrainingError("No site reported its training size; SecAgg+ cannot set max_weight.")
            self.largest_site = float(max(sizes.values()))
        arrays = _current_arrays(context)
        scale = max(
            (
                float(np.max(np.abs(a)))
                for i, a in enumerate(arrays)
                if i not in self.frozen and a.size and a.dtype.kind == "f"
            ),
            default=0.0,
        )
        self.parameters = self._derive(parameter_scale=scale)
        for name, value in self.parameters.as_workflow_kwargs().items():
            setattr(self, name, value)
        self._check_init_params()
        return self.parameters

    # Keep the protocol state (to explain a halted round) and each stage's wall time (for the record).
    def _timed(self, name: str, stage, grid, context, state) -> bool:  # type: ignore[no-untyped-def]
        self.last_state = state
        started = time.perf_counter()
        try:
            return bool(stage(grid, context, state))
        finally:
            self.stage_seconds[name] = round(time.perf_counter() - started, 4)

    def setup_stage(self, grid, context, state):  # type: ignore[no-untyped-def]
        self.stage_seconds = {}
        return self._timed("setup", super().setup_stage, grid, context, state)

    def share_keys_stage(self, grid, context, state):  # type: ignore[no-untyped-def]
        return self._timed("share_keys", super().share_keys_stage, grid, context, state)

    def collect_masked_vectors_stage(self, grid, context, state):  # type: ignore[no-untyped-def]
        return self._timed(
            "collect_masked_vectors", super().collect_masked_vectors_stage, grid, context, state
        )

    def unmask_stage(self, grid, context, state):  # type: ignore[no-untyped-def]
        # aggregate_fit runs inside the unmask stage: its time is the strategy's, not the protocol's.
        return self._timed("unmask_and_aggregate", super().unmask_stage, grid, context, state)
