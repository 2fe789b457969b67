"""Writing an audit log: append-only, durable, safe with concurrent writers, rotated into segments.

Every append happens under an exclusive ``flock`` on a sidecar ``<log>.lock`` (a sidecar, not the
log itself, because rotation renames the log). Under the lock the writer reads the last entry, checks
that it belongs to this actor and key and that its signature verifies, builds the next entry on top
of it, writes the line with one ``write(2)`` on an ``O_APPEND`` descriptor and ``fsync``\\ s it before
returning. So entries from several processes interleave into one gap-free chain, and an entry
:meth:`AuditLog.append` has returned survives a power cut.

Checking the previous signature before chaining is what makes one signature vouch for the whole
history (see :mod:`common.audit.verify`): the writer never signs on top of an entry it did not see
verify, so an entry forged by someone without the key stops the log loudly instead of being
absorbed into the chain.

A crash in the middle of a write can leave a torn last line (no newline). The next append removes
those bytes and records a ``log.recovered`` entry with their length and SHA-256 before its own entry:
the torn line was never acknowledged, and its removal stays visible in the log.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.audit.canonical import canonical_json
from common.audit.entry import ENTRY_VERSION, GENESIS_PREV, Entry, EntryFormatError, decode_line, encode_entry
from common.audit.events import LIBRARY_EVENTS, ROLES, check_details, is_token
from common.audit.segments import Segment, list_segments, read_segment, segment_object_id, segment_path
from common.crypto import SigningKey, SiteKey, seal_file
from common.errors import AuditError
from common.fsio import fsync_dir

__all__ = ["LOG_FORMAT", "AuditLog", "Head", "utc_timestamp"]

#: Written into every log's genesis entry.
LOG_FORMAT = "fedscan-audit-v1"
_MAX_DETAIL_BYTES = 64 * 1024
_TAIL_CHUNK = 8192


def utc_timestamp(moment: datetime | None = None) -> str:
    """``moment`` (default: now) as the entries' UTC timestamp, ``YYYY-MM-DDTHH:MM:SS.ffffffZ``."""
    moment = datetime.now(UTC) if moment is None else moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Head:
    """The last entry of a log: its ``seq`` and the SHA-256 of its line (the next entry's ``prev``).

    Recording a head elsewhere (another party's log, a report, a ticket) and passing it back to
    :func:`common.audit.verify_log` later is what detects entries cut from the end of a log.
    """

    seq: int
    sha256: str

    def __str__(self) -> str:
        return f"{self.seq}:{self.sha256}"


@dataclass
class _Tail:
    entry: Entry
    live_first_seq: int | None  # None: the live file is empty or missing


