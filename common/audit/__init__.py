"""fedscan's audit trail: append-only, hash-chained, Ed25519-signed JSON Lines logs, verified offline.

Each actor (a site, the server) keeps its own log and signs every entry with its own key. Details are
restricted per event type to counts, hashes, pseudonymous ids and config (:mod:`common.audit.events`),
so a log never holds PHI. Formats and the auditor's procedure: ``docs/audit.md``.

Writing (sites and the server)::

    log = AuditLog.open(site_dir / "audit" / "audit.jsonl", "site-a", signing_key, role="site")
    log.append("round.taken", run_id="run-1", round=3, model_sha256=h, examples=120, epsilon=0.8)

Checking (auditors)::

    result = verify_log(path, pubkeys=[load_verify_key("site-a.pub")])
    print(result.summary())              # names the first bad entry, if any
    findings = reconcile([read_verified_log(p) for p in site_logs], read_verified_log(server_log))

The HTML report (:mod:`common.audit.report`) is imported on demand: it pulls in matplotlib and jinja2.
"""

from __future__ import annotations

from common.audit.canonical import canonical_json, sha256_hex
from common.audit.entry import Entry
from common.audit.events import EVENTS, KINDS, EventSpec, check_details, is_token, new_token
from common.audit.log import AuditLog, Head, utc_timestamp
from common.audit.reconcile import Finding, Reconciliation, reconcile
from common.audit.verify import REASONS, Failure, Verification, VerifiedLog, read_verified_log, verify_log

__all__ = [
    "EVENTS",
    "KINDS",
    "REASONS",
    "AuditLog",
    "Entry",
    "EventSpec",
    "Failure",
    "Finding",
    "Head",
    "Reconciliation",
    "Verification",
    "VerifiedLog",
    "canonical_json",
    "check_details",
    "is_token",
    "new_token",
    "read_verified_log",
    "reconcile",
    "sha256_hex",
    "utc_timestamp",
    "verify_log",
]
