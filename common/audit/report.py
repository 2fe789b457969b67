"""The auditor's HTML report: verification results, reconciliation, and figures drawn from the logs.

One self-contained HTML file (:mod:`common.audit.report_template`): a timeline of every log, the
participation of each site in each round (as the server and the sites each tell it), epsilon over
rounds per site, the training metrics, a de-identification summary and the verdict on every log.
Only entries that verified are drawn. Figures are PNGs drawn with matplotlib's object API (no pyplot,
no global state) and embedded as base64 data URIs.

This module imports matplotlib and jinja2 (slow to import): import it only where a report is made.
"""

from __future__ import annotations

import base64
import io
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from matplotlib.colors import ListedColormap
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from common import __version__
from common.audit.log import utc_timestamp
from common.audit.reconcile import Reconciliation, reconcile
from common.audit.report_template import REPORT_TEMPLATE
from common.audit.verify import VerifiedLog
from common.fsio import write_atomic

__all__ = ["ReportFigure", "render_report", "report_of_logs", "write_report"]

_DPI = 100


@dataclass(frozen=True)
class ReportFigure:
    """One embedded figure; ``png`` is base64 (``None`` when there is nothing to draw)."""

    id: str
    title: str
    caption: str
    png: str | None = None
    width: int = 0
    height: int = 0


@dataclass
class _DeidRow:
    site: str
    runs: int = 0
    files_in: int = 0
    files_out: int = 0
    files_rejected: int = 0
    burned_in_flagged: int = 0
    records: int = 0
    records_rejected: int = 0
    profiles: set[str] = field(default_factory=set)
    reasons: Counter[str] = field(default_factory=Counter)


def render_report(
    logs: Sequence[VerifiedLog],
    *,
    reconciliation: Reconciliation | None = None,
    metrics_rows: Sequence[Mapping[str, Any]] = (),
    run_dir: str | None = None,
    title: str = "fedscan audit report",
) -> str:
    """Render the report as an HTML string (see the module docstring)."""
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    counts = {_actor(log): Counter(e.event for e in log.entries) for log in logs}
    event_names = sorted({name for c in counts.values() for name in c})
    verifications = [log.verification for log in logs]
    all_ok = all(v.ok for v in verifications) and (reconciliation is None or reconciliation.ok)
    return environment.from_string(REPORT_TEMPLATE).render(
        title=title,
        generated=utc_timestamp(),
        version=__version__,
        run_dir=run_dir,
        verifications=verifications,
        all_ok=all_ok,
        reconciliation=reconciliation,
        figures=[
            _timeline(logs),
            _participation(logs),
            _epsilon(logs),
            _metrics(logs, metrics_rows),
        ],
        deid_rows=_deid_rows(logs),
        event_names=event_names,
        event_counts=sorted(counts.items()),
    )


def report_of_logs(
    logs: Sequence[VerifiedLog],
    *,
    metrics_rows: Sequence[Mapping[str, Any]] = (),
    run_dir: str | None = None,
    title: str = "fedscan audit report",
) -> tuple[str, Reconciliation | None]:
    """The report of ``logs`` (sites and server, in any order), reconciled when exactly one of them is
    the server's and some are sites'; returns the HTML and the reconciliation (``None`` if none ran)."""
    servers = [log for log in logs if log.verification.role == "server"]
    sites = [log for log in logs if log.verification.role == "site"]
    reconciliation = reconcile(sites, servers[0]) if len(servers) == 1 and sites else None
    html = render_report(
        logs, reconciliation=reconciliation, metrics_rows=metrics_rows, run_dir=run_dir, title=title
    )
    return html, reconciliation


def write_report(path: Path, html: str) -> None:
    """Write the report atomically (mode 0644)."""
    write_atomic(Path(path), html.encode("utf-8"), mode=0o644)


# ---- data ---------------------------------------------------------------------------------------


def _actor(log: VerifiedLog) -> str:
    return log.verification.actor or log.verification.log


def _logs_of(logs: Sequence[VerifiedLog], role: str) -> list[VerifiedLog]:
    return [log for log in logs if log.verification.role == role]


