"""Reconciling site logs with the server's log: who took part in which round, on which model.

Each party keeps its own log, signed with its own key, so neither can rewrite the other's account.
For every round the server's ``round.aggregated`` entry lists the participants and the model hash the
round started from; each site's ``round.taken`` entry states the same from its side (run id, round,
model hash). Reconciliation matches the two, both ways:

``unlisted-participation``
    A site says it trained in a round, but the server's log does not list it (or has no such round).
``absent-participant``
    The server lists a site in a round, but that site's log has no ``round.taken`` for it.
``refused-but-listed``
    The server lists a site in a round the site's log says it refused.
``model-mismatch``
    Both agree the site took part, but not on the model it trained from.
``duplicate-entry``
    One party logged the same round twice.
``anchored-head-missing``
    The server anchored a head of the site's own log in a round (seq and line hash the site reported
    with its update), and the site's log now ends before it: entries were cut, or the log was deleted
    and re-created.
``anchored-head-differs``
    The site's log has an entry at the anchored seq, but not the one anchored: the log was rewritten or
    re-created since.
``ledger-rollback``
    A site's ``round.taken`` entries record its epsilon ledger's counter (``ledger_seq``); it went back
    (or repeated), so the ledger was replaced by an older copy between two rounds and budget it had
    spent was forgotten.
``unverified-log``
    A log failed verification: only its entries before the first bad one were reconciled.

Sites the server lists but whose logs were not supplied are reported as *unchecked*, not as
differences: the auditor decides which logs to ask for. Likewise, runs a site's log mentions but the
server's log never does (no entry of the run at all, e.g. a log kept per run directory) are reported as
unchecked runs; a site claiming a round of a run the server's log *does* know is a difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from common.audit.federation import SERVER_ACTOR
from common.audit.verify import VerifiedLog
from common.errors import AuditError

__all__ = ["FINDING_KINDS", "Finding", "Reconciliation", "reconcile"]

FINDING_KINDS: Final = (
    "unlisted-participation",
    "absent-participant",
    "refused-but-listed",
    "model-mismatch",
    "duplicate-entry",
    "anchored-head-missing",
    "anchored-head-differs",
    "ledger-rollback",
    "unverified-log",
)

_Round = tuple[str, int]


@dataclass(frozen=True)
class Finding:
    """One difference between the logs, with where each side's evidence is."""

    kind: str
    site: str
    run_id: str | None
    round: int | None
    detail: str
    site_ref: str | None = None
    server_ref: str | None = None

    def __str__(self) -> str:
        where = f"run {self.run_id} round {self.round}" if self.run_id is not None else "log"
        refs = "; ".join(r for r in (self.site_ref, self.server_ref) if r)
        return f"{self.kind}: site {self.site}, {where}: {self.detail}" + (
            f" (evidence: {refs})" if refs else ""
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "kind": self.kind,
            "site": self.site,
            "run_id": self.run_id,
            "round": self.round,
            "detail": self.detail,
            "site_ref": self.site_ref,
            "server_ref": self.server_ref,
        }


@dataclass(frozen=True)
class Reconciliation:
    """The outcome: differences (``findings``), sites that could not be checked, and what was compared."""

    findings: tuple[Finding, ...]
    unchecked_sites: tuple[str, ...]
    rounds_checked: int
    participations_checked: int
    sites: tuple[str, ...] = field(default=())
    unchecked_runs: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """Whether the logs agree (unchecked sites do not count as disagreement)."""
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "ok": self.ok,
            "findings": [f.to_dict() for f in self.findings],
            "unchecked_sites": list(self.unchecked_sites),
            "rounds_checked": self.rounds_checked,
            "participations_checked": self.participations_checked,
            "sites": list(self.sites),
            "unchecked_runs": list(self.unchecked_runs),
        }


@dataclass
class _SiteView:
    taken: dict[_Round, tuple[str, str]] = field(default_factory=dict)  # round -> (model hash, ref)
    refused: dict[_Round, str] = field(default_factory=dict)  # round -> ref


