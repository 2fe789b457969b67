"""What a site's privacy record says, for ``fedscan site inspect``: budget, epsilon spent, refusals.

A site operator (or a privacy officer, or an auditor at the site) must see, without reading sealed
files by hand, how much of the site's privacy budget (``[policy] max_epsilon`` in site.toml) its runs
have spent, *per patient*, per run, what each figure assumes (per-patient sampling or a group-privacy
conversion, the honest sites assumed for distributed noise), the ledger's head (the counter and hash
the site's audit log records), and which rounds the site refused and why. Read only: nothing is
created when a site has no ledger or no refusals yet. The ledger is opened with the site key in
memory; the refusals file holds codes, reasons, runs and rounds, never patient data.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

from rich.table import Table

from client.epsilon_ledger import EpsilonLedger
from client.policy import SitePolicy, refusals_file
from client.site import SiteDir
from common.crypto import SiteKey

__all__ = ["privacy_summary", "privacy_table"]

#: Refusals listed one by one in the summary (the newest); all of them are counted.
RECENT_REFUSALS = 10


def _finite_or_text(value: float) -> float | str:
    return value if math.isfinite(value) else "inf"


def _refusals(site: SiteDir) -> list[dict[str, Any]]:
    path = refusals_file(site)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def privacy_summary(site: SiteDir, key: SiteKey, policy: SitePolicy) -> dict[str, Any]:
    """The site's budget, its ledger per run (record-level epsilon at the policy's delta) and refusals."""
    ledger = EpsilonLedger(site)
    report: dict[str, Any]
    if ledger.path.exists():
        report = dict(ledger.report(key, policy.max_delta))
    else:
        report = {"delta": policy.max_delta, "runs": {}, "total_epsilon": 0.0, "bookings": 0}
        report["head"] = {"seq": 0, "sha256": "0" * 64}
    spent = report["total_epsilon"]
    refusals = _refusals(site)
    return {
        "unit": "patient",
        "budget_epsilon": _finite_or_text(policy.max_epsilon),
        "delta": policy.max_delta,
        "min_honest_sites": policy.min_honest_sites,
        "bookings": report["bookings"],
        "ledger_head": report["head"],
        "spent_epsilon": spent,
        "remaining_epsilon": (
            "inf"
            if not policy.has_budget
            else (max(0.0, policy.max_epsilon - spent) if isinstance(spent, float) else 0.0)
        ),
        "runs": {
            run: {name: _finite_or_text(v) if isinstance(v, float) else v for name, v in figures.items()}
            for run, figures in report["runs"].items()
        },
        "refusals": len(refusals),
        "refusals_by_code": dict(Counter(r["code"] for r in refusals)),
        "recent_refusals": refusals[-RECENT_REFUSALS:],
    }


def privacy_table(summary: dict[str, Any], *, title: str) -> Table:
    """A rich table of :func:`privacy_summary`: the budget line, one line per run, the refusals."""
    table = Table(title=title, title_justify="left")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("privacy unit", summary["unit"])
    table.add_row("budget (epsilon at delta)", f"{summary['budget_epsilon']} at {summary['delta']:g}")
    table.add_row("spent (all runs)", _epsilon_text(summary["spent_epsilon"]))
    table.add_row("remaining", _epsilon_text(summary["remaining_epsilon"]))
    for run, figures in summary["runs"].items():
        table.add_row(f"run {run}", f"{_epsilon_text(figures['epsilon'])} over {figures['rounds']} round(s)")
        for assumption in figures.get("assumptions", []):
            table.add_row("", f"[dim]{assumption}[/]")
    head = summary["ledger_head"]
    table.add_row("ledger head", f"booking {head['seq']}, {head['sha256'][:16]}...")
    codes = ", ".join(f"{code} x{count}" for code, count in summary["refusals_by_code"].items())
    table.add_row("rounds refused", f"{summary['refusals']}" + (f" ({codes})" if codes else ""))
    return table


def _epsilon_text(value: float | str) -> str:
    return value if isinstance(value, str) else f"{value:.3f}"