class AuditLog:
    """An append-only, hash-chained, Ed25519-signed audit log for one actor.

    Build with :meth:`open`; use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        path: Path,
        actor: str,
        signing_key: SigningKey,
        role: str,
        seal_key: SiteKey | None,
        max_entries: int,
        max_bytes: int,
        clock: Callable[[], datetime] | None,
    ) -> None:
        self.path = Path(path)
        self.actor = actor
        self.role = role
        self._key = signing_key
        self._seal_key = seal_key
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._clock = clock
        self._thread_lock = threading.Lock()
        self._lock_fd: int | None = None
        self._lock_pid = 0
        # (inode, size) of the live file right after our own last write, and that line: lets an
        # uncontended append skip re-reading and re-verifying its own previous entry.
        self._own: tuple[int, int, Entry, int | None] | None = None

    @classmethod
    def open(
        cls,
        path: Path,
        actor: str,
        signing_key: SigningKey,
        *,
        role: str,
        seal_key: SiteKey | None = None,
        max_entries: int = 100_000,
        max_bytes: int = 64 << 20,
        clock: Callable[[], datetime] | None = None,
    ) -> AuditLog:
        """Open the log at ``path`` (its live file) for ``actor``, creating it if needed.

        Parameters
        ----------
        path
            The live file, e.g. ``site_dir / "audit" / "audit.jsonl"``; its directory is created 0700.
        actor
            The pseudonymous id that writes this log (the site id, or e.g. ``"server"``): a token.
        signing_key
            The actor's Ed25519 key. A log is signed by one key for its whole life.
        role
            ``"site"`` or ``"server"``: which event types the log accepts.
        seal_key
            If given, rotated segments are sealed under it (confidentiality at rest); auditors then
            need it to verify. Without it, segments stay plaintext (still chained and signed).
        max_entries, max_bytes
            Rotate the live file once it holds this many entries or bytes.
        clock
            Returns the current time; for tests. Defaults to the system clock in UTC.

        Raises
        ------
        AuditError
            If the arguments are invalid, or the existing log belongs to another actor or key.
        """
        if not is_token(actor):
            raise AuditError("The actor must be a pseudonymous token ([a-z0-9_.-], 1-64 characters).")
        if role not in ROLES:
            raise AuditError(f"The role must be one of {', '.join(ROLES)}, not {role!r}.")
        if not isinstance(signing_key, SigningKey):
            raise AuditError("The signing key must be a common.crypto.SigningKey.")
        if max_entries < 2 or max_bytes < 1024:
            raise AuditError("A log segment must allow at least 2 entries and 1024 bytes before rotating.")
        log = cls(Path(path), actor, signing_key, role, seal_key, max_entries, max_bytes, clock)
        log.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        log._open_lock()
        try:
            with log._locked():
                if log._read_tail() is None:
                    log._write(None, "log.genesis", log._genesis_details())
        except BaseException:
            log.close()
            raise
        return log

    # ---- public -------------------------------------------------------------------------------

    def append(self, event: str, /, **details: Any) -> Entry:
        """Append one event durably; return the entry as written.

        ``details`` are checked against the event registry (:mod:`common.audit.events`) first: an
        unknown key or a value of the wrong kind -- e.g. free text that could carry PHI -- is refused.

        Example: ``log.append("round.taken", run_id="run-1", round=3, model_sha256=h, examples=120)``

        Raises
        ------
        AuditError
            If the details are refused, or the log cannot be safely extended (its last entry belongs
            to another actor or key, or does not verify).
        """
        if event in LIBRARY_EVENTS:
            raise AuditError(f"Event {event} is written by the log itself, not by callers.")
        check_details(event, details, role=self.role)
        if len(canonical_json(details)) > _MAX_DETAIL_BYTES:
            raise AuditError(f"Details of event {event} exceed {_MAX_DETAIL_BYTES} bytes.")
        with self._locked():
            tail = self._read_tail()
            if tail is None:
                raise AuditError(f"Audit log {self.path} has disappeared; restore it before appending.")
            entry = self._write(tail, event, details)
            first = tail.live_first_seq if tail.live_first_seq is not None else entry.seq
            if entry.seq - first + 1 >= self._max_entries or self.path.stat().st_size >= self._max_bytes:
                self._rotate(entry)
            return entry

    def head(self) -> Head:
        """The current last entry (seq and line hash), read under the lock."""
        with self._locked():
            tail = self._read_tail()
        if tail is None:
            raise AuditError(f"Audit log {self.path} has disappeared.")
        return Head(tail.entry.seq, tail.entry.line_hash())

    def close(self) -> None:
        """Release the lock file descriptor (idempotent)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- internals ------------------------------------------------------------------------------

    def _open_lock(self) -> None:
        lock_path = self.path.with_name(self.path.name + ".lock")
        self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        self._lock_pid = os.getpid()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self._lock_fd is None:
            raise AuditError(f"Audit log {self.path} is closed.")
        if self._lock_pid != os.getpid():
            # A forked child shares the parent's open file description, and with it the flock: it
            # would not exclude the parent. Give the child its own.
            self._open_lock()
            self._own = None
        with self._thread_lock:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _genesis_details(self) -> dict[str, Any]:
        return {"role": self.role, "public_key": self._key.verify_key.to_base64(), "format": LOG_FORMAT}

    def _now(self) -> str:
        return utc_timestamp(self._clock() if self._clock is not None else None)

    def _write(self, tail: _Tail | None, event: str, details: Mapping[str, Any]) -> Entry:
        """Build, sign and durably append the entry after ``tail`` (``None``: the genesis)."""
        body = {
            "actor": self.actor,
            "details": dict(details),
            "event": event,
            "key": self._key.key_id,
            "prev": tail.entry.line_hash() if tail is not None else GENESIS_PREV,
            "seq": tail.entry.seq + 1 if tail is not None else 0,
            "time": self._now(),
            "v": ENTRY_VERSION,
        }
        line = encode_entry(body, self._key)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            written = os.write(fd, line + b"\n")
            os.fsync(fd)
            info = os.fstat(fd)
        finally:
            os.close(fd)
        if written != len(line) + 1:
            raise AuditError(f"Short write to audit log {self.path}; the next append will repair it.")
        if created:
            fsync_dir(self.path.parent)
        entry, _ = decode_line(line)
        if tail is not None and tail.live_first_seq is None:
            tail.live_first_seq = entry.seq
        self._own = (info.st_ino, info.st_size, entry, tail.live_first_seq if tail is not None else entry.seq)
        return entry

    def _rotate(self, last: Entry) -> None:
        """Move the live file to the next segment (sealed if configured) and restart the chain."""
        archived = [s for s in list_segments(self.path) if s.index is not None]
        index = (archived[-1].index or 0) + 1 if archived else 1
        target = segment_path(self.path, index, sealed=self._seal_key is not None)
        if self._seal_key is not None:
            object_id = segment_object_id(self.actor, index)
            seal_file(self._seal_key, self.path.read_bytes(), target, object_id=object_id)
        else:
            os.link(self.path, target)  # fails rather than overwrite an existing segment
        self.path.unlink()
        fsync_dir(self.path.parent)
        self._own = None
        self._write(
            _Tail(last, None), "log.rotated", {"segment": index, "sealed": self._seal_key is not None}
        )

    def _read_tail(self) -> _Tail | None:
        """The last entry (checked), repairing a torn line or an interrupted rotation first."""
        own = self._own
        if own is not None:
            with contextlib.suppress(FileNotFoundError):
                info = os.stat(self.path)
                if (info.st_ino, info.st_size) == own[:2]:
                    return _Tail(own[2], own[3])
        segments = list_segments(self.path)
        archived = [s for s in segments if s.index is not None]
        live_exists = bool(segments) and segments[-1].index is None
        first, last = (_first_line(self.path), _last_line(self.path)) if live_exists else (b"", b"")
        recovered: dict[str, Any] | None = None
        if last and not last.endswith(b"\n"):
            recovered = self._drop_torn_line(len(last))
            first, last = _first_line(self.path), _last_line(self.path)
        if first and archived and self._is_leftover(first, archived[-1]):
            self.path.unlink()
            fsync_dir(self.path.parent)
            first = last = b""
        if last:
            tail = _Tail(self._checked(last.rstrip(b"\n"), self.path), _first_seq(first))
            if recovered is not None:
                self._write(tail, "log.recovered", recovered)
                return self._read_tail()
            return tail
        if archived:
            # The live file is missing: a rotation was interrupted after the move. Restart it.
            data = read_segment(archived[-1], actor=self.actor, seal_key=self._seal_key)
            previous = self._checked(data.rstrip(b"\n").rsplit(b"\n", 1)[-1], archived[-1].path)
            details = {"segment": archived[-1].index, "sealed": archived[-1].sealed}
            self._write(_Tail(previous, None), "log.rotated", details)
            return self._read_tail()
        return None

    def _drop_torn_line(self, torn_size: int) -> dict[str, Any]:
        """Cut a torn last line (``torn_size`` bytes, no newline); return the recovery details."""
        fd = os.open(self.path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        try:
            size = os.fstat(fd).st_size
            torn = os.pread(fd, torn_size, size - torn_size)
            os.ftruncate(fd, size - torn_size)
            os.fsync(fd)
        finally:
            os.close(fd)
        return {"dropped_bytes": len(torn), "dropped_sha256": hashlib.sha256(torn).hexdigest()}

    def _is_leftover(self, first_line: bytes, newest: Segment) -> bool:
        """Whether the live file is a copy of the newest segment (crash between seal and unlink).

        A live file that follows segment N starts with ``log.rotated`` for N; anything else is
        compared byte for byte with segment N (this read happens only after such a crash).
        """
        with contextlib.suppress(EntryFormatError):
            first, _ = decode_line(first_line.rstrip(b"\n"))
            if first.event == "log.rotated" and first.details.get("segment") == newest.index:
                return False
        data = read_segment(newest, actor=self.actor, seal_key=self._seal_key)
        return data == self.path.read_bytes()

    def _checked(self, line: bytes, where: Path) -> Entry:
        """Decode the last entry and make sure it is safe to chain on (actor, key, hash, signature)."""
        try:
            entry, body = decode_line(line)
        except EntryFormatError as error:
            raise AuditError(
                f"The last entry of {where} is not a valid entry ({error.detail}); run "
                "`fedscan audit verify` on it before appending."
            ) from None
        if entry.actor != self.actor:
            raise AuditError(f"Audit log {self.path} belongs to actor {entry.actor}, not {self.actor}.")
        if entry.key_id != self._key.key_id:
            raise AuditError(
                f"Audit log {self.path} is signed by key {entry.key_id}, not by this key "
                f"({self._key.key_id}); a log keeps one signing key for its whole life."
            )
        if hashlib.sha256(body).hexdigest() != entry.hash or not entry.signed_ok(self._key.verify_key):
            raise AuditError(
                f"The last entry of {where} (seq {entry.seq}) does not verify under this log's key; "
                "refusing to chain on it. Run `fedscan audit verify` and investigate."
            )
        return entry


def _first_line(path: Path) -> bytes:
    """The first line of ``path`` with its newline (if any); empty if the file is empty or missing."""
    try:
        with open(path, "rb") as handle:
            return handle.readline()
    except FileNotFoundError:
        return b""


def _last_line(path: Path) -> bytes:
    """The last line of ``path``, read backwards from the end (a torn line has no newline)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return b""
    try:
        size = os.fstat(fd).st_size
        data = b""
        offset = size
        while offset > 0:
            step = min(_TAIL_CHUNK, offset)
            offset -= step
            data = os.pread(fd, step, offset) + data
            cut = data.rfind(b"\n", 0, len(data) - 1)
            if cut >= 0:
                return data[cut + 1 :]
        return data
    finally:
        os.close(fd)


def _first_seq(first_line: bytes) -> int | None:
    """The seq of the entry on ``first_line``, or ``None`` if there is none or it does not decode."""
    try:
        entry, _ = decode_line(first_line.rstrip(b"\n"))
    except EntryFormatError:
        return None
    return entry.seq