def reconcile(site_logs: Sequence[VerifiedLog], server_log: VerifiedLog) -> Reconciliation:
    """Match every round's participants in ``server_log`` against the sites' own entries.

    Raises
    ------
    AuditError
        If a log has the wrong role (a site log passed as the server's, or the reverse), or two site
        logs belong to the same actor.
    """
    if server_log.verification.role not in ("server", None):
        raise AuditError(
            f"{server_log.verification.log} is a {server_log.verification.role} log, not the server's; "
            "pass the server's log last."
        )
    if server_log.verification.actor not in (SERVER_ACTOR, None):  # the role alone is self-declared
        raise AuditError(
            f"{server_log.verification.log} is the log of actor {server_log.verification.actor}, not the "
            "server's; pass the server's log last."
        )
    findings: list[Finding] = []
    sites: dict[str, _SiteView] = {}
    for log in site_logs:
        ver = log.verification
        if ver.role not in ("site", None) or ver.actor == SERVER_ACTOR:
            raise AuditError(f"{ver.log} is a {ver.role} log, not a site's; pass the server's log last.")
        if ver.actor is None:
            findings.append(Finding("unverified-log", "?", None, None, f"{ver.log} has no readable genesis"))
            continue
        if ver.actor in sites:
            raise AuditError(f"Two site logs belong to {ver.actor}; pass each site's log once.")
        sites[ver.actor] = _site_view(log, findings)
        if ver.failure is not None:
            findings.append(Finding("unverified-log", ver.actor, None, None, str(ver.failure)))
    if server_log.verification.failure is not None:
        findings.append(Finding("unverified-log", "server", None, None, str(server_log.verification.failure)))

    rounds = _server_rounds(server_log, findings)
    logs_by_actor = {log.verification.actor: log for log in site_logs if log.verification.actor}
    findings += _anchored_heads(server_log, logs_by_actor)
    known_runs = {str(e.details["run_id"]) for e in server_log.entries if "run_id" in e.details}
    unchecked_runs: set[str] = set()
    unchecked: set[str] = set()
    participations = 0
    for key, (participants, model, ref) in rounds.items():
        for site in participants:
            participations += 1
            view = sites.get(site)
            if view is None:
                unchecked.add(site)
                continue
            if key in view.refused and key not in view.taken:
                findings.append(
                    Finding(
                        "refused-but-listed",
                        site,
                        *key,
                        "the site refused this round",
                        view.refused[key],
                        ref,
                    )
                )
            elif key not in view.taken:
                findings.append(
                    Finding(
                        "absent-participant",
                        site,
                        *key,
                        "listed by the server, no round.taken in the site's log",
                        None,
                        ref,
                    )
                )
            elif view.taken[key][0] != model:
                findings.append(
                    Finding(
                        "model-mismatch",
                        site,
                        *key,
                        f"site trained from {view.taken[key][0][:16]}..., server sent {model[:16]}...",
                        view.taken[key][1],
                        ref,
                    )
                )
    for site, view in sites.items():
        for key, (_, site_ref) in view.taken.items():
            listed = rounds.get(key)
            if key[0] not in known_runs:
                unchecked_runs.add(key[0])
                continue
            if listed is None:
                findings.append(
                    Finding(
                        "unlisted-participation", site, *key, "the server's log has no such round", site_ref
                    )
                )
            elif site not in listed[0]:
                findings.append(
                    Finding(
                        "unlisted-participation",
                        site,
                        *key,
                        "the server does not list this site",
                        site_ref,
                        listed[2],
                    )
                )
    findings.sort(key=lambda f: (f.run_id or "", f.round or 0, f.site, f.kind))
    return Reconciliation(
        findings=tuple(findings),
        unchecked_sites=tuple(sorted(unchecked)),
        rounds_checked=len(rounds),
        participations_checked=participations,
        sites=tuple(sorted(sites)),
        unchecked_runs=tuple(sorted(unchecked_runs)),
    )


def _anchored_heads(server_log: VerifiedLog, site_logs: dict[str, VerifiedLog]) -> list[Finding]:
    """Every site-log head the server anchored, checked against that site's log (if supplied)."""
    found: list[Finding] = []
    for index, entry in enumerate(server_log.entries):
        if entry.event != "round.aggregated":
            continue
        heads = entry.details.get("site_log_heads") or {}
        seqs = entry.details.get("site_log_seqs") or {}
        key = (str(entry.details["run_id"]), int(entry.details["round"]))
        for site, digest in heads.items():
            log = site_logs.get(site)
            seq = seqs.get(site)
            if log is None or not isinstance(seq, int):
                continue
            ref = server_log.locate(index)
            if seq >= len(log.entries) or log.entries[seq].seq != seq:
                last = log.entries[-1].seq if log.entries else -1
                found.append(
                    Finding(
                        "anchored-head-missing",
                        site,
                        *key,
                        f"the server anchored the site's log at seq {seq}; the log ends at seq {last} "
                        "(entries cut, or the log re-created)",
                        None,
                        ref,
                    )
                )
            elif log.entries[seq].line_hash() != digest:
                found.append(
                    Finding(
                        "anchored-head-differs",
                        site,
                        *key,
                        f"the site's entry at seq {seq} is not the one the server anchored (rewritten or "
                        "re-created)",
                        log.locate(seq),
                        ref,
                    )
                )
    return found


def _site_view(log: VerifiedLog, findings: list[Finding]) -> _SiteView:
    view = _SiteView()
    site = log.verification.actor or "?"
    newest: tuple[int, str] | None = None  # the largest ledger counter so far, and where
    for index, entry in enumerate(log.entries):
        if entry.event not in ("round.taken", "round.refused"):
            continue
        key = (str(entry.details["run_id"]), int(entry.details["round"]))
        ref = log.locate(index)
        if entry.event == "round.taken" and "ledger_seq" in entry.details:
            seq = int(entry.details["ledger_seq"])
            if newest is not None and seq <= newest[0]:
                findings.append(
                    Finding(
                        "ledger-rollback",
                        site,
                        *key,
                        f"the epsilon ledger's counter went from {newest[0]} ({newest[1]}) back to {seq}: "
                        "the ledger was replaced by an older copy and forgot spent budget",
                        ref,
                    )
                )
            if newest is None or seq > newest[0]:
                newest = (seq, ref)
        if entry.event == "round.taken":
            if key in view.taken:
                findings.append(Finding("duplicate-entry", site, *key, "round.taken logged twice", ref))
                continue
            view.taken[key] = (str(entry.details["model_sha256"]), ref)
        else:
            view.refused.setdefault(key, ref)
    return view


def _server_rounds(
    log: VerifiedLog, findings: list[Finding]
) -> dict[_Round, tuple[frozenset[str], str, str]]:
    rounds: dict[_Round, tuple[frozenset[str], str, str]] = {}
    for index, entry in enumerate(log.entries):
        if entry.event != "round.aggregated":
            continue
        key = (str(entry.details["run_id"]), int(entry.details["round"]))
        ref = log.locate(index)
        if key in rounds:
            findings.append(
                Finding("duplicate-entry", "server", *key, "round.aggregated logged twice", None, ref)
            )
            continue
        rounds[key] = (frozenset(entry.details["participants"]), str(entry.details["model_sha256"]), ref)
    return rounds
