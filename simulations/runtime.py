"""Run a federation on one machine with Flower's simulation engine (Ray), in this process.

The same ServerApp and ClientApp that a deployment runs, with the same configuration path, through the
engine's programmatic entry point (:mod:`common.flower_runtime.simulation_engine`, the one place that
touches that private seam). Ray is shut down when the run ends, so no process is left behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from common.flower_runtime.adaptations import enabled
from common.flower_runtime.engine_latency import prompt_message_handoff
from common.flower_runtime.simulation_engine import run_engine
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

    from client.client_app import app as client_app
    from common.config import RunConfig
    from common.flower_app import write_app_manifest
    from server.server_app import app as server_app

    config = RunConfig.from_flower(run_config)  # validate before starting anything
    if not config.out_dir:
        raise ValueError("run_federation needs an out-dir in the run config.")
    cores = os.cpu_count() or 1
    concurrent = max(1, min(concurrent_sites or cores, num_sites))

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
        # No 0.1 s timer between the ServerApp and the actors (off in stock mode).
        prompt_message_handoff() if enabled("prompt-handoff") else contextlib.nullcontext(),
    ):
        write_app_manifest(Path(app_dir))
        run_engine(
            server_app=server_app,
            client_app=client_app,
            num_sites=num_sites,
            run_config=dict(run_config),
            backend_config=backend_config,
            app_dir=Path(app_dir),
            verbose=verbose,
        )
    return SimulationOutcome(out_dir=Path(config.out_dir), num_sites=num_sites)
