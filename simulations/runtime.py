"""Run a federation on one machine with Flower's simulation engine (Ray), in this process.

Flower's public ``run_simulation`` cannot carry a run config, and ``flwr run`` starts a detached local
SuperLink daemon and needs the project source tree. We use the engine's programmatic entry point
(``flwr.simulation.run_simulation._run_simulation``), giving the ServerApp a Context with the run config
and every virtual SuperNode the same config through the Run's override config: the same ServerApp and
ClientApp that a deployment runs, with the same configuration path. This module is the only place
that touches that private seam (a test checks the config arrives on both sides), and Ray is shut down
when the run ends, so no process is left behind.
"""

from __future__ import annotations

import importlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from simulations.engine_latency import prompt_message_handoff
from simulations.flower_env import quiet_flower

__all__ = ["SimulationOutcome", "run_federation"]


@dataclass(frozen=True)
class SimulationOutcome:
    """Where the run's records are; the records themselves are read with ``server.run_records``."""

    out_dir: Path
    num_sites: int


def run_federation(
    run_config: dict[str, bool | int | float | str],
    num_sites: int,
    *,
    concurrent_sites: int | None = None,
    verbose: bool = False,
) -> SimulationOutcome:
    """Run the fedscan ServerApp against ``num_sites`` virtual SuperNodes and wait for it to finish.

    ``run_config`` is Flower's flat kebab-case mapping (``RunConfig.to_flower()``); it must name an
    ``out-dir``. At most ``concurrent_sites`` ClientApps train at once (default: one per core).
    """
    quiet_flower()
    # `flwr.simulation.run_simulation` is also a function re-exported by the package: import the module.
    engine = importlib.import_module("flwr.simulation.run_simulation")

    from client.client_app import app as client_app
    from common.config import RunConfig
    from common.flower_app import write_app_manifest
    from server.server_app import app as server_app

    config = RunConfig.from_flower(run_config)  # validate before starting anything
    if not config.out_dir:
        raise ValueError("run_federation needs an out-dir in the run config.")
    cores = os.cpu_count() or 1
    concurrent = max(1, min(concurrent_sites or cores, num_sites))

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
    backend_config = {
        "client_resources": {"num_cpus": max(1, cores // concurrent), "num_gpus": 0.0},
        "init_args": {
            "num_cpus": cores,
            "num_gpus": 0,
            "include_dashboard": False,
            "logging_level": logging.INFO if verbose else logging.ERROR,
            "log_to_driver": verbose,
            # Ray starts its workers at nice 15, so every other process on the host (this driver,
            # Ray's own daemons, any other job) preempted the ClientApps' training: on 2 shared cores
            # their compute took up to a third longer than the same work in plain processes.
            "_system_config": {"worker_niceness": 0},
        },
    }
    if not verbose:
        logging.getLogger("flwr").setLevel(logging.WARNING)
    with (
        tempfile.TemporaryDirectory(prefix="fedscan-app-") as app_dir,
        prompt_message_handoff(),  # no 0.1 s timer between the ServerApp and the actors
    ):
        write_app_manifest(Path(app_dir))
        engine._run_simulation(
            num_supernodes=num_sites,
            exit_event=engine.EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
            client_app=client_app,
            server_app=server_app,
            backend_config=backend_config,  # type: ignore[arg-type]
            server_app_context=server_context,
            app_dir=app_dir,
            is_app=True,  # makes every SuperNode fuse the run's config over the app's defaults
            run=run,
            verbose_logging=verbose,
        )
    return SimulationOutcome(out_dir=Path(config.out_dir), num_sites=num_sites)
