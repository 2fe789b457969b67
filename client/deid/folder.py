"""De-identify a folder of DICOM files: discovery, reading, checks, parallel workers, atomic output.

Each input file is read once (``dcmread`` on its bytes), checked, de-identified by
:class:`~client.deid.engine.Deidentifier` and written atomically. Every file that produces no output
is listed in the report with a reason: not DICOM, truncated or corrupt, a DICOMDIR, no pixel data,
unreadable, burned-in text, ...; the run always continues.

Output naming: ``OUT_DIR/<Study Instance UID>/<Series Instance UID>/<SOP Instance UID>.dcm`` with the
*new* UIDs. Input paths are not mirrored because PACS exports often name folders after patients; the
report names rejected files by a keyed hash of their path, never by the path, and holds no mapping
from input to output.

Parallelism: files are split into chunks handled by a process pool (one
:class:`~client.deid.engine.Deidentifier` per worker, created once); small runs stay in process.
Each process writes its outputs itself, one after the other: the pixel data is copied by the kernel
and written back to disk in the background, so no write waits for the disk (writer threads only
added lock contention).

Durability: outputs are re-creatable from the inputs, so they are not fsynced one by one; each is
handed to the kernel's writeback as it closes, and one ``syncfs`` of the output file system makes
them all durable before the report is returned. Every
reader sees a whole file or none at any time; only a power cut *during* a run can leave outputs that
a re-run (which rewrites every output) must replace.
"""

from __future__ import annotations

import errno
import io
import os
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Final

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import DeflatedExplicitVRLittleEndian

from client.deid.encode import Chunk, encode_chunks, write_chunks
from client.deid.engine import METHOD_DESCRIPTION, Deidentifier, DeidRejected
from client.deid.options import DeidOptions
from client.deid.pseudonyms import KeyedPseudonyms
from client.deid.report import DeidReport, Rejection
from common.fsio import atomic_writer, sync_filesystem

__all__ = ["FileResult", "deidentify_file", "deidentify_folder", "discover", "read_dataset"]

_UNDEFINED: Final = 0xFFFFFFFF
# A data set without preamble or file meta starts with a group 0008 (or 0002) tag, in either byte order.
_RAW_STARTS: Final = (b"\x08\x00", b"\x02\x00", b"\x00\x08", b"\x00\x02")
_IN_PROCESS_BELOW: Final = 16  # files; below this a process pool costs more than it saves
_DEFER_SIZE: Final = 1 << 16  # bytes; longer values stay in the input file until written


@dataclass(frozen=True)
class FileResult:
    """What happened to one input file (paths relative to the input and output folders)."""

    path: str
    output: str | None = None
    reason: str | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    masked: bool = False
    actions: dict[str, dict[str, int]] = field(default_factory=dict)


def discover(in_dir: Path, *, exclude: Path | None = None) -> list[str]:
    """Every regular file under ``in_dir`` (any name, with or without extension), sorted.

    Returns paths relative to ``in_dir`` with ``/`` separators. ``exclude`` (the output folder,
    when it lies inside the input) is skipped; symbolic links to directories are not followed.
    """
    root = Path(in_dir)
    skip = Path(exclude).resolve() if exclude is not None else None
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if skip is not None:
            dirnames[:] = [d for d in dirnames if (here / d).resolve() != skip]
        dirnames.sort()
        for name in filenames:
            path = here / name
            if path.is_file():
                found.append(path.relative_to(root).as_posix())
    return sorted(found)


def _expected_native_length(ds: Dataset) -> int | None:
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits = int(ds.BitsAllocated)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    if str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
        samples = 2  # two chroma samples are shared by each pair of pixels (PS3.3 C.7.6.3.1.2)
    pixels = rows * cols * samples * frames
    return (pixels + 7) // 8 if bits == 1 else pixels * (bits // 8)


def _check_complete(ds: Dataset, caught: list[warnings.WarningMessage], size: int) -> None:
    """Raise :class:`DeidRejected` if the data set was cut short (``size``: the file's length)."""
    for warning in caught:
        text = str(warning.message)
        if "End of file reached" in text or "truncated" in text.lower():
            raise DeidRejected("truncated: the file ends before its last element is complete")
    if len(ds) == 0:
        raise DeidRejected("truncated: no complete data element could be read")
    last = ds.get_item(list(ds.keys())[-1], keep_deferred=True)  # the last element read
    meta = getattr(ds, "file_meta", None)
    # A deflated data set is parsed from its inflated copy: value positions are not file offsets.
    inflated = meta is not None and meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
    if isinstance(last, RawDataElement) and last.length != _UNDEFINED:
        have = len(last.value) if isinstance(last.value, bytes) else size - last.value_tell
        if have < last.length and not (inflated and last.value is None):
            raise DeidRejected("truncated: the last element is shorter than its declared length")
    pixels = ds.get_item(0x7FE00010, keep_deferred=True) if 0x7FE00010 in ds else None
    if isinstance(pixels, RawDataElement) and pixels.length != _UNDEFINED:
        expected = _expected_native_length(ds)
        if expected is not None and pixels.length < expected:
            raise DeidRejected(
                "truncated: (7FE0,0010) Pixel Data holds fewer bytes than its rows, columns, samples "
                "and frames require"
            )


