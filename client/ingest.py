"""Site ingest: a folder as a PACS exports it, plus labels, becomes the encrypted dataset store.

Per file: read (pydicom) -> join the label on original identifiers -> de-identify in memory ->
pixels to model input -> record. Records are sealed into the store; nothing plaintext is written.
Every file that does not become a record is counted and listed with its reason (relative path only).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from client.deid import Deidentifier, DeidOptions
from client.labels import LabelTable, read_labels
from client.pixels import PixelSettings, prepare_frames
from client.site import SiteDir
from client.site_config import SiteConfig
from client.site_init import load_deid_secret, load_site_key
from client.store import Record, StoreWriter
from common.errors import FedscanError, InputError
from common.fsio import write_atomic

__all__ = ["IngestReport", "discover_files", "ingest_folder"]

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"


@dataclass
class IngestReport:
    """Counts and reasons of one ingest run; holds relative paths and counts, never PHI."""

    files_seen: int = 0
    records_added: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)
    unlabelled: list[str] = field(default_factory=list)
    labels_without_file: list[str] = field(default_factory=list)
    per_label: Counter[int] = field(default_factory=Counter)
    per_modality: Counter[str] = field(default_factory=Counter)
    total_records: int = 0

    def to_json(self) -> str:
        body = asdict(self)
        body["per_label"] = {str(k): v for k, v in sorted(self.per_label.items())}
        body["per_modality"] = dict(sorted(self.per_modality.items()))
        body["rejected"] = [{"path": p, "reason": r} for p, r in self.rejected]
        return json.dumps(body, indent=2, sort_keys=True)


def discover_files(input_dir: Path) -> list[Path]:
    """Every regular file below ``input_dir``, in a stable order (PACS exports often have no suffix)."""
    return sorted(p for p in Path(input_dir).rglob("*") if p.is_file())


def ingest_folder(
    site: SiteDir,
    input_dir: Path,
    labels_csv: Path | None,
    *,
    keep_unlabelled: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> IngestReport:
    """Ingest ``input_dir`` into the site's store and write a report to ``site.reports_dir``."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise InputError(f"Input folder {input_dir} does not exist or is not a folder.")
    config = SiteConfig.load(site.config_file)
    key = load_site_key(site)
    deidentifier = Deidentifier(load_deid_secret(site), DeidOptions.from_names(config.deid_options))
    settings = PixelSettings(size=config.image_size, ct_window=config.ct_window)
    labels: LabelTable | None = read_labels(labels_csv) if labels_csv else None
    writer = StoreWriter(site.store_dir, key, image_size=config.image_size, split_seed=config.split_seed)

    report = IngestReport()
    files = discover_files(input_dir)
    for index, path in enumerate(files, start=1):
        relative = path.relative_to(input_dir).as_posix()
        report.files_seen += 1
        try:
            try:
                ds = pydicom.dcmread(path)
            except InvalidDicomError:
                raise InputError("not a DICOM file (no DICM preamble and no recognisable header)") from None
            except (OSError, EOFError, ValueError, KeyError, TypeError) as error:
                raise InputError(f"unreadable or truncated DICOM ({type(error).__name__})") from None
            sop_class = str(getattr(ds.file_meta, "MediaStorageSOPClassUID", "") or ds.get("SOPClassUID", ""))
            if sop_class == DICOMDIR_SOP_CLASS or path.name.upper() == "DICOMDIR":
                raise InputError("DICOMDIR (a directory index, not an image)")
            if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
                raise InputError("no pixel data (not an image object)")
            label = None
            if labels is not None:
                label = labels.lookup(
                    path=relative,
                    sop=str(ds.get("SOPInstanceUID", "")),
                    series=str(ds.get("SeriesInstanceUID", "")),
                    study=str(ds.get("StudyInstanceUID", "")),
                )
            if label is None and not keep_unlabelled:
                report.unlabelled.append(relative)
                continue
            meta = {
                "modality": str(ds.get("Modality", "")),
                "manufacturer": str(ds.get("Manufacturer", "")),
                "rows": int(ds.get("Rows", 0)),
                "columns": int(ds.get("Columns", 0)),
                "transfer_syntax": str(ds.file_meta.get("TransferSyntaxUID", "")),
            }
            deidentifier.deidentify(ds)
            frames = prepare_frames(ds, settings)
            for frame in frames:
                writer.add(
                    Record(
                        pixels=frame,
                        label=-1 if label is None else int(label),
                        patient=str(ds.get("PatientID", "")),
                        study=str(ds.get("StudyInstanceUID", "")),
                        meta=meta,
                    )
                )
                report.records_added += 1
                report.per_label[-1 if label is None else int(label)] += 1
                report.per_modality[str(meta["modality"])] += 1
        except FedscanError as error:
            report.rejected.append((relative, str(error)))
        finally:
            if progress is not None:
                progress(index, len(files))

    if labels is not None:
        report.labels_without_file = labels.unmatched()
    manifest = writer.commit()
    report.total_records = manifest.count()
    write_atomic(site.reports_dir / "ingest-report.json", report.to_json().encode())
    return report