def _deid_rows(logs: Sequence[VerifiedLog]) -> list[_DeidRow]:
    rows: dict[str, _DeidRow] = {}
    for log in _logs_of(logs, "site"):
        for e in log.entries:
            if e.event not in ("deid.run", "ingest.run"):
                continue
            row = rows.setdefault(_actor(log), _DeidRow(_actor(log)))
            d = e.details
            if e.event == "deid.run":
                row.runs += 1
                row.files_in += d["files_in"]
                row.files_out += d["files_out"]
                row.files_rejected += d["files_rejected"]
                row.burned_in_flagged += d.get("burned_in_flagged", 0)
                row.profiles.update([d["profile"]] if "profile" in d else [])
                row.reasons.update(d.get("rejected", {}))
            else:
                row.records += d["records"]
                row.records_rejected += d["rejected"]
                row.profiles.update([d["profile"]] if "profile" in d else [])
                row.reasons.update(d.get("rejected_reasons", {}))
    for row in rows.values():
        row.profiles = set(sorted(row.profiles))
    return [rows[k] for k in sorted(rows)]


# ---- figures --------------------------------------------------------------------------------------


def _encode(figure: Figure) -> tuple[str, int, int]:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    width, height = figure.get_size_inches() * _DPI
    return base64.b64encode(buffer.getvalue()).decode("ascii"), int(round(width)), int(round(height))


def _figure(fid: str, title: str, caption: str, figure: Figure | None) -> ReportFigure:
    if figure is None:
        return ReportFigure(fid, title, caption)
    png, width, height = _encode(figure)
    return ReportFigure(fid, title, caption, png, width, height)


def _timeline(logs: Sequence[VerifiedLog]) -> ReportFigure:
    title, caption = "Timeline", "Every verified entry, by actor and time (UTC), coloured by event family."
    if not any(log.entries for log in logs):
        return _figure("timeline", title, caption, None)
    actors = [_actor(log) for log in logs]
    figure = Figure(figsize=(10, 1.2 + 0.45 * len(actors)), layout="constrained")
    axes = figure.add_subplot()
    families: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for row, log in enumerate(logs):
        for e in log.entries:
            when = float(date2num(datetime.strptime(e.time, "%Y-%m-%dT%H:%M:%S.%fZ")))
            families[e.event.split(".")[0]].append((when, row))
    for family, points in sorted(families.items()):
        axes.scatter([p[0] for p in points], [p[1] for p in points], label=family, s=18, alpha=0.8)
    locator = AutoDateLocator()
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    axes.set_yticks(range(len(actors)), actors)
    axes.set_ylim(-0.6, len(actors) - 0.4)
    axes.set_xlabel("time (UTC)")
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", title="event family")
    axes.grid(axis="x", alpha=0.3)
    return _figure("timeline", title, caption, figure)


_PARTICIPATION = (
    ("not involved", "#f4f4f4"),
    ("server and site agree", "#2e8b57"),
    ("server lists, no site log supplied", "#9ecae1"),
    ("server lists, site log has no entry", "#d62728"),
    ("site claims, server does not list", "#ff7f0e"),
    ("site refused", "#7f7f7f"),
)


