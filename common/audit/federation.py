"""Names the two ends of a federation share so that their audit logs can be matched.

A site's log and the server's log are written independently, each signed with its own key;
reconciliation (:mod:`common.audit.reconcile`) pairs their round entries by run id and round and
their participants by site id. These are the conventions both ends follow:

``run_token``
    The run id in every round event: ``flwr-run-<Flower's run id>``. Flower gives the ServerApp and
    every ClientApp of a run the same numeric ``context.run_id``; bare, it looks like a record number
    and the event registry refuses it, so both ends prefix it the same way.
``SITE_ID_METRIC``
    Each site's fit reply carries its audit actor id under this metric key; the server lists
    participants by it, so ``participants`` in ``round.aggregated`` are the ``actor`` of each site's log.
``MANIFEST_METRIC``
    Each site's fit reply also carries the SHA-256 of its data manifest (a commitment to the data
    version it trained on, which reveals nothing about the records); the model card lists it per site.
``AUDIT_HEAD_METRIC``, ``AUDIT_SEQ_METRIC``
    Each site's fit reply also carries the head of its own audit log right after its ``round.taken``
    entry (line hash and seq); the server records them in ``round.aggregated``, so a site log that is
    later cut, rewritten or re-created no longer contains the head the server anchored
    (``fedscan audit reconcile``). A head is a hash of the site's own log lines: it reveals nothing.
``SITE_IDENTITY_TASK``
    The ``get_properties`` task with which the ServerApp asks every connected site for its id at the
    start of a run (``run.start``'s ``sites``).
"""

from __future__ import annotations

from typing import Final

from common.audit.events import is_token
from common.errors import AuditError

__all__ = [
    "AUDIT_HEAD_METRIC",
    "AUDIT_SEQ_METRIC",
    "MANIFEST_METRIC",
    "SERVER_ACTOR",
    "SITE_IDENTITY_TASK",
    "SITE_ID_METRIC",
    "run_token",
    "site_actor",
]

SITE_ID_METRIC: Final = "site-id"
MANIFEST_METRIC: Final = "manifest-sha256"
SITE_IDENTITY_TASK: Final = "fedscan-site-identity"
AUDIT_HEAD_METRIC: Final = "audit-head"
AUDIT_SEQ_METRIC: Final = "audit-head-seq"
#: The actor of the aggregator's log.
SERVER_ACTOR: Final = "server"


def run_token(flower_run_id: int | str) -> str:
    """The audit run id of Flower run ``flower_run_id`` (the same on the server and every site)."""
    token = f"flwr-run-{int(flower_run_id)}"
    if not is_token(token):  # a negative or absurdly long id: never from Flower
        raise AuditError("Flower's run id cannot name an audit run.")
    return token


def site_actor(site_id: str) -> str:
    """The audit actor of the site named ``site_id`` in its site.toml: the id in lower case.

    Raises
    ------
    AuditError
        If the id cannot name an audit log (it looks like a date, a UID or a record number, which the
        log refuses as possible PHI): choose another site id.
    """
    actor = site_id.lower()
    if not is_token(actor):
        raise AuditError(
            f"Site id {site_id!r} cannot name an audit log: use 1-64 characters of a-z, 0-9, '.', '_' "
            "and '-', not shaped like a date, a DICOM UID or a record number (e.g. 'site-a', 'hospital2')."
        )
    return actor
