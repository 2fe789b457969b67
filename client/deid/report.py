"""The report of one de-identification run: counts, rejections with reasons, actions per attribute.

A report never holds a value taken from a data set, nor an input path (exports name folders and files
after patients): a rejected file is named by a keyed hash of its relative path
(:meth:`~client.deid.pseudonyms.KeyedPseudonyms.file_key`), besides fedscan's own reason sentences,
attribute keywords and counts. It is safe to keep next to the site's audit trail. The paths themselves
stay in memory (:attr:`Rejection.path`) for the operator's console.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from common.errors import InputError

__all__ = ["DeidReport", "Rejection"]


@dataclass(frozen=True)
class Rejection:
    """One input file that produced no output.

    Attributes
    ----------
    path : str
        Path relative to the input folder, with ``/`` separators (memory and console only: never
        written by :meth:`DeidReport.to_dict`).
    reason : str
        ``category: explanation``, e.g. ``"encapsulated document: ..."``.
    file_key : str
        The keyed name of the path that the written report uses.
    """

    path: str
    reason: str
    file_key: str = ""

    @property
    def category(self) -> str:
        """The part of the reason before the first colon (``truncated``, ``burned-in text``...)."""
        return self.reason.partition(":")[0]


@dataclass
class DeidReport:
    """Counts and reasons for one :func:`~client.deid.folder.deidentify_folder` run.

    Attributes
    ----------
    profile : str
        ``PS3.15`` table edition and method description.
    options : tuple of str
        Names of the options applied.
    files_seen, files_written, files_masked, duplicates : int
        Input files found; outputs written; outputs whose pixels were masked; outputs that had the
        same new SOP Instance UID as an earlier one (the same instance given twice).
    bytes_in, bytes_out : int
        Sizes of the files read and written.
    seconds : float
        Wall-clock duration of the run.
    workers : int
        Processes used.
    strict : bool
        Whether a rejected file makes the run fail (:attr:`exit_code`).
    rejections : list of Rejection
        Every file without output, sorted by path.
    actions : dict
        Attribute keyword -> action name -> count, summed over the files written.
    """

    profile: str
    options: tuple[str, ...]
    files_seen: int = 0
    files_written: int = 0
    files_masked: int = 0
    duplicates: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    workers: int = 1
    strict: bool = False
    rejections: list[Rejection] = field(default_factory=list)
    actions: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def files_rejected(self) -> int:
        """Number of input files that produced no output."""
        return len(self.rejections)

    @property
    def files_per_second(self) -> float:
        """Input files handled per second of wall-clock time."""
        return self.files_seen / self.seconds if self.seconds > 0 else 0.0

    @property
    def megabytes_per_second(self) -> float:
        """Input megabytes (10^6 bytes) read per second of wall-clock time."""
        return self.bytes_in / 1e6 / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """0, or :class:`~common.errors.InputError`'s exit code when strict and a file was rejected."""
        return InputError.exit_code if self.strict and self.rejections else 0

    def reason_counts(self) -> dict[str, int]:
        """Rejections per category, most frequent first."""
        return dict(Counter(r.category for r in self.rejections).most_common())

    def add_actions(self, actions: Mapping[str, Mapping[str, int]]) -> None:
        """Add one file's actions to the totals."""
        for label, counts in actions.items():
            totals = self.actions.setdefault(label, {})
            for action, n in counts.items():
                totals[action] = totals.get(action, 0) + n

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (sorted, stable)."""
        return {
            "profile": self.profile,
            "options": list(self.options),
            "files_seen": self.files_seen,
            "files_written": self.files_written,
            "files_rejected": self.files_rejected,
            "files_masked": self.files_masked,
            "duplicates": self.duplicates,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "seconds": round(self.seconds, 3),
            "files_per_second": round(self.files_per_second, 1),
            "megabytes_per_second": round(self.megabytes_per_second, 2),
            "workers": self.workers,
            "strict": self.strict,
            "exit_code": self.exit_code,
            "rejection_counts": self.reason_counts(),
            "rejections": [{"file": r.file_key, "reason": r.reason} for r in self.rejections],
            "actions": {label: dict(sorted(c.items())) for label, c in sorted(self.actions.items())},
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        """The report as JSON text."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)