def _participation(logs: Sequence[VerifiedLog]) -> ReportFigure:
    title = "Participation per round"
    caption = "Each site in each round, as the server's round.aggregated and the site's own log tell it."
    listed: dict[tuple[str, int], set[str]] = {}
    for log in _logs_of(logs, "server"):
        for e in log.entries:
            if e.event == "round.aggregated":
                listed[(e.details["run_id"], e.details["round"])] = set(e.details["participants"])
    taken: dict[str, set[tuple[str, int]]] = {}
    refused: dict[str, set[tuple[str, int]]] = {}
    for log in _logs_of(logs, "site"):
        site = _actor(log)
        taken[site] = {
            (e.details["run_id"], e.details["round"]) for e in log.entries if e.event == "round.taken"
        }
        refused[site] = {
            (e.details["run_id"], e.details["round"]) for e in log.entries if e.event == "round.refused"
        }
    rounds = sorted(
        set(listed) | {r for s in taken.values() for r in s} | {r for s in refused.values() for r in s}
    )
    sites = sorted({s for p in listed.values() for s in p} | set(taken))
    if not rounds or not sites:
        return _figure("participation", title, caption, None)
    grid = [[_cell(site, r, listed, taken, refused) for r in rounds] for site in sites]
    figure = Figure(figsize=(10, 1.8 + 0.4 * len(sites)), layout="constrained")
    axes = figure.add_subplot()
    cmap = ListedColormap([color for _, color in _PARTICIPATION])
    axes.imshow(
        grid, cmap=cmap, vmin=-0.5, vmax=len(_PARTICIPATION) - 0.5, aspect="auto", interpolation="nearest"
    )
    several_runs = len({run for run, _ in rounds}) > 1
    labels = [f"{run}:{n}" if several_runs else str(n) for run, n in rounds]
    step = max(1, len(rounds) // 30)
    axes.set_xticks(range(0, len(rounds), step), labels[::step], rotation=90 if several_runs else 0)
    axes.set_yticks(range(len(sites)), sites)
    axes.set_xticks([x - 0.5 for x in range(1, len(rounds))], minor=True)
    axes.set_yticks([y - 0.5 for y in range(1, len(sites))], minor=True)
    axes.grid(which="minor", color="white", linewidth=1.5)
    axes.tick_params(which="minor", length=0)
    axes.set_xlabel("round")
    used = sorted({v for row in grid for v in row})
    axes.legend(
        handles=[Patch(color=_PARTICIPATION[v][1], label=_PARTICIPATION[v][0]) for v in used],
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        fontsize="small",
    )
    return _figure("participation", title, caption, figure)


def _cell(
    site: str,
    key: tuple[str, int],
    listed: Mapping[tuple[str, int], set[str]],
    taken: Mapping[str, set[tuple[str, int]]],
    refused: Mapping[str, set[tuple[str, int]]],
) -> int:
    in_server = site in listed.get(key, set())
    has_log = site in taken
    in_site = key in taken.get(site, set())
    if in_server and in_site:
        return 1
    if in_server:
        return 2 if not has_log else 3
    if in_site:
        return 4
    return 5 if key in refused.get(site, set()) else 0


def _epsilon(logs: Sequence[VerifiedLog]) -> ReportFigure:
    title = "Privacy budget: epsilon over rounds"
    caption = (
        "Cumulative epsilon each site reports in round.taken (solid); the server's federation-level "
        "epsilon from round.aggregated (dashed)."
    )
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for log in _logs_of(logs, "site"):
        for e in log.entries:
            if e.event == "round.taken" and "epsilon" in e.details:
                series[_actor(log)].append((e.details["round"], e.details["epsilon"]))
    federation: list[tuple[int, float]] = []
    for log in _logs_of(logs, "server"):
        for e in log.entries:
            if e.event == "round.aggregated" and "epsilon" in e.details:
                federation.append((e.details["round"], e.details["epsilon"]))
    if not series and not federation:
        return _figure("epsilon", title, caption, None)
    figure = Figure(figsize=(10, 4), layout="constrained")
    axes = figure.add_subplot()
    for site, points in sorted(series.items()):
        points.sort()
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=site)
    if federation:
        federation.sort()
        axes.plot(
            [p[0] for p in federation],
            [p[1] for p in federation],
            "k--",
            marker="s",
            label="federation (server)",
        )
    axes.set_xlabel("round")
    axes.set_ylabel("epsilon (cumulative)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return _figure("epsilon", title, caption, figure)


def _metrics(logs: Sequence[VerifiedLog], rows: Sequence[Mapping[str, Any]]) -> ReportFigure:
    title = "Training metrics"
    caption = (
        "Per round: losses (left axis) and accuracy (right axis), from the run records or round.aggregated."
    )
    table: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for row in rows:
        for name in ("train_loss", "eval_loss", "accuracy"):
            if isinstance(row.get(name), int | float):
                table[name].append((int(row["round"]), float(row[name])))
    if not table:
        for log in _logs_of(logs, "server"):
            for e in log.entries:
                if e.event == "round.aggregated":
                    for name, value in e.details.get("metrics", {}).items():
                        table[name].append((e.details["round"], float(value)))
    if not table:
        return _figure("metrics", title, caption, None)
    figure = Figure(figsize=(10, 4), layout="constrained")
    left = figure.add_subplot()
    right = None
    for name, points in sorted(table.items()):
        points.sort()
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        if "acc" in name:
            right = right or left.twinx()
            right.plot(xs, ys, marker="o", color="tab:green", label=name)
            right.set_ylabel("accuracy")
        else:
            left.plot(xs, ys, marker="o", label=name)
    left.set_xlabel("round")
    left.set_ylabel("loss")
    left.grid(alpha=0.3)
    handles, labels = left.get_legend_handles_labels()
    if right is not None:
        more = right.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    left.legend(handles, labels, fontsize="small", loc="upper left", bbox_to_anchor=(1.08, 1.0))
    return _figure("metrics", title, caption, figure)
