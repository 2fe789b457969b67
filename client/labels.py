"""The labels CSV: a header row, a ``label`` column and exactly one key column.

Key columns: ``path`` (relative to the input folder), ``sop_instance_uid``, ``series_instance_uid`` or
``study_instance_uid``. Labels are joined on the *original* identifiers, before de-identification
replaces the UIDs; the joined label then travels with the record, never the original UID.

Problems are reported without repeating the keys: a key is an original UID or an input path, which
may identify a patient, so a report names the CSV *line* instead ("line 7: no file has this
study_instance_uid"). The operator holds the CSV and can look the line up.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from common.errors import InputError

__all__ = ["KEY_COLUMNS", "LabelMatch", "LabelTable", "read_labels"]

KEY_COLUMNS = ("path", "sop_instance_uid", "series_instance_uid", "study_instance_uid")


@dataclass(frozen=True)
class LabelMatch:
    """What the table says about one file.

    Attributes
    ----------
    label : int or None
        The label, or None when the file has none or its key was given conflicting labels.
    key : str or None
        The key that matched (kept in memory only, to tell which rows found a file).
    conflict : bool
        The key appears on several lines with different labels.
    """

    label: int | None
    key: str | None
    conflict: bool = False


@dataclass
class LabelTable:
    """Labels by key, the CSV lines of each key, and the keys that were given conflicting labels."""

    key_column: str
    labels: dict[str, int]
    lines: dict[str, list[int]] = field(default_factory=dict)
    conflicts: set[str] = field(default_factory=set)
    used: set[str] = field(default_factory=set)

    def match(self, *, path: str, sop: str, series: str, study: str) -> LabelMatch:
        """Find the label of one file by whichever key column this table uses; marks nothing used."""
        key = {
            "path": path,
            "sop_instance_uid": sop,
            "series_instance_uid": series,
            "study_instance_uid": study,
        }[self.key_column]
        key = _normalise_path(key) if self.key_column == "path" else key.strip()
        if key in self.conflicts:
            return LabelMatch(None, key, conflict=True)
        label = self.labels.get(key)
        return LabelMatch(label, key if label is not None else None)

    def lookup(self, *, path: str, sop: str, series: str, study: str) -> int | None:
        """The label of one file, or None if unlabelled or conflicting; marks its row as used."""
        found = self.match(path=path, sop=sop, series=series, study=study)
        if found.key is not None:
            self.used.add(found.key)
        return found.label

    def mark_used(self, key: str) -> None:
        """Record that ``key`` matched a file (workers match; the parent process keeps the tally)."""
        self.used.add(key)

    def unmatched(self) -> list[str]:
        """Keys that have a label but matched no file (in memory; reports use :meth:`unmatched_lines`)."""
        return sorted(set(self.labels) - self.used - self.conflicts)

    def unmatched_lines(self) -> list[str]:
        """One sentence per labelled key that matched no file, naming its CSV line(s), not the key."""
        unmatched = set(self.labels) - self.used - self.conflicts
        rows = sorted((self.lines[key], key) for key in unmatched)
        return [f"{_line_words(lines)}: no file has this {self.key_column}" for lines, _ in rows]

    def conflict_lines(self) -> list[str]:
        """One sentence per key given different labels on different lines (those files get none)."""
        rows = sorted(self.lines[key] for key in self.conflicts)
        return [f"{_line_words(lines)}: different labels for one {self.key_column}" for lines in rows]


def _line_words(lines: list[int]) -> str:
    if len(lines) == 1:
        return f"line {lines[0]}"
    return "lines " + ", ".join(str(n) for n in lines)


def _normalise_path(value: str) -> str:
    return str(PurePosixPath(value.strip().replace("\\", "/")))


def read_labels(path: Path) -> LabelTable:
    """Parse and validate a labels CSV; errors name the file, the line and the problem."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as error:
        raise InputError(f"Cannot read labels file {path}: {error.strerror}.") from None
    except UnicodeDecodeError:
        raise InputError(f"Labels file {path} is not UTF-8 text.") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    if "label" not in columns:
        raise InputError(
            f"Labels file {path} has no 'label' column (header: {', '.join(columns) or 'empty'})."
        )
    keys = [c for c in columns if c in KEY_COLUMNS]
    if len(keys) != 1:
        raise InputError(
            f"Labels file {path} must have exactly one key column of {', '.join(KEY_COLUMNS)}; "
            f"found {keys or 'none'}."
        )
    table = LabelTable(key_column=keys[0], labels={})
    for row in reader:
        line = reader.line_num
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        if not any(row.values()):
            continue  # a blank line
        key = row.get(table.key_column, "")
        if not key:
            raise InputError(f"Labels file {path}, line {line}: empty {table.key_column}.")
        if table.key_column == "path":
            key = _normalise_path(key)
        try:
            label = int(row["label"])
        except ValueError:
            raise InputError(
                f"Labels file {path}, line {line}: label {row['label']!r} is not an integer."
            ) from None
        if label < 0:
            raise InputError(
                f"Labels file {path}, line {line}: label {label} is negative (-1 marks unlabelled records)."
            )
        previous = table.labels.get(key)
        if previous is not None and previous != label:
            table.conflicts.add(key)
        table.labels[key] = label
        table.lines.setdefault(key, []).append(line)
    return table
