"""The simulation engine's programmatic entry point: a run config for the ServerApp and every virtual node.

Flower's public ``run_simulation`` cannot carry a run config, and ``flwr run`` starts a detached local
SuperLink daemon and needs the project source tree. :func:`run_engine` uses the engine's private entry
point (``flwr.simulation.run_simulation._run_simulation``), giving the ServerApp a Context with the run
config and every virtual SuperNode the same config through the Run's override config: the same
ServerApp and ClientApp that a deployment runs, with the same configuration path. This is the only place
that touches that seam (``tests/simulations/test_runtime.py`` checks the config arrives on both sides).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

__all__ = ["run_engine"]


def run_engine(
    *,
    server_app: Any,
    client_app: Any,
    num_sites: int,
    run_config: dict[str, bool | int | float | str],
    backend_config: dict[str, Any],
    app_dir: Path,
    verbose: bool = False,
) -> None:
    """Run ``server_app`` against ``num_sites`` virtual SuperNodes of ``client_app``, in this process.

    ``app_dir`` holds the app's manifest (``pyproject.toml``); ``run_config`` is Flower's flat
    kebab-case mapping, given to the ServerApp's context and fused over the app's defaults at every node.
    """
    # `flwr.simulation.run_simulation` is also a function re-exported by the package: import the module.
    engine = importlib.import_module("flwr.simulation.run_simulation")
    # The same Run the engine builds for itself when given none, plus our run config.
    run_id = engine.generate_rand_int_from_bytes(engine.RUN_ID_NUM_BYTES)
    run = engine.Run.create_empty(run_id=run_id)
    run.primary_task_id = engine.generate_rand_int_from_bytes(engine.TASK_ID_NUM_BYTES)
    run.federation_id = engine.NOOP_FEDERATION_ID
    run.override_config = dict(run_config)
    engine.TaskIdentity.task_id = 1
    engine.TaskIdentity.run_id = run_id
    engine.TaskIdentity.node_id = engine.SUPERLINK_NODE_ID
    server_context = engine.Context(
        run_id=run_id, node_id=0, node_config={}, state=engine.RecordDict(), run_config=dict(run_config)
    )
    engine._run_simulation(
        num_supernodes=num_sites,
        exit_event=engine.EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
        client_app=client_app,
        server_app=server_app,
        backend_config=backend_config,
        server_app_context=server_context,
        app_dir=str(app_dir),
        is_app=True,  # makes every SuperNode fuse the run's config over the app's defaults
        run=run,
        verbose_logging=verbose,
    )
