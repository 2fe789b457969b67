# ruff: noqa: E501  (HTML lines are kept whole for readability)
"""The compliance report's Jinja2 template, kept as a string so it ships inside the package.

Self-contained by construction: inline CSS, figures as ``data:image/png;base64`` URIs, no script, no
link to anything outside the file (a report must open the same on an air-gapped auditor's laptop).
Rendered with autoescaping on.
"""

from __future__ import annotations

__all__ = ["REPORT_TEMPLATE"]

REPORT_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>{{ title }}</title>
<style>
 body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 72em;
        color: #1b1b1b; padding: 0 1em; }
 h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
 .meta { color: #555; } table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
 th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
 th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
 .ok { color: #0a6b2d; font-weight: 600; } .fail { color: #b00020; font-weight: 600; }
 .warn { color: #8a5300; } code { font-size: 0.85em; word-break: break-all; }
 figure { margin: 0.5em 0 1.5em; } figure img { max-width: 100%; border: 1px solid #e2e2e2; }
 figcaption { color: #555; font-size: 0.9em; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p class="meta">Generated {{ generated }} by fedscan {{ version }} from {{ verifications|length }} audit log(s)
{%- if run_dir %} and the run records in <code>{{ run_dir }}</code>{% endif %}.
Overall: {% if all_ok %}<span class="ok">every log verified{% if reconciliation %} and reconciled{% endif %}</span>
{%- else %}<span class="fail">problems found (see below)</span>{% endif %}.</p>

<h2 id="verification">Verification of every log</h2>
<table>
<tr><th>log</th><th>actor</th><th>role</th><th>entries</th><th>key</th><th>result</th><th>head (seq:sha256)</th></tr>
{% for v in verifications %}
<tr><td><code>{{ v.log }}</code>{% if v.files|length > 1 %}<br><span class="meta">{{ v.files|length }} files</span>{% endif %}</td>
<td>{{ v.actor or "?" }}</td><td>{{ v.role or "?" }}</td><td class="num">{{ v.entries }}</td>
<td><code>{{ v.key_id or "?" }}</code><br>{% if v.key_pinned %}<span class="ok">pinned</span>{% else %}<span class="warn">embedded, not pinned</span>{% endif %}</td>
<td>{% if v.ok %}<span class="ok">OK</span>{% else %}<span class="fail">FAIL</span><br>{{ v.failure }}{% endif %}</td>
<td><code>{{ v.head or "-" }}</code></td></tr>
{% endfor %}
</table>

{% if reconciliation %}
<h2 id="reconciliation">Reconciliation of site and server logs</h2>
<p>{{ reconciliation.rounds_checked }} round(s) and {{ reconciliation.participations_checked }} participation(s) checked
against {{ reconciliation.sites|length }} site log(s):
{% if reconciliation.ok %}<span class="ok">no differences</span>{% else %}<span class="fail">{{ reconciliation.findings|length }} difference(s)</span>{% endif %}.
{% if reconciliation.unchecked_sites %}<span class="warn">Not checked (no log supplied): {{ reconciliation.unchecked_sites|join(", ") }}.</span>{% endif %}</p>
{% if reconciliation.findings %}
<table><tr><th>kind</th><th>site</th><th>run</th><th>round</th><th>detail</th><th>evidence</th></tr>
{% for f in reconciliation.findings %}
<tr><td class="fail">{{ f.kind }}</td><td>{{ f.site }}</td><td>{{ f.run_id or "-" }}</td><td class="num">{{ f.round if f.round is not none else "-" }}</td>
<td>{{ f.detail }}</td><td><code>{{ f.site_ref or "" }}</code> <code>{{ f.server_ref or "" }}</code></td></tr>
{% endfor %}
</table>
{% endif %}
{% endif %}

{% for fig in figures %}
<h2 id="{{ fig.id }}">{{ fig.title }}</h2>
{% if fig.png %}
<figure><img id="fig-{{ fig.id }}" alt="{{ fig.title }}" src="data:image/png;base64,{{ fig.png }}" width="{{ fig.width }}" height="{{ fig.height }}">
<figcaption>{{ fig.caption }}</figcaption></figure>
{% else %}<p class="meta">No data for this figure in the supplied logs{% if fig.id == "metrics" %} and run records{% endif %}.</p>{% endif %}
{% endfor %}

<h2 id="deid">De-identification and ingestion summary</h2>
{% if deid_rows %}
<table><tr><th>site</th><th>runs</th><th>files in</th><th>files out</th><th>rejected</th><th>burned-in flagged</th>
<th>records ingested</th><th>records rejected</th><th>profiles</th><th>rejection reasons</th></tr>
{% for r in deid_rows %}
<tr><td>{{ r.site }}</td><td class="num">{{ r.runs }}</td><td class="num">{{ r.files_in }}</td><td class="num">{{ r.files_out }}</td>
<td class="num">{{ r.files_rejected }}</td><td class="num">{{ r.burned_in_flagged }}</td><td class="num">{{ r.records }}</td>
<td class="num">{{ r.records_rejected }}</td><td>{{ r.profiles|join(", ") }}</td>
<td>{% for k, n in r.reasons|dictsort %}{{ k }}: {{ n }}{% if not loop.last %}, {% endif %}{% endfor %}</td></tr>
{% endfor %}
</table>
{% else %}<p class="meta">No deid.run or ingest.run entries in the supplied logs.</p>{% endif %}

<h2 id="events">Events per log</h2>
<table><tr><th>actor</th>{% for e in event_names %}<th>{{ e }}</th>{% endfor %}</tr>
{% for actor, counts in event_counts %}
<tr><td>{{ actor }}</td>{% for e in event_names %}<td class="num">{{ counts.get(e, 0) }}</td>{% endfor %}</tr>
{% endfor %}
</table>
<p class="meta">Only verified entries are shown in figures and tables. Logs hold counts, hashes, pseudonymous
ids and configuration only; see docs/audit.md for the format and how to verify a log by hand.</p>
</body>
</html>
"""
