"""``fedscan demo --deployment``: the demo as a real local federation, in one command.

The same synthetic hospitals as ``fedscan demo``, but joined the way hospitals join: each site enrols
(its own keys, a public request), the coordinator provisions the federation from the requests, then
real processes on 127.0.0.1 with TLS and node authentication: ``fedscan server start`` (the
coordinator) and one ``fedscan site run`` per site (supervisors of their SuperNodes). A run is submitted
to the coordinator over its loopback, the audit trail and the model card are verified the way an
auditor would (``fedscan audit verify --kit``, ``reconcile``, ``verify-model``), and every process the
demo started is stopped by PID; the demo checks that none is left and that the coordinator's port is
closed again.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common.audit import read_verified_log, reconcile
from common.errors import TrainingError
from common.federation_manifest import read_manifest
from common.flower_runtime.daemons import Daemon, ProcessRef, free_port
from server.audit_trail import AUDIT_LOG
from server.coordinator import attach, submit
from server.coordinator_audit import coordinator_log_file
from server.deployment import DeploymentOutcome
from server.model_verification import ModelVerification, verify_run_model
from server.run_records import RoundRecord
from simulations.demo import demo_overrides, prepare_demo_sites, prepare_workdir
from simulations.local_federation import provision_local_federation

__all__ = ["DeploymentDemo", "run_deployment_demo"]


@dataclass(frozen=True)
class DeploymentDemo:
    """What the deployment demo did and found."""

    workdir: Path
    federation_dir: Path
    outcome: DeploymentOutcome
    logs_verified: bool
    reconciled: bool
    model: ModelVerification
    processes_left: tuple[int, ...]
    port_closed: bool

    @property
    def ok(self) -> bool:
        return (
            self.outcome.completed
            and self.logs_verified
            and self.reconciled
            and self.model.ok
            and not self.processes_left
            and self.port_closed
        )


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "common.cli", *args]


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def run_deployment_demo(
    workdir: Path,
    *,
    rounds: int = 3,
    sites: int = 3,
    slices_per_site: int = 160,
    on_stage: Callable[[str], None] = lambda _: None,
    on_round: Callable[[RoundRecord], None] = lambda _: None,
) -> DeploymentDemo:
    """Provision, start, train, verify, stop (see the module docstring)."""
    workdir = Path(workdir).resolve()
    prepare_workdir(workdir)
    _, site_dirs, _ = prepare_demo_sites(workdir, sites, slices_per_site, on_stage)
    port = free_port()
    on_stage(f"Enrolment: each site writes a public request; the coordinator provisions 127.0.0.1:{port}")
    fed = provision_local_federation(
        site_dirs, workdir / "federation", f"127.0.0.1:{port}", federation="demo"
    )
    logs = workdir / "logs"
    daemons: list[Daemon] = []
    seen: list[ProcessRef] = []
    try:
        on_stage("Starting the coordinator (fedscan server start: SuperLink, TLS, node authentication)")
        coordinator = Daemon(
            "server start",
            _cli("server", "start", "--kit", str(fed.server_dir), "--listen", "127.0.0.1", "--in-memory"),
            logs / "coordinator.log",
            die_with_parent=True,
        ).start()
        daemons.append(coordinator)
        _wait(lambda: _port_open(port), 120, "the coordinator to listen", coordinator)
        on_stage(f"Starting {sites} sites (fedscan site run: a supervised SuperNode each, connecting out)")
        for site in site_dirs:
            kit = fed.site_kit(site.root.name)
            daemons.append(
                Daemon(
                    f"site run {site.root.name}",
                    _cli("site", "run", "--site-dir", str(site.root), "--kit", str(kit)),
                    logs / f"{site.root.name}.log",
                    die_with_parent=True,
                ).start()
            )
        link = attach(fed)
        _wait(lambda: len(link.online_sites()) == sites, 240, f"{sites} sites to connect", *daemons)
        on_stage(f"Federated training: {rounds} rounds, {sites} sites, submitted to the coordinator")
        outcome = submit(
            fed,
            {**demo_overrides(rounds), "min-fit-sites": sites},
            out_dir=workdir / "run",
            wait_for_sites=120,
            timeout=1800,
            on_round=on_round,
        )
        for daemon in daemons:
            seen.extend(daemon.processes())
    finally:
        on_stage("Stopping every process the demo started")
        for daemon in reversed(daemons):
            seen.extend(daemon.processes())
            daemon.stop(timeout=30)
    deadline = time.monotonic() + 20
    while any(r.alive for r in seen) and time.monotonic() < deadline:
        time.sleep(0.2)
    on_stage("Audit: every log against its actor's key in the manifest, reconciliation, the model")
    manifest = read_manifest(fed.manifest_file)
    keys, genesis = manifest.audit_keys(), manifest.enrolled_log_genesis()
    site_logs = [
        read_verified_log(
            s.root / "audit" / "audit.jsonl", actor_keys=keys, genesis=genesis, require_pinned=True
        )
        for s in site_dirs
    ]
    server_log = read_verified_log(outcome.out_dir / AUDIT_LOG, actor_keys=keys, require_pinned=True)
    coordinator_log = read_verified_log(coordinator_log_file(fed), actor_keys=keys, require_pinned=True)
    verified = all(v.verification.ok for v in (*site_logs, server_log, coordinator_log))
    reconciliation = reconcile(site_logs, server_log)
    model = verify_run_model(outcome.out_dir, manifest.server_audit_key)
    return DeploymentDemo(
        workdir=workdir,
        federation_dir=fed.root,
        outcome=outcome,
        logs_verified=verified,
        reconciled=reconciliation.ok,
        model=model,
        processes_left=tuple(r.pid for r in seen if r.alive),
        port_closed=not _port_open(port),
    )


def _wait(predicate: Callable[[], bool], timeout: float, what: str, *daemons: Daemon) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        for daemon in daemons:
            if not daemon.running:
                raise TrainingError(f"{daemon.name} exited while waiting for {what}: {daemon.tail(5)}")
        if time.monotonic() > deadline:
            raise TrainingError(f"Timed out after {timeout:.0f} s waiting for {what}.")
        time.sleep(1.0)
