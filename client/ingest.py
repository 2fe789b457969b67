"""Site ingest: a folder as a PACS exports it, plus labels, becomes the encrypted dataset store.

The run, end to end (``docs/ingest.md`` says the same for operators):

1. **discover** every regular file under the input folder (:mod:`client.discovery`);
2. in worker processes (:mod:`client.worker_pool`), for each file (:mod:`client.file_records`): read the
   header, set aside segmentations and RT structure sets (de-identified, then sealed into the store by
   this process for later segmentation work, :mod:`client.label_objects`), reject what is not an image,
   join the label on the original identifiers, skip what the store already holds, de-identify in memory,
   turn the pixels into model input;
3. in this process: count every outcome, drop a second copy of an instance that another worker did
   first, and hand records to :class:`client.store.StoreWriter`, which streams them into sealed shards
   and **commits** the manifest every few seconds and at the end;
4. seal the full report into the site directory and write its counts-only summary
   (:mod:`client.ingest_report`).

Interrupted runs: the manifest is the commit point. Killed at any moment, the store holds what the last
commit published, every referenced shard whole; shards sealed after it are removed by the next writer.
Re-running ingest on the same folder skips every instance the store holds (by keyed SOP Instance UID,
read from the header only) and adds the rest: nothing is added twice. On Ctrl-C the records received
so far are committed before the interrupt propagates. One ingest at a time per store (a lock).
"""

from __future__ import annotations

import datetime as _dt
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

from client.deid import DeidOptions
from client.discovery import discover_files
from client.file_records import STAGES, FileOutcome, RecordMaker
from client.ingest_report import IngestReport, save_report
from client.label_objects import kept_label_objects, seal_label_object
from client.labels import LabelTable, read_labels
from client.pixels import PixelSettings
from client.site import SiteDir
from client.site_audit import record_ingest_run
from client.site_config import SiteConfig
from client.site_init import load_deid_secret, load_site_key
from client.store import StoreWriter, store_lock
from client.worker_pool import default_workers, process_files
from common.errors import ConfigError, InputError

__all__ = ["IngestReport", "discover_files", "ingest_folder", "site_pixel_settings"]

#: Seconds between commits of the manifest during a run (bounds the work a kill can lose).
DEFAULT_COMMIT_SECONDS = 10.0


def site_pixel_settings(config: SiteConfig, path: Path | str = "site.toml") -> PixelSettings:
    """The pixel settings of a site (``[pixels]`` of site.toml at ``path``), validated."""
    try:
        return PixelSettings(
            size=config.image_size,
            ct_window=config.ct_window,
            multiframe=config.multiframe,
            denoise=config.denoise,
            clahe=config.clahe,
        )
    except ConfigError as error:
        raise ConfigError(f"{path} [pixels]: {error}") from None


def _deid_options(config: SiteConfig, path: Path) -> DeidOptions:
    try:
        return DeidOptions.from_names(config.deid_options)
    except ValueError as error:
        raise ConfigError(f"{path}: [deid] options: {error}") from None


def _make_maker(
    input_dir: Path,
    secret: bytes,
    options: DeidOptions,
    pixels: PixelSettings,
    labels: LabelTable | None,
    stored: frozenset[str],
    keep_unlabelled: bool,
    kept_objects: frozenset[str] = frozenset(),
) -> RecordMaker:
    return RecordMaker(
        input_dir,
        secret,
        options,
        pixels,
        labels,
        stored,
        keep_unlabelled=keep_unlabelled,
        kept_objects=kept_objects,
    )


def _crashed(path: str) -> FileOutcome:
    return FileOutcome(
        path, "rejected", "crashed: decoding this file killed the worker process twice (corrupt data?)"
    )


class _Tally:
    """The parent's side of a run: counts outcomes, removes cross-worker duplicates, feeds the writer."""

    def __init__(self, report: IngestReport, writer: StoreWriter, labels: LabelTable | None) -> None:
        self.report = report
        self.writer = writer
        self.labels = labels
        self.first_path: dict[str, str] = {}  # keyed SOP Instance UID -> first file claiming it

    def add(self, outcome: FileOutcome) -> None:
        report = self.report
        report.files_read += int(outcome.read)
        report.deidentified += int(outcome.deidentified)
        report.bytes_read += outcome.bytes_read
        for stage, seconds in outcome.seconds.items():
            report.stage_seconds[stage] = report.stage_seconds.get(stage, 0.0) + seconds
        if outcome.label_key is not None and self.labels is not None:
            self.labels.mark_used(outcome.label_key)
        if outcome.conflict:
            report.conflicting.append(outcome.path)
        status = outcome.status
        if outcome.claimed and outcome.sop:
            first = self.first_path.setdefault(outcome.sop, outcome.path)
            if first != outcome.path:
                # Another worker claimed the same instance first: the same file given twice.
                status = "duplicate"
                outcome = FileOutcome(
                    outcome.path,
                    status,
                    f"duplicate: the same (0008,0018) SOP Instance UID as {first}, counted once",
                )
        if status == "label-object" and outcome.label_object is not None:
            seal_label_object(self.writer.store_dir, self.writer.key, outcome.sop, outcome.label_object)
            report.label_objects_kept += 1
        elif status == "added":
            self.writer.add_all(outcome.records)  # a file's records join the store together
            report.files_added += 1
            for record in outcome.records:
                report.records_added += 1
                report.per_label[record.label] += 1
                report.per_modality[str(record.meta.get("modality", "")) or "?"] += 1
            if outcome.records and outcome.records[0].label < 0:
                report.unlabelled.append(outcome.path)
        elif status == "stored":
            report.already_stored += 1
        elif status == "unlabelled":
            if not outcome.conflict:
                report.unlabelled.append(outcome.path)
        else:
            report.rejected.append((outcome.path, outcome.reason or status))


