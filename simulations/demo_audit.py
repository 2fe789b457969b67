"""The audit evidence a demo run leaves, checked the way an auditor would: logs, model card, report.

After the demo's run every site has its audit log (``sites/<id>/audit/audit.jsonl``) and the server its
own (``run/audit/audit.jsonl``), each with its public key beside it, and the final model its signed
model card (``run/model_card.json``). :func:`audit_demo_run` verifies every log against the public key
written beside it, bound to the actor that wrote it (a site's key vouches for that site's log only),
reconciles the sites' logs with the server's, checks the model card against the server's log, and
renders the auditor's HTML report (``audit-report.html``): what ``fedscan audit
verify|reconcile|report`` would print, done once here so the demo can say where everything is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from client.site_config import SiteConfig
from common.audit import read_verified_log
from common.audit.federation import SERVER_ACTOR, site_actor
from common.audit.report import report_of_logs, write_report
from common.crypto import load_verify_key
from common.model_card import check_card_against_log, load_model_card
from server.audit_trail import AUDIT_LOG, AUDIT_PUBKEY, MODEL_CARD
from server.run_records import read_round_records

__all__ = ["DemoAudit", "audit_demo_run"]

REPORT_NAME = "audit-report.html"


@dataclass(frozen=True)
class DemoAudit:
    """Where the evidence is, and what checking it found."""

    site_logs: tuple[Path, ...]
    server_log: Path
    model_card: Path
    report: Path
    logs_verified: bool
    reconciled: bool
    card_problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.logs_verified and self.reconciled and not self.card_problems


def audit_demo_run(workdir: Path, site_roots: Sequence[Path], run_dir: Path) -> DemoAudit:
    """Verify, reconcile and report the demo's logs; check its model card (see the module docstring)."""
    site_logs = tuple(root / "audit" / "audit.jsonl" for root in site_roots)
    server_log = run_dir / AUDIT_LOG
    actor_keys = {
        site_actor(SiteConfig.load(root / "site.toml").site_id): load_verify_key(root / "audit" / "audit.pub")
        for root in site_roots
    }
    actor_keys[SERVER_ACTOR] = load_verify_key(run_dir / AUDIT_PUBKEY)
    logs = (*site_logs, server_log)
    verified = [read_verified_log(path, actor_keys=actor_keys, require_pinned=True) for path in logs]
    rows = [dict(vars(record)) for record in read_round_records(run_dir)]
    html, reconciliation = report_of_logs(
        verified, metrics_rows=rows, run_dir=str(run_dir), title="fedscan demo: audit report"
    )
    report = workdir / REPORT_NAME
    write_report(report, html)
    card = load_model_card(run_dir / MODEL_CARD, pubkeys=[actor_keys[SERVER_ACTOR]])
    return DemoAudit(
        site_logs=site_logs,
        server_log=server_log,
        model_card=run_dir / MODEL_CARD,
        report=report,
        logs_verified=all(v.verification.ok for v in verified),
        reconciled=reconciliation is not None and reconciliation.ok,
        card_problems=tuple(check_card_against_log(card, verified[-1])),
    )
