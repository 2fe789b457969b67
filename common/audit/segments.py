"""Where a log's entries live: the live file and the rotated segments before it.

A log is named by its *live file*, e.g. ``audit.jsonl``. When it grows past its limit it is moved
to the next *segment*, ``audit.000001.jsonl``, ``audit.000002.jsonl``, ... -- or, if the log was
opened with a seal key, sealed with :func:`common.crypto.seal_file` into
``audit.000001.jsonl.sealed`` under object id ``audit/<actor>/000001`` -- and a new live file
continues the chain. Reading a log means reading its segments in index order, then the live file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from common.crypto import SiteKey, open_file
from common.errors import AuditError, IntegrityError

__all__ = ["Segment", "list_segments", "read_segment", "segment_object_id", "segment_path"]

SEALED_SUFFIX = ".sealed"


@dataclass(frozen=True)
class Segment:
    """One file of a log. ``index`` is ``None`` for the live file."""

    path: Path
    index: int | None
    sealed: bool


def segment_path(live: Path, index: int, *, sealed: bool) -> Path:
    """The path of segment ``index`` of the log whose live file is ``live``."""
    name = f"{live.stem}.{index:06d}{live.suffix}" + (SEALED_SUFFIX if sealed else "")
    return live.with_name(name)


def segment_object_id(actor: str, index: int) -> str:
    """The sealed-object id of segment ``index`` of ``actor``'s log: ``audit/<actor>/<index>``."""
    return f"audit/{actor}/{index:06d}"


def list_segments(live: Path) -> list[Segment]:
    """The log's rotated segments in index order, then its live file if it exists.

    Raises
    ------
    AuditError
        If one index exists both plain and sealed (a copy was left behind: remove the wrong one).
    """
    live = Path(live)
    pattern = re.compile(
        rf"{re.escape(live.stem)}\.(\d{{6,}}){re.escape(live.suffix)}({re.escape(SEALED_SUFFIX)})?"
    )
    found: dict[int, Segment] = {}
    if live.parent.is_dir():
        for candidate in live.parent.iterdir():
            match = pattern.fullmatch(candidate.name)
            if match is None:
                continue
            index = int(match.group(1))
            if index in found:
                raise AuditError(
                    f"Segment {index} of log {live} exists twice ({found[index].path.name} and "
                    f"{candidate.name}); keep the one the chain continues from."
                )
            found[index] = Segment(candidate, index, match.group(2) is not None)
    segments = [found[i] for i in sorted(found)]
    if live.exists():
        segments.append(Segment(live, None, False))
    return segments


def read_segment(segment: Segment, *, actor: str | None, seal_key: SiteKey | None) -> bytes:
    """Return a segment's bytes, opening it with ``seal_key`` if it is sealed.

    Raises
    ------
    AuditError
        If a sealed segment cannot be opened: no key given, actor unknown, or authentication failed
        (wrong key, or the file was altered).
    """
    if not segment.sealed:
        return segment.path.read_bytes()
    if seal_key is None:
        raise AuditError(f"Segment {segment.path} is sealed; pass the key it was sealed with (--seal-key).")
    if actor is None or segment.index is None:
        raise AuditError(f"Cannot open sealed segment {segment.path}: the log's actor is unknown.")
    try:
        return open_file(seal_key, segment.path, object_id=segment_object_id(actor, segment.index))
    except IntegrityError:
        raise AuditError(
            f"Sealed segment {segment.path} does not open with the given key as segment {segment.index} "
            f"of {actor}'s log (wrong key, or the file was altered or renamed)."
        ) from None