def _unreadable(exc: OSError) -> DeidRejected:
    if isinstance(exc, PermissionError):
        return DeidRejected("unreadable: permission denied")
    code = errno.errorcode.get(exc.errno or 0, "I/O error")
    return DeidRejected(f"unreadable: the file could not be read ({code})")


def read_dataset(source: bytes | Path) -> Dataset:
    """Parse a whole file (its bytes, or its path), or raise :class:`DeidRejected` with the reason.

    Files with a preamble and ``DICM`` marker are read as usual; a file without them is tried as a
    bare data set only if it starts like one. Warnings that pydicom raises about truncation turn
    into a rejection; other warnings (odd but readable files) are ignored. Read from a path, values
    longer than 64 KiB (pixel data) are left in the file (pydicom's ``defer_size``) and copied from
    there when the output is written.
    """
    target: io.BytesIO | str
    if isinstance(source, bytes):
        size, target, defer, head = len(source), io.BytesIO(source), None, source[:2]
    else:
        size, target, defer = Path(source).stat().st_size, str(source), _DEFER_SIZE
        try:
            with open(target, "rb") as handle:
                head = handle.read(2)
        except OSError as exc:
            raise _unreadable(exc) from None
    if not head:
        raise DeidRejected("not DICOM: the file is empty")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            try:
                ds = pydicom.dcmread(target, defer_size=defer)
            except InvalidDicomError:
                if head not in _RAW_STARTS:
                    raise DeidRejected("not DICOM: no 'DICM' marker and no data set at the start") from None
                if isinstance(target, io.BytesIO):
                    target.seek(0)
                ds = pydicom.dcmread(target, force=True, defer_size=defer)
                if "SOPClassUID" not in ds and "DirectoryRecordSequence" not in ds:
                    raise DeidRejected("not DICOM: no 'DICM' marker and no SOP Class UID") from None
        except DeidRejected:
            raise
        except OSError as exc:
            raise _unreadable(exc) from None
        except Exception as exc:  # pydicom raises many types on corrupt input
            raise DeidRejected(
                f"truncated or corrupt: the data set could not be parsed ({type(exc).__name__})"
            ) from None
        _check_complete(ds, caught, size)
    return ds


def _prepare(deid: Deidentifier, in_root: Path, rel: str) -> tuple[FileResult, list[Chunk] | None]:
    """Read, check, de-identify and encode one file; the result and the chunks to write, if any."""
    path = in_root / rel
    if path.name.upper() == "DICOMDIR":
        return FileResult(rel, reason="DICOMDIR: a media directory, not an image; skipped"), None
    size = 0
    try:
        size = path.stat().st_size
        ds = read_dataset(path)
        outcome = deid.deidentify(ds)
        try:
            payload = encode_chunks(ds)
        except Exception as exc:
            raise DeidRejected(
                f"unwritable: the de-identified data set could not be encoded ({type(exc).__name__})"
            ) from None
    except OSError as exc:
        return FileResult(rel, reason=_unreadable(exc).reason, bytes_in=size), None
    except DeidRejected as rejected:
        return FileResult(rel, reason=rejected.reason, bytes_in=size), None
    out_rel = f"{outcome.study_instance_uid}/{outcome.series_instance_uid}/{outcome.sop_instance_uid}.dcm"
    result = FileResult(
        rel,
        output=out_rel,
        bytes_in=size,
        bytes_out=sum(len(chunk) for chunk in payload),
        masked=outcome.pixels_masked,
        actions={k: dict(v) for k, v in outcome.actions.items()},
    )
    return result, payload


def _write(out_root: Path, result: FileResult, payload: list[Chunk]) -> FileResult:
    assert result.output is not None
    try:
        with atomic_writer(out_root / result.output, mode=0o600, durable=False) as handle:
            write_chunks(payload, handle)
    except OSError as exc:
        code = errno.errorcode.get(exc.errno or 0, "I/O error")
        return FileResult(result.path, reason=f"unwritable: the output could not be written ({code})")
    return result


def deidentify_file(deid: Deidentifier, in_root: Path, out_root: Path, rel: str) -> FileResult:
    """Read, check, de-identify and atomically write one file; never raises for a bad input file."""
    result, payload = _prepare(deid, in_root, rel)
    return result if payload is None else _write(out_root, result, payload)