def ingest_folder(
    site: SiteDir,
    input_dir: Path,
    labels_csv: Path | None,
    *,
    keep_unlabelled: bool = False,
    workers: int | None = None,
    pixels: PixelSettings | None = None,
    commit_seconds: float = DEFAULT_COMMIT_SECONDS,
    progress: Callable[[int, int], None] | None = None,
) -> IngestReport:
    """Ingest ``input_dir`` into the site's encrypted store; see the module docstring.

    Parameters
    ----------
    site : SiteDir
        An initialised site (keys, site.toml).
    input_dir : Path
        The PACS export, searched recursively.
    labels_csv : Path or None
        The labels CSV (``label`` and one key column). Without it every file is unlabelled, so
        ``keep_unlabelled`` must be set.
    keep_unlabelled : bool
        Store files without a label (label -1), for federated evaluation or later labelling.
    workers : int, optional
        Worker processes; default: every CPU available. 1 runs in this process.
    pixels : PixelSettings, optional
        Override the site's pixel settings (benchmarks and experiments).
    commit_seconds : float
        Seconds between commits of the manifest during the run.
    progress : callable, optional
        Called as ``progress(done, total)`` after each file.

    Returns
    -------
    IngestReport
        The run's counts and reasons (also sealed into ``site.reports_dir``).

    Raises
    ------
    InputError, ConfigError, KeyMaterialError, StoreError
        Before any file is processed: a missing input folder, a bad labels CSV or site.toml, unsafe
        keys, a store written by another process or with another split seed.
    KeyboardInterrupt
        On Ctrl-C, after the records received so far have been committed.
    """
    started = time.perf_counter()
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise InputError(f"Input folder {input_dir} does not exist or is not a folder.")
    config = SiteConfig.load(site.config_file)
    key = load_site_key(site)
    secret = load_deid_secret(site)
    options = _deid_options(config, site.config_file)
    settings = pixels if pixels is not None else site_pixel_settings(config, site.config_file)
    if settings.size != config.image_size:
        raise ConfigError(
            f"Pixel size {settings.size} differs from pixels.image_size = {config.image_size} in "
            f"{site.config_file}; the store holds one size."
        )
    labels: LabelTable | None = read_labels(labels_csv) if labels_csv else None
    if labels is None and not keep_unlabelled:
        raise ConfigError(
            "No labels file: pass --labels CSV, or --keep-unlabelled to store the images without labels."
        )
    files = discover_files(input_dir)
    report = IngestReport(
        files_seen=len(files),
        kept_unlabelled=keep_unlabelled,
        stage_seconds=dict.fromkeys([*STAGES, "seal"], 0.0),
        started=_dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S%fZ"),
    )
    n_workers = max(1, min(workers if workers is not None else default_workers(), len(files) or 1))
    report.workers = n_workers

    with store_lock(site.store_dir):
        writer = StoreWriter(site.store_dir, key, image_size=settings.size, split_seed=config.split_seed)
        writer.remove_stale_temporaries()
        make = partial(
            _make_maker,
            input_dir,
            secret,
            options,
            settings,
            labels,
            writer.known_sops(),
            keep_unlabelled,
            kept_label_objects(site.store_dir),
        )
        tally = _Tally(report, writer, labels)
        last_commit = time.monotonic()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # odd but readable files; rejections carry reasons
                outcomes = process_files(make, files, workers=n_workers, on_crash=_crashed)
                for done, outcome in enumerate(outcomes, start=1):
                    before = time.perf_counter()
                    tally.add(outcome)
                    if time.monotonic() - last_commit >= commit_seconds:
                        writer.commit()
                        last_commit = time.monotonic()
                    report.stage_seconds["seal"] += time.perf_counter() - before
                    if progress is not None:
                        progress(done, len(files))
        except KeyboardInterrupt:
            report.interrupted = True
            _finish(site, report, writer, labels, started)
            raise
        _finish(site, report, writer, labels, started)
    return report


def _finish(
    site: SiteDir,
    report: IngestReport,
    writer: StoreWriter,
    labels: LabelTable | None,
    started: float,
) -> None:
    """Commit, complete the report and save it (sealed, plus a counts-only summary)."""
    before = time.perf_counter()
    manifest = writer.commit()
    report.stage_seconds["seal"] = report.stage_seconds.get("seal", 0.0) + time.perf_counter() - before
    report.total_records = manifest.count()
    if labels is not None and not report.interrupted:
        report.labels_without_file = labels.unmatched_lines()
    if labels is not None:
        report.label_conflicts = labels.conflict_lines()
    report.rejected.sort()
    report.unlabelled.sort()
    report.conflicting.sort()
    report.seconds = time.perf_counter() - started
    save_report(site, writer.key, report)
    record_ingest_run(site, report, manifest, writer.key.key_id)
