"""A coordinator that stays up: ``fedscan server start``, ``server submit``, ``server status``.

``server start`` runs the federation's SuperLink (with its control-plane gate, TLS and node
authentication) until it is stopped, its state in a database under the kit (``state/superlink.db``:
registrations and run history survive a restart), and keeps the SuperLink's registrations equal to the
kit's active sites: at start, whenever the kit's record changes (``provision add-site|revoke-site``
also apply at once), and every ``resync`` seconds. ``server submit`` starts a run on it over the
coordinator's loopback, follows it and exits with the run's result; ``server status`` says what is
connected and running. ``server run`` (one SuperLink for one run) stays for scripts and tests.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.config import RunConfig
from common.errors import ConfigError, TrainingError
from common.flower_runtime.wakeups import HOLD_SECONDS
from server.deployment import (
    DeploymentOutcome,
    Scalar,
    deployment_run_config,
    report_registrations,
    run_training,
    sync_before_opening,
)
from server.provision import Federation, load_federation
from server.run_records import RoundRecord
from server.superlink import SuperLink, running_superlink

__all__ = ["CoordinatorStatus", "attach", "coordinator_status", "serve", "submit"]

#: Seconds between two registration syncs of a running coordinator, whatever else happens.
RESYNC_SECONDS = 60.0


def _record_mtime(fed: Federation) -> float:
    try:
        return (fed.server_dir / "kit.toml").stat().st_mtime
    except FileNotFoundError:
        return 0.0


def serve(
    fed: Federation,
    *,
    listen_host: str = "0.0.0.0",
    port: int | None = None,
    isolation: str = "warm",
    max_wait: float | None = 0.1,
    hold: float | None = HOLD_SECONDS,
    database: Path | None = None,
    in_memory: bool = False,
    resync: float = RESYNC_SECONDS,
    on_progress: Callable[[str], None] = lambda _: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Run the coordinator until ``should_stop`` (or Ctrl-C / SIGTERM); see the module docstring.

    Raises
    ------
    TrainingError
        If the SuperLink or its executor exits on its own (with the end of its log).
    """
    if in_memory:
        database = None  # Flower's in-memory state: faster; registrations come back from the kit anyway
    elif database is None:
        database = fed.server_dir / "state" / "superlink.db"
    sync_before_opening(fed, database, listen_host, on_progress)
    link = SuperLink(
        fed, listen_host=listen_host, port=port, isolation=isolation, max_wait=max_wait, hold=hold,
        database=database,
    )  # fmt: skip
    with link:
        on_progress(
            f"coordinator of federation {fed.name}: SuperLink on {listen_host}:{link.port} (TLS, node "
            f"authentication, Fleet API only off loopback), state in {database or 'memory'}"
        )
        report_registrations(link.sync_registrations(), on_progress)
        seen = _record_mtime(fed)
        next_sync = time.monotonic() + resync
        while not should_stop():
            link.check_alive()
            changed = _record_mtime(fed)
            if changed != seen or time.monotonic() >= next_sync:
                link.fed = load_federation(fed.root)
                report_registrations(link.sync_registrations(), on_progress)
                seen, next_sync = changed, time.monotonic() + resync
            time.sleep(1.0)


def attach(fed: Federation) -> SuperLink:
    """A handle on the running coordinator of ``fed`` (its ``flwr`` CLI on loopback), or a clear error."""
    record = running_superlink(fed)
    if record is None:
        raise ConfigError(
            f"No coordinator runs for federation {fed.name}: start one with `fedscan server start --kit "
            f"{fed.server_dir}` (or use `fedscan server run` for a one-shot run)."
        )
    return SuperLink(fed, port=int(record["port"]), isolation=str(record.get("isolation", "warm")))


def submit(
    fed: Federation,
    overrides: Mapping[str, Scalar],
    *,
    out_dir: Path | None = None,
    wait_for_sites: float = 600.0,
    timeout: float = 12 * 3600.0,
    on_progress: Callable[[str], None] = lambda _: None,
    on_round: Callable[[RoundRecord], None] = lambda _: None,
) -> DeploymentOutcome:
    """Start a run on the running coordinator and follow it to its end (see :func:`run_training`)."""
    deployment_run_config(fed, overrides, out_dir or fed.server_dir)  # refuse a bad config first
    return run_training(
        attach(fed),
        overrides,
        out_dir=out_dir,
        wait_for_sites=wait_for_sites,
        timeout=timeout,
        on_progress=on_progress,
        on_round=on_round,
    )


@dataclass(frozen=True)
class CoordinatorStatus:
    """What ``fedscan server status`` reports."""

    federation: str
    running: bool
    pid: int | None
    port: int | None
    sites_active: tuple[str, ...]
    sites_online: tuple[str, ...]
    runs: tuple[dict[str, Any], ...]
    defaults: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "federation": self.federation,
            "running": self.running,
            "pid": self.pid,
            "port": self.port,
            "sites_active": list(self.sites_active),
            "sites_online": list(self.sites_online),
            "sites_offline": sorted(set(self.sites_active) - set(self.sites_online)),
            "runs": list(self.runs),
            "defaults": self.defaults,
        }


def coordinator_status(fed: Federation) -> CoordinatorStatus:
    """The coordinator's state: running or not, sites connected, runs and their state, quorum, timeouts."""
    record = running_superlink(fed)
    active = tuple(sorted(s.site_id for s in fed.active_sites()))
    defaults = deployment_run_config(fed, {}, fed.server_dir)
    config = RunConfig.from_flower({**RunConfig().to_flower(), **defaults})
    quorum = {
        "min-fit-sites": config.min_fit_sites,
        "secure-aggregation": config.secure_aggregation,
        "secagg-timeout": config.secagg_timeout,
    }
    if record is None:
        return CoordinatorStatus(fed.name, False, None, None, active, (), (), quorum)
    link = attach(fed)
    try:
        online = tuple(link.online_sites())
        runs = tuple(
            {
                k: r.get(k)
                for k in ("run-id", "status", "status-details", "created-at", "finished-at")
                if k in r
            }
            for r in link.flwr("list", "fedscan").get("runs", [])
        )
    except TrainingError:
        online, runs = (), ()
    return CoordinatorStatus(
        fed.name, True, int(record["pid"]), int(record["port"]), active, online, runs, quorum
    )


def status_json(fed: Federation) -> str:
    """The status as indented JSON."""
    return json.dumps(coordinator_status(fed).to_dict(), indent=2)