# ---- process pool ----------------------------------------------------------------------------
_WORKER: tuple[Deidentifier, Path, Path] | None = None


def _init_worker(secret: bytes, options: DeidOptions, in_root: Path, out_root: Path) -> None:
    global _WORKER
    warnings.simplefilter("ignore")
    _WORKER = (Deidentifier(secret, options), in_root, out_root)


def _work(chunk: list[str]) -> list[FileResult]:
    assert _WORKER is not None, "worker not initialised"
    deid, in_root, out_root = _WORKER
    return _run_chunk(deid, in_root, out_root, chunk)


def _run_chunk(
    deid: Deidentifier,
    in_root: Path,
    out_root: Path,
    chunk: list[str],
    progress: Callable[[int], None] | None = None,
) -> list[FileResult]:
    results: list[FileResult] = []
    # pydicom checks each value it decodes or writes against its VR and, by default, only warns;
    # de-identification ignores those warnings, so the checks are skipped rather than run for nothing
    # (process-wide while the chunk runs).
    with pydicom.config.disable_value_validation():
        for rel in chunk:
            result, payload = _prepare(deid, in_root, rel)
            results.append(result if payload is None else _write(out_root, result, payload))
            if progress is not None:
                progress(len(results))
    return results


def _chunks(items: list[str], workers: int) -> Iterator[list[str]]:
    """Split ``items`` round-robin into chunks of at most 256, about four per worker.

    Round-robin spreads large and small files evenly; each chunk costs a round trip to the pool.
    """
    count = max(workers * 4, -(-len(items) // 256))
    for start in range(min(count, len(items))):
        yield items[start::count]


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def deidentify_folder(
    in_dir: Path,
    out_dir: Path,
    secret: bytes,
    options: DeidOptions,
    *,
    strict: bool = False,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DeidReport:
    """De-identify every file under ``in_dir`` into ``out_dir``; see the module docstring.

    Parameters
    ----------
    in_dir, out_dir : Path
        Input folder (searched recursively) and output folder (created if needed).
    secret : bytes
        The site's de-identification secret.
    options : DeidOptions
        Profile options and policies.
    strict : bool
        Recorded in the report: :attr:`DeidReport.exit_code` is then non-zero if any file was
        rejected. The run itself always processes every file.
    workers : int, optional
        Processes to use; default: the CPUs available. Runs of fewer than 16 files stay in process.
    progress : callable, optional
        Called as ``progress(done, total)`` as files complete.

    Returns
    -------
    DeidReport
        Counts, rejections with reasons and per-attribute action counts; no PHI.
    """
    started = time.perf_counter()
    in_root, out_root = Path(in_dir), Path(out_dir)
    deid = Deidentifier(secret, options)  # validates the secret before any work
    keys = KeyedPseudonyms(secret)
    out_root.mkdir(parents=True, exist_ok=True)
    files = discover(in_root, exclude=out_root)
    total = len(files)
    n_workers = max(1, workers if workers is not None else _default_workers())
    if total < _IN_PROCESS_BELOW:
        n_workers = 1
    results: list[FileResult] = []
    if n_workers == 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report_done = None if progress is None else (lambda done: progress(done, total))
            results = _run_chunk(deid, in_root, out_root, files, report_done)
            if progress is not None:
                progress(len(results), total)
    else:
        # fork: workers start in milliseconds and inherit the imported modules
        method = "fork" if "fork" in get_all_start_methods() else None
        with ProcessPoolExecutor(
            max_workers=n_workers,
            mp_context=get_context(method),
            initializer=_init_worker,
            initargs=(bytes(secret), options, in_root, out_root),
        ) as pool:
            futures = [pool.submit(_work, chunk) for chunk in _chunks(files, n_workers)]
            for future in as_completed(futures):
                results.extend(future.result())
                if progress is not None:
                    progress(len(results), total)
    sync_filesystem(out_root)  # every output durable before the run reports it
    report = DeidReport(
        profile=METHOD_DESCRIPTION,
        options=options.option_names,
        files_seen=total,
        workers=n_workers,
        strict=strict,
    )
    outputs: set[str] = set()
    for result in sorted(results, key=lambda r: r.path):
        report.bytes_in += result.bytes_in
        if result.output is None:
            report.rejections.append(
                Rejection(result.path, result.reason or "rejected", keys.file_key(result.path))
            )
            continue
        if result.output in outputs:
            report.duplicates += 1
        outputs.add(result.output)
        report.files_written += 1
        report.files_masked += int(result.masked)
        report.bytes_out += result.bytes_out
        report.add_actions(result.actions)
    report.seconds = time.perf_counter() - started
    return report
