"""What an ingest did, and what a store holds: the counts an operator checks, and where they are kept.

:class:`IngestReport` is one run: files seen, read and de-identified, records added, every file that
did not become a record with its reason, label problems, records per label and per modality, speed and
time per stage. :class:`StoreSummary` is the same view computed from the store's (sealed) manifest, for
``fedscan site inspect``.

Where reports go: the full report names input files (paths relative to the input folder, which a PACS
may have named after patients), so it is **sealed** into the site directory
(``reports/ingest-<UTC time>.fseal``, opened by ``fedscan site inspect``); next to it,
``reports/ingest-<UTC time>.json`` holds counts and reason categories only - no path, no label key, no
value from any file - for monitoring without the key. Label problems name CSV line numbers, never keys.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client.site import SiteDir
from client.store import SPLITS, Manifest
from common.crypto import Keyring, SiteKey, open_file, seal_file
from common.fsio import write_atomic

__all__ = [
    "IngestReport",
    "StoreSummary",
    "latest_sealed_report",
    "reason_category",
    "save_report",
]

_PREFIX = "ingest-"


def reason_category(reason: str) -> str:
    """The part of a reason before its first colon: ``not an image``, ``burned-in text``, ..."""
    return reason.partition(":")[0].strip() or reason


@dataclass
class IngestReport:
    """Counts and reasons of one ingest run; relative paths, counts and fedscan's sentences, never PHI.

    Attributes
    ----------
    files_seen : int
        Regular files found under the input folder.
    files_read : int
        Files whose header parsed as DICOM.
    deidentified : int
        Files that passed de-identification.
    files_added, records_added : int
        Files that became records in this run, and their records (one per kept frame).
    already_stored : int
        Files whose instance an earlier run stored (skipped after reading the header).
    label_objects_kept : int
        Segmentations and RT structure sets de-identified and sealed (:mod:`client.label_objects`).
    rejected : list of (path, reason)
        Every file that did not become a record for a reason (duplicates included), sorted by path.
    unlabelled : list of str
        Files without a label (stored with label -1 only if ``kept_unlabelled``).
    conflicting : list of str
        Files whose key the labels CSV gives different labels (treated as unlabelled).
    labels_without_file, label_conflicts : list of str
        Labels CSV lines that matched no file, or disagree (line numbers, not keys).
    per_label, per_modality : Counter
        Records added per label (-1 = unlabelled) and per (0008,0060) *Modality*.
    total_records : int
        Records in the store after the run.
    """

    files_seen: int = 0
    files_read: int = 0
    deidentified: int = 0
    files_added: int = 0
    records_added: int = 0
    already_stored: int = 0
    label_objects_kept: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)
    unlabelled: list[str] = field(default_factory=list)
    conflicting: list[str] = field(default_factory=list)
    labels_without_file: list[str] = field(default_factory=list)
    label_conflicts: list[str] = field(default_factory=list)
    per_label: Counter[int] = field(default_factory=Counter)
    per_modality: Counter[str] = field(default_factory=Counter)
    total_records: int = 0
    kept_unlabelled: bool = False
    interrupted: bool = False
    workers: int = 1
    seconds: float = 0.0
    bytes_read: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    started: str = ""

    @property
    def rejected_by_reason(self) -> Counter[str]:
        """Rejected files per reason category."""
        return Counter(reason_category(reason) for _, reason in self.rejected)

    @property
    def files_per_second(self) -> float:
        return self.files_seen / self.seconds if self.seconds > 0 else 0.0

    @property
    def megabytes_per_second(self) -> float:
        return self.bytes_read / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Everything, for ``--json`` and the sealed copy."""
        return {
            "started": self.started,
            "files_seen": self.files_seen,
            "files_read": self.files_read,
            "deidentified": self.deidentified,
            "files_added": self.files_added,
            "records_added": self.records_added,
            "already_stored": self.already_stored,
            "label_objects_kept": self.label_objects_kept,
            "rejected": [{"path": p, "reason": r} for p, r in self.rejected],
            "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
            "unlabelled": list(self.unlabelled),
            "conflicting": list(self.conflicting),
            "labels_without_file": list(self.labels_without_file),
            "label_conflicts": list(self.label_conflicts),
            "per_label": {str(k): v for k, v in sorted(self.per_label.items())},
            "per_modality": dict(sorted(self.per_modality.items())),
            "total_records": self.total_records,
            "kept_unlabelled": self.kept_unlabelled,
            "interrupted": self.interrupted,
            "workers": self.workers,
            "seconds": round(self.seconds, 3),
            "bytes_read": self.bytes_read,
            "files_per_second": round(self.files_per_second, 1),
            "megabytes_per_second": round(self.megabytes_per_second, 2),
            "stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds.items()},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def summary(self) -> dict[str, Any]:
        """Counts and reason categories only: what the plaintext report file may hold."""
        body = self.to_dict()
        for key in ("rejected", "unlabelled", "conflicting", "labels_without_file", "label_conflicts"):
            body[key] = len(body[key])
        return body

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> IngestReport:
        """Rebuild a report saved with :meth:`to_dict` (the sealed copy)."""
        report = cls()
        for name in (
            "started",
            "files_seen",
            "files_read",
            "deidentified",
            "files_added",
            "records_added",
            "already_stored",
            "label_objects_kept",
            "unlabelled",
            "conflicting",
            "labels_without_file",
            "label_conflicts",
            "total_records",
            "kept_unlabelled",
            "interrupted",
            "workers",
            "seconds",
            "bytes_read",
            "stage_seconds",
        ):
            if name in body:
                setattr(report, name, body[name])
        report.rejected = [(r["path"], r["reason"]) for r in body.get("rejected", [])]
        report.per_label = Counter({int(k): v for k, v in body.get("per_label", {}).items()})
        report.per_modality = Counter(body.get("per_modality", {}))
        return report


def _stamp(now: _dt.datetime | None = None) -> str:
    return (now or _dt.datetime.now(_dt.UTC)).strftime("%Y%m%dT%H%M%S%fZ")


def save_report(site: SiteDir, key: SiteKey, report: IngestReport) -> Path:
    """Seal the full report and write its counts-only summary; returns the sealed file's path."""
    stamp = report.started or _stamp()
    name = f"{_PREFIX}{stamp}"
    sealed = site.reports_dir / f"{name}.fseal"
    seal_file(key, report.to_json().encode(), sealed, object_id=f"reports/{name}")
    summary = json.dumps(report.summary(), indent=2, sort_keys=True).encode()
    write_atomic(site.reports_dir / f"{name}.json", summary, mode=0o600)
    return sealed


def latest_sealed_report(site: SiteDir, keys: SiteKey | Keyring) -> IngestReport | None:
    """The most recent sealed ingest report of the site, or None if there is none."""
    candidates = sorted(site.reports_dir.glob(f"{_PREFIX}*.fseal")) if site.reports_dir.is_dir() else []
    if not candidates:
        return None
    path = candidates[-1]
    data = open_file(keys, path, object_id=f"reports/{path.stem}")
    return IngestReport.from_dict(json.loads(data))


@dataclass(frozen=True)
class StoreSummary:
    """What the store holds, from its manifest: the record counts of an ingest report, and more."""

    records: int
    files: int
    patients: int
    studies: int
    image_size: int
    split_seed: int | None
    splits: dict[str, int]
    labels: dict[str, int]
    labels_per_split: dict[str, dict[str, int]]
    modalities: dict[str, int]
    manufacturers: dict[str, int]
    transfer_syntaxes: dict[str, int]
    original_sizes: dict[str, int]

    @classmethod
    def of(cls, manifest: Manifest) -> StoreSummary:
        records = manifest.records

        def counts(values: Iterable[Any]) -> dict[str, int]:
            return {str(k): v for k, v in sorted(Counter(values).items(), key=lambda kv: str(kv[0]))}

        per_split: dict[str, dict[str, int]] = {}
        for split in SPLITS:
            per_split[split] = counts(r.label for r in records if r.split == split)
        files = {r.sop for r in records if r.sop}
        return cls(
            records=len(records),
            files=len(files) + sum(1 for r in records if not r.sop),
            patients=len({r.patient for r in records}),
            studies=len({r.study for r in records}),
            image_size=manifest.image_size,
            split_seed=manifest.split_seed,
            splits={s: sum(1 for r in records if r.split == s) for s in SPLITS},
            labels=counts(r.label for r in records),
            labels_per_split=per_split,
            modalities=counts(str(r.meta.get("modality", "")) for r in records),
            manufacturers=counts(str(r.meta.get("manufacturer", "")) for r in records),
            transfer_syntaxes=counts(_syntax_name(str(r.meta.get("transfer_syntax", ""))) for r in records),
            original_sizes=counts(f"{r.meta.get('rows', '?')}x{r.meta.get('columns', '?')}" for r in records),
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _syntax_name(uid: str) -> str:
    if not uid:
        return ""
    from pydicom.uid import UID

    name = UID(uid).name
    return name if name != uid else uid
