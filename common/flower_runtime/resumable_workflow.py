"""Flower's legacy ``DefaultWorkflow``, starting at a given round (what resuming from a checkpoint needs).

Flower 1.42's ``DefaultWorkflow.__call__`` always starts at round 1 and offers no hook to start later.
:class:`ResumableWorkflow` repeats its body (the client-manager thread, initial parameters, then fit,
centralised and federated evaluation per round) with the first round as a parameter, so rounds keep
their real numbers after a resume: the sites' per-round seeds, FedAdam's bias correction, the records
and the checkpoints all continue as if the run had never stopped. It uses Flower's own workflow
functions throughout; only the loop's start differs. This is a functional adaptation (resume), not a
performance one, so stock mode keeps it.
"""

from __future__ import annotations

import timeit

from flwr.app import ConfigRecord, Context
from flwr.server import Grid, LegacyContext
from flwr.server.compat.app_utils import start_update_client_manager_thread
from flwr.server.workflow import DefaultWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, Key
from flwr.server.workflow.default_workflows import (
    default_centralized_evaluation_workflow,
    default_init_params_workflow,
)

__all__ = ["ResumableWorkflow"]


class ResumableWorkflow(DefaultWorkflow):
    """Flower's legacy DefaultWorkflow, starting at ``start_round`` instead of 1."""

    def __init__(self, start_round: int = 1, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(**kwargs)
        self.start_round = start_round

    def __call__(self, grid: Grid, context: Context) -> None:
        if not isinstance(context, LegacyContext):
            raise TypeError(f"Expect a LegacyContext, but got {type(context).__name__}.")
        thread, stop, registered = start_update_client_manager_thread(grid, context.client_manager)
        registered.wait()
        try:
            default_init_params_workflow(grid, context)
            cfg = ConfigRecord()
            cfg[Key.START_TIME] = timeit.default_timer()
            context.state.config_records[MAIN_CONFIGS_RECORD] = cfg
            for current_round in range(self.start_round, context.config.num_rounds + 1):
                cfg[Key.CURRENT_ROUND] = current_round
                self.fit_workflow(grid, context)
                default_centralized_evaluation_workflow(grid, context)
                self.evaluate_workflow(grid, context)
        finally:
            stop.set()
            thread.join()
