"""The labels CSV: a header row, a ``label`` column and exactly one key column.

Key columns: ``path`` (relative to the input folder), ``sop_instance_uid``, ``series_instance_uid`` or
``study_instance_uid``. Labels are joined on the *original* identifiers, before de-identification
replaces the UIDs; the joined label then travels with the record, never the original UID.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from common.errors import InputError

__all__ = ["KEY_COLUMNS", "LabelTable", "read_labels"]

KEY_COLUMNS = ("path", "sop_instance_uid", "series_instance_uid", "study_instance_uid")


@dataclass
class LabelTable:
    """Labels by key, plus the keys that were given conflicting labels and those never matched."""

    key_column: str
    labels: dict[str, int]
    conflicts: set[str] = field(default_factory=set)
    used: set[str] = field(default_factory=set)

    def lookup(self, *, path: str, sop: str, series: str, study: str) -> int | None:
        """The label of one file (by whichever key column this table uses), or None if unlabelled."""
        key = {
            "path": path,
            "sop_instance_uid": sop,
            "series_instance_uid": series,
            "study_instance_uid": study,
        }[self.key_column]
        if key in self.conflicts:
            return None
        label = self.labels.get(key)
        if label is not None:
            self.used.add(key)
        return label

    def unmatched(self) -> list[str]:
        """Keys that have a label but matched no file (reported; never silently dropped)."""
        return sorted(set(self.labels) - self.used)


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
    for line, row in enumerate(reader, start=2):
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
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
        previous = table.labels.get(key)
        if previous is not None and previous != label:
            table.conflicts.add(key)
        table.labels[key] = label
    return table
