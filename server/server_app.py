"""The aggregator's Flower ServerApp (legacy workflow, where SecAgg+ runs).

One run: (optionally) resume from the last verified checkpoint, (optionally) ask every site for its
feature moments and install the federated standardiser, then the rounds of the configured strategy,
each ending with a per-round record and a sealed checkpoint; the final model at the end. A round with
a failure, or a round that never completed, makes the run fail (``TrainingError``), never a silent
exit 0.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
from flwr.app import Context, Message
from flwr.common import GetPropertiesIns
from flwr.common.constant import MessageTypeLegacy
from flwr.compat.common import recorddict_compat as compat
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig

from common.config import RunConfig
from common.errors import ConfigError, TrainingError
from common.flower_runtime.adaptations import enabled
from common.flower_runtime.message_packing import PackingGrid
from common.flower_runtime.resumable_workflow import ResumableWorkflow
from common.models import LabelledArrays, model_from_config
from common.models.svm import FEATURE_MOMENTS_TASK, standardiser_from_moments
from server.audit_trail import ServerAuditTrail
from server.checkpoints import CheckpointStore
from server.privacy import build_private_fit_workflow
from server.run_records import RunRecorder
from server.secagg_workflow import wait_for_nodes
from server.strategy import build_strategy

__all__ = ["app", "federated_standardiser", "run_training"]

log = logging.getLogger("fedscan.server")

app = ServerApp()


def federated_standardiser(grid: Grid, config: RunConfig) -> tuple[np.ndarray, np.ndarray]:
    """Global feature mean and scale from every site's aggregates (``n``, sum, sum of squares).

    One Flower *query* round (``get_properties``) before training. What a site reveals is its number
    of training examples and, per feature, its sum and sum of squares: aggregates, no row. The pooled
    moments are exactly those of the union of the sites' training splits.
    """
    nodes = wait_for_nodes(grid, config.min_fit_sites)
    content = compat.getpropertiesins_to_recorddict(GetPropertiesIns({"task": FEATURE_MOMENTS_TASK}))
    messages = [
        Message(
            content=content, dst_node_id=node, message_type=MessageTypeLegacy.GET_PROPERTIES, group_id="0"
        )
        for node in nodes
    ]
    moments = []
    for reply in grid.send_and_receive(messages):
        if reply.has_error():
            raise TrainingError(f"A site failed to report its feature moments: {reply.error.reason}")
        props = compat.recorddict_to_getpropertiesres(reply.content).properties
        moments.append(
            (
                int(props["num-examples"]),  # type: ignore[arg-type]
                np.frombuffer(props["sum"], dtype=np.float64),  # type: ignore[arg-type]
                np.frombuffer(props["sumsq"], dtype=np.float64),  # type: ignore[arg-type]
            )
        )
    if len(moments) < len(nodes):
        raise TrainingError(f"Only {len(moments)} of {len(nodes)} sites reported their feature moments.")
    return standardiser_from_moments(moments)


def load_central_test_set(path: str) -> LabelledArrays | None:
    """The server's public test set: an ``.npz`` with ``x`` and ``y`` (public data only, not sealed)."""
    if not path:
        return None
    if not Path(path).exists():
        raise ConfigError(f"central-test-set {path} does not exist.")
    with np.load(io.BytesIO(Path(path).read_bytes()), allow_pickle=False) as npz:
        return LabelledArrays(npz["x"], npz["y"].astype(np.int64))


def run_training(grid: Grid, context: Context) -> RunRecorder:
    """Run (or resume) every round of the configured training; TrainingError if any round failed."""
    config = RunConfig.from_flower(context.run_config)
    model = model_from_config(config)
    initial = model.get_arrays()
    state: list[np.ndarray] = []
    start_round = 1
    checkpoints = (
        CheckpointStore.for_run(Path(config.out_dir)) if config.out_dir and config.checkpoints else None
    )
    if config.resume:
        if checkpoints is None:
            raise ConfigError("resume needs an out-dir with checkpoints (checkpoints = true).")
        latest = checkpoints.latest(config.training_digest())
        if latest is not None:
            initial, state, start_round = latest.arrays, latest.strategy_state, latest.round + 1
            log.warning("Resuming after round %d from its checkpoint.", latest.round)
    recorder = RunRecorder(config.out_dir or None, keep_until=start_round - 1 if config.resume else None)
    if config.feature_scaling == "federated" and start_round == 1:
        if not hasattr(model, "set_standardiser"):
            raise ConfigError(f"feature-scaling = federated applies to SVM models, not {config.model}.")
        model.set_arrays(initial)
        model.set_standardiser(*federated_standardiser(grid, config))
        initial = model.get_arrays()

    # The server's audit log: run.start now, each round and checkpoint, the model card at the end.
    trail = ServerAuditTrail.start(grid, context, config, initial, first_round=start_round)

    def checkpoint(server_round: int, arrays: list[np.ndarray], strategy_state: list[np.ndarray]) -> None:
        if checkpoints is not None:
            checkpoints.save(server_round, arrays, strategy_state, config_digest=config.training_digest())
        if trail is not None:
            trail.round_finished(server_round, arrays, recorder.round(server_round), checkpoints)

    strategy = build_strategy(
        config,
        initial,
        recorder,
        central_test=load_central_test_set(config.central_test_set),
        on_round_end=checkpoint,
    )
    strategy.restore_state(state)
    legacy = LegacyContext(
        context=context,
        config=ServerConfig(num_rounds=config.num_server_rounds),
        strategy=strategy,  # type: ignore[arg-type]
    )
    num_sites = max(config.min_fit_sites, len(config.site_dirs))
    # SecAgg+ with derived parameters, client-level DP, refusals and epsilon per round (server.privacy).
    workflow = ResumableWorkflow(start_round, fit_workflow=build_private_fit_workflow(config, num_sites))
    try:
        workflow(grid, legacy)
    except BaseException:
        if trail is not None:
            trail.failed()
        raise
    recorder.save_model(strategy.latest_arrays, config_digest=config.digest())
    failed = [r.round for r in recorder.rounds.values() if r.failures]
    missing = [r for r in range(1, config.num_server_rounds + 1) if r not in recorder.rounds]
    if trail is not None and (failed or missing):
        trail.failed()
    elif trail is not None:
        trail.finish(strategy.latest_arrays)
    if failed or missing:
        raise TrainingError(
            f"Training run finished with problems: rounds with failures {failed or 'none'}, "
            f"rounds that never completed {missing or 'none'}."
        )
    return recorder


@app.main()
def main(grid: Grid, context: Context) -> None:
    # Packs each model into one wire object; the sites' ClientApp unpacks
    # (common.flower_runtime.message_packing; off in stock mode).
    run_training(PackingGrid(grid) if enabled("message-packing") else grid, context)
