"""The body of ``fedscan site deidentify IN_DIR OUT_DIR``: options in, files and a report out.

A thin layer over :func:`~client.deid.folder.deidentify_folder`: it finds the site secret, turns
profile and option names into :class:`~client.deid.options.DeidOptions`, shows progress, prints a
summary (a table, or JSON with ``--json``), writes the report file and returns the exit code. Library
errors are raised as :class:`~common.errors.FedscanError` subclasses for the CLI to print as one line.

The secret comes from the site directory (``SITE_DIR/keys/deid.key``, a key file read with
``common.crypto.load_key_file``) or, without a site directory, from the environment variable
``FEDSCAN_DEID_SECRET`` (the secret in hex; for tests and one-off runs).

The console shows the paths of rejected files (with the keyed name the report uses for each); the
report (JSON, no PHI, no input path) is written to ``SITE_DIR/reports/deid-<UTC time>.json`` with a site
directory, else next to the output folder as ``<OUT_DIR>.deid-report.json`` (not inside it, so that
the output folder holds only DICOM files).
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
from pathlib import Path
from typing import Final

from client.deid.folder import deidentify_folder
from client.deid.options import DeidOptions
from client.deid.report import DeidReport
from client.site import SiteDir
from common.errors import ConfigError, InputError, KeyMaterialError
from common.fsio import write_private_atomic

__all__ = ["SECRET_ENV", "deidentify_command", "load_secret", "report_path"]

#: Environment variable holding the de-identification secret in hex when no site directory is given.
SECRET_ENV: Final = "FEDSCAN_DEID_SECRET"


def load_secret(site_dir: Path | None) -> bytes:
    """The site's de-identification secret.

    Raises
    ------
    KeyMaterialError
        If the site has no secret (run ``fedscan site init``) or it cannot be loaded.
    ConfigError
        If neither a site directory nor :data:`SECRET_ENV` is given, or the variable is not hex.
    """
    if site_dir is not None:
        path = SiteDir(Path(site_dir)).deid_secret_file
        if not path.is_file():
            raise KeyMaterialError(f"No de-identification secret at {path}; run 'fedscan site init' first.")
        try:
            from common.crypto import load_key_file
        except ImportError as exc:
            raise KeyMaterialError(
                f"Cannot read the key file {path}: common.crypto is unavailable ({exc})."
            ) from None
        material: bytes = load_key_file(path).material
        return material
    text = os.environ.get(SECRET_ENV, "").strip()
    if not text:
        raise ConfigError(
            f"Give --site-dir (the secret is read from the site's keys) or set {SECRET_ENV} to the "
            "de-identification secret in hex."
        )
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"{SECRET_ENV} must be the secret in hexadecimal.") from None


def report_path(site_dir: Path | None, out_dir: Path, *, now: _dt.datetime | None = None) -> Path:
    """Where the run's JSON report goes (see the module docstring)."""
    if site_dir is not None:
        stamp = (now or _dt.datetime.now(_dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
        return SiteDir(Path(site_dir)).reports_dir / f"deid-{stamp}.json"
    out = Path(out_dir).resolve()
    return out.parent / f"{out.name}.deid-report.json"


def _print_summary(report: DeidReport, written_to: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="De-identification", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("profile", report.profile)
    table.add_row("options", ", ".join(report.options))
    table.add_row("files seen", str(report.files_seen))
    table.add_row("files written", str(report.files_written))
    table.add_row("files rejected", str(report.files_rejected))
    if report.files_masked:
        table.add_row("files masked", str(report.files_masked))
    if report.duplicates:
        table.add_row("duplicate instances", str(report.duplicates))
    speed = f"{report.files_per_second:.1f} files/s, {report.megabytes_per_second:.1f} MB/s"
    table.add_row("throughput", speed)
    console.print(table)
    if report.rejections:
        reasons = Table(title="Rejected files by reason")
        reasons.add_column("reason")
        reasons.add_column("files", justify="right")
        for category, count in report.reason_counts().items():
            reasons.add_row(category, str(count))
        console.print(reasons)
        for rejection in report.rejections[:10]:
            console.print(
                f"  {rejection.path} [{rejection.file_key}]: {rejection.reason}",
                markup=False,
                highlight=False,
            )
        if report.files_rejected > 10:
            console.print(f"  ... and {report.files_rejected - 10} more (see the report)")
    console.print(f"Report: {written_to}", markup=False, highlight=False)


def deidentify_command(
    in_dir: Path,
    out_dir: Path,
    site_dir: Path | None,
    profile: str,
    options: list[str],
    strict: bool,
    workers: int | None,
    json_output: bool,
) -> int:
    """De-identify ``in_dir`` into ``out_dir``; print a summary; return the exit code.

    Parameters
    ----------
    in_dir, out_dir : Path
        Input folder (searched recursively) and output folder.
    site_dir : Path or None
        The site directory holding the secret and the reports; ``None`` uses ``FEDSCAN_DEID_SECRET``.
    profile : str
        ``fedscan`` (basic + modified dates + patient characteristics) or ``basic``.
    options : list of str
        Option names (see :mod:`client.deid.options`), e.g. ``["clean-descriptors"]``.
    strict : bool
        Exit non-zero (InputError's code, 3) if any file was rejected.
    workers : int or None
        Worker processes (default: the CPUs available).
    json_output : bool
        Print the report as JSON instead of tables.

    Returns
    -------
    int
        0, or 3 when ``strict`` and a file was rejected.

    Raises
    ------
    ConfigError, InputError, KeyMaterialError
        For bad options, a missing input folder, or a missing secret.
    """
    try:
        deid_options = DeidOptions.from_names(options, profile=profile)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {workers}.")
    in_path, out_path = Path(in_dir), Path(out_dir)
    if not in_path.is_dir():
        raise InputError(f"The input folder {in_path} does not exist or is not a folder.")
    secret = load_secret(site_dir)

    if json_output or not sys.stderr.isatty():
        report = deidentify_folder(in_path, out_path, secret, deid_options, strict=strict, workers=workers)
    else:
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task("De-identifying", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            report = deidentify_folder(
                in_path, out_path, secret, deid_options, strict=strict, workers=workers, progress=progress
            )

    destination = report_path(site_dir, out_path)
    report_bytes = report.to_json().encode("utf-8") + b"\n"
    write_private_atomic(destination, report_bytes)
    if site_dir is not None:
        from client.site_audit import record_deid_run

        record_deid_run(SiteDir(Path(site_dir)), report, profile=profile, report_bytes=report_bytes)
    if json_output:
        document = report.to_dict()
        document["report_file"] = str(destination)
        import json

        print(json.dumps(document, indent=2))
    else:
        _print_summary(report, destination)
    return report.exit_code
