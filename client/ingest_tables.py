"""The tables ``fedscan site ingest`` and ``fedscan site inspect`` print (rich), from a report or a store.

Presentation only: the numbers come from :class:`client.ingest_report.IngestReport` and
:class:`client.ingest_report.StoreSummary`. The same rows appear in both commands, so that what an
ingest said and what the store holds can be compared line by line.
"""

from __future__ import annotations

from rich.table import Table

from client.ingest_report import IngestReport, StoreSummary

__all__ = ["ingest_table", "problem_lines", "store_table"]

_LISTED = 20


def _table(title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("what")
    table.add_column("count", justify="right")
    return table


def ingest_table(report: IngestReport, *, title: str = "ingest") -> Table:
    """One run: files read, de-identified, added, rejected by reason, labels and modalities."""
    table = _table(title + (" (interrupted)" if report.interrupted else ""))
    table.add_row("files seen", str(report.files_seen))
    table.add_row("read as DICOM", str(report.files_read))
    table.add_row("de-identified", str(report.deidentified))
    table.add_row("files added", str(report.files_added))
    table.add_row("records added", str(report.records_added))
    table.add_row("already in the store (skipped)", str(report.already_stored))
    table.add_row("rejected", str(len(report.rejected)), end_section=not report.rejected)
    reasons = sorted(report.rejected_by_reason.items())
    for index, (category, count) in enumerate(reasons):
        table.add_row(f"  {category}", str(count), end_section=index == len(reasons) - 1)
    kept = "stored, label -1" if report.kept_unlabelled else "not stored"
    table.add_row(f"unlabelled ({kept})", str(len(report.unlabelled)))
    table.add_row("conflicting labels (unlabelled)", str(len(report.conflicting)))
    table.add_row("label lines without a file", str(len(report.labels_without_file)))
    table.add_row("label lines in conflict", str(len(report.label_conflicts)), end_section=True)
    for label, count in sorted(report.per_label.items()):
        table.add_row(f"records labelled {label}" if label >= 0 else "records unlabelled", str(count))
    for modality, count in sorted(report.per_modality.items()):
        table.add_row(f"records of modality {modality}", str(count))
    table.add_row("records in the store", str(report.total_records))
    table.caption = (
        f"{report.seconds:.1f} s, {report.files_per_second:.0f} files/s, "
        f"{report.megabytes_per_second:.1f} MB/s, {report.workers} worker(s)"
    )
    return table


def problem_lines(report: IngestReport, *, limit: int = _LISTED) -> list[str]:
    """The first rejected files and label problems, one line each (the sealed report has them all)."""
    lines = [f"rejected {path}: {reason}" for path, reason in report.rejected[:limit]]
    if len(report.rejected) > limit:
        lines.append(f"... and {len(report.rejected) - limit} more rejected files")
    lines += [f"labels: {line}" for line in report.labels_without_file[:limit]]
    if len(report.labels_without_file) > limit:
        lines.append(f"... and {len(report.labels_without_file) - limit} more label lines without a file")
    lines += [f"labels: {line}" for line in report.label_conflicts[:limit]]
    return lines


def store_table(summary: StoreSummary, *, title: str) -> Table:
    """What a store holds: records, patients, splits, labels, modalities, scanners, sizes."""
    table = _table(title)
    table.add_row("records", str(summary.records))
    table.add_row("files", str(summary.files))
    table.add_row("patients (pseudonymous)", str(summary.patients))
    table.add_row("studies", str(summary.studies))
    table.add_row("image size", f"{summary.image_size} x {summary.image_size}")
    seed = "" if summary.split_seed is None else f" (seed {summary.split_seed})"
    table.add_row(f"split{seed}", "", end_section=False)
    for split, count in summary.splits.items():
        labels = ", ".join(f"{k}: {v}" for k, v in summary.labels_per_split.get(split, {}).items())
        table.add_row(f"  {split}" + (f" ({labels})" if labels else ""), str(count))
    table.add_section()
    for label, count in summary.labels.items():
        table.add_row(f"records labelled {label}" if label != "-1" else "records unlabelled", str(count))
    for group, values in (
        ("modality", summary.modalities),
        ("manufacturer", summary.manufacturers),
        ("transfer syntax", summary.transfer_syntaxes),
        ("original size", summary.original_sizes),
    ):
        table.add_section()
        for value, count in values.items():
            table.add_row(f"{group} {value or '?'}", str(count))
    return table
