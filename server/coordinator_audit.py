"""The coordinator's own audit log: what happened to the federation between and around runs.

Each run keeps its log under its output directory (:mod:`server.audit_trail`); this log, at
``FED/server/audit/coordinator.jsonl``, records what belongs to no single run: every change to the
SuperLink's registrations (sites registered, revoked keys unregistered, registrations nobody provisioned
removed). It is signed with the federation's server audit key (``server/audit.key``, whose public half
the federation manifest names for actor ``server``), so ``fedscan audit verify --kit`` checks it like
the runs' logs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from common.audit import AuditLog
from common.audit.federation import SERVER_ACTOR, site_actor
from common.crypto import load_signing_key

if TYPE_CHECKING:
    from server.provision import Federation
    from server.superlink import RegistrationReport

__all__ = ["coordinator_log", "coordinator_log_file", "record_registrations"]


def coordinator_log_file(fed: Federation) -> Path:
    """The live file of the coordinator's log."""
    return fed.server_dir / "audit" / "coordinator.jsonl"


@contextmanager
def coordinator_log(fed: Federation) -> Iterator[AuditLog]:
    """The coordinator's audit log, open for appending."""
    with AuditLog.open(
        coordinator_log_file(fed), SERVER_ACTOR, load_signing_key(fed.audit_key), role="server"
    ) as log:
        yield log


def record_registrations(fed: Federation, report: RegistrationReport) -> None:
    """``registrations.sync`` for a sync that changed something (a sync that changed nothing is not news)."""
    if not report.changed:
        return
    with coordinator_log(fed) as log:
        log.append(
            "registrations.sync",
            registered=sorted(site_actor(s) for s in report.registered),
            unregistered=sorted(site_actor(s) for s in report.unregistered),
            removed_unknown=len(report.removed),
            active=len(fed.active_sites()),
        )
