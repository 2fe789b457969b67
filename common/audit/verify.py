"""Verifying an audit log offline: every line, every link, and the signatures, naming the first bad entry.

Entries are read in order across the log's segments and the live file. Each line must be a
well-formed, canonical entry (:mod:`common.audit.entry`); its ``hash`` must be the SHA-256 of its
body; its ``seq`` must be the previous one plus one (0 first); its ``prev`` must be the SHA-256 of the
previous line (64 zeros first); the first entry must be the ``log.genesis`` naming the log's public
key; every entry must carry the log's actor and key id and details the event registry allows. The
first line breaking any rule is *the first bad entry*, reported with its file, line number, seq and
reason (:data:`REASONS`).

Signatures, two ways, with the same verdict:

``every_signature=True``
    Check each entry's Ed25519 signature: one verification per entry (about 7,000 per second on this
    project's machines, where OpenSSL's Ed25519 verify costs 140 us).
default (chain-anchored)
    Check the signature of the last structurally valid entry. Because ``prev`` hashes the whole
    previous line, signature included, that one signature covers every byte of every line before it;
    and because the writer (:mod:`common.audit.log`) verifies the previous entry's signature before
    signing on top of it, a valid signature at entry *n* means every entry before *n* was validly
    signed when it was chained, and is byte-identical now. If that signature fails, a bisection finds
    the first entry whose signature fails (signature validity is monotone along an intact chain by the
    same argument), so the report names the same entry as the exhaustive check, in log2(n)
    verifications. ``docs/audit.md`` spells out the argument and its one assumption (the log was
    written by fedscan's writer, which an adversary without the key cannot impersonate anyway).

Entries cut from the *end* of a log leave a shorter, still valid log: only a head recorded elsewhere
(``expected_head``) can reveal them. Every verification reports the head for that purpose.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from common.audit.entry import GENESIS_PREV, Entry, EntryFormatError, decode_line
from common.audit.events import check_details
from common.audit.log import Head
from common.audit.segments import Segment, list_segments, read_segment
from common.crypto import SiteKey, VerifyKey
from common.errors import AuditError, KeyMaterialError

__all__ = ["REASONS", "Failure", "VerifiedLog", "Verification", "read_verified_log", "verify_log"]

#: Reason code -> what it means. A failure names exactly one of these.
REASONS: Final[Mapping[str, str]] = {
    "missing": "the log file does not exist or is empty",
    "unreadable": "a segment cannot be read or opened (sealed under another key, or altered)",
    "truncated": "the last line is incomplete: the file was cut in the middle of an entry",
    "malformed": "the line is not a well-formed entry",
    "not-canonical": "the entry is not in canonical form (re-encoded or hand-edited)",
    "hash-mismatch": "the entry's content does not match its hash (edited)",
    "sequence-gap": "seq skips ahead: entries before this one were deleted or moved",
    "sequence-order": "seq repeats or goes back: entries were inserted, duplicated or reordered",
    "broken-chain": "prev does not match the previous line: an entry before it was edited or replaced",
    "bad-genesis": "the log does not start with a valid log.genesis entry",
    "actor-mismatch": "the entry names another actor than the log's",
    "unknown-key": "the entry or log is signed by a key that is not the log's (or not a pinned key)",
    "wrong-actor-key": "the log claims an actor whose pinned key (manifest or --pubkey) is another",
    "unknown-actor": "the log claims an actor that has no pinned key (not in the federation manifest)",
    "restarted-log": "the log starts from another genesis than the one its actor enrolled: it was re-created",
    "not-pinned": "no key was pinned for the log's actor: only the log's own genesis vouches for it",
    "invalid-details": "the event type or its details are not allowed by the event registry",
    "bad-signature": "the signature does not verify (forged, or the entry was re-hashed after signing)",
    "missing-entries": "the log ends before the expected head: entries were cut from its end",
    "head-mismatch": "the entry at the expected head differs from the one recorded: history rewritten",
}


@dataclass(frozen=True)
class Failure:
    """The first bad entry of a log: where it is and why it fails."""

    reason: str
    file: str
    line: int
    seq: int | None
    detail: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        seq = f"entry seq {self.seq}" if self.seq is not None else "entry"
        return f"{where}: {seq}: {self.reason}: {self.detail}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "reason": self.reason,
            "file": self.file,
            "line": self.line,
            "seq": self.seq,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Verification:
    """The verdict on one log.

    Attributes
    ----------
    log
        The live file named by the caller.
    files
        Every file read, segments first.
    actor, role, key_id
        From the genesis entry (``None`` if it could not be read).
    key_pinned
        Whether the log's key was one the caller supplied (otherwise only the key embedded in the
        genesis vouches for the log: that proves integrity, not authorship).
    entries
        How many entries verified (all of them if ``ok``; the ones before the first bad one otherwise).
    head
        The last verified entry: record it to detect truncation later.
    signatures_checked, every_signature
        How many Ed25519 verifications ran, and in which mode.
    failure
        The first bad entry, or ``None``.
    """

    log: str
    files: tuple[str, ...]
    actor: str | None
    role: str | None
    key_id: str | None
    key_pinned: bool
    entries: int
    head: Head | None
    signatures_checked: int
    every_signature: bool
    failure: Failure | None = None

    @property
    def ok(self) -> bool:
        """Whether the whole log verified."""
        return self.failure is None

    def summary(self) -> str:
        """One line for people."""
        if self.failure is not None:
            return f"FAIL {self.log}: {self.failure}"
        pinned = "pinned key" if self.key_pinned else "embedded key, NOT pinned"
        return (
            f"OK   {self.log}: {self.entries} entries, actor {self.actor} ({self.role}), key {self.key_id} "
            f"({pinned}), head {self.actor}:{self.head}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "log": self.log,
            "ok": self.ok,
            "files": list(self.files),
            "actor": self.actor,
            "role": self.role,
            "key_id": self.key_id,
            "key_pinned": self.key_pinned,
            "entries": self.entries,
            "head": {"seq": self.head.seq, "sha256": self.head.sha256} if self.head else None,
            "signatures_checked": self.signatures_checked,
            "every_signature": self.every_signature,
            "failure": self.failure.to_dict() if self.failure else None,
        }


@dataclass(frozen=True)
class VerifiedLog:
    """A verification and the entries that verified (in order), for reconciliation and reports.

    ``where[i]`` is the (file, line number) of ``entries[i]``.
    """

    verification: Verification
    entries: tuple[Entry, ...] = field(repr=False)
    where: tuple[tuple[str, int], ...] = field(repr=False, default=())

    def locate(self, index: int) -> str:
        """``file:line (seq N)`` of entry ``index``, for messages."""
        name, number = self.where[index]
        return f"{name}:{number} (seq {self.entries[index].seq})"


def verify_log(
    path: Path,
    *,
    pubkeys: Iterable[VerifyKey] = (),
    actor_keys: Mapping[str, VerifyKey] | None = None,
    genesis: Mapping[str, str] | None = None,
    require_pinned: bool = False,
    seal_key: SiteKey | None = None,
    expected_head: Head | None = None,
    every_signature: bool = False,
) -> Verification:
    """Verify the log whose live file is ``path``; see the module docstring.

    Parameters
    ----------
    pubkeys
        Keys the caller trusts, as a set. If any are given, the log's genesis key must be one of them;
        if none, the genesis key is used and the result says it was not pinned. A set does not say
        whose key is whose: prefer ``actor_keys``.
    actor_keys
        Each actor's key (e.g. from the signed federation manifest): the log must be signed by the key
        of the actor it claims to be (``wrong-actor-key``), and that actor must have one
        (``unknown-actor``).
    genesis
        Each actor's enrolled log genesis (SHA-256 of its first line): a log of that actor starting from
        another genesis was re-created (``restarted-log``).
    require_pinned
        Fail (``not-pinned``) instead of passing a log no given key vouches for.
    seal_key
        Opens sealed segments.
    expected_head
        A head recorded earlier; detects entries cut from the end.
    every_signature
        Verify each signature instead of the chain-anchored check (same verdict, slower).
    """
    return read_verified_log(
        path,
        pubkeys=pubkeys,
        actor_keys=actor_keys,
        genesis=genesis,
        require_pinned=require_pinned,
        seal_key=seal_key,
        expected_head=expected_head,
        every_signature=every_signature,
    ).verification


def read_verified_log(
    path: Path,
    *,
    pubkeys: Iterable[VerifyKey] = (),
    actor_keys: Mapping[str, VerifyKey] | None = None,
    genesis: Mapping[str, str] | None = None,
    require_pinned: bool = False,
    seal_key: SiteKey | None = None,
    expected_head: Head | None = None,
    every_signature: bool = False,
) -> VerifiedLog:
    """Like :func:`verify_log`, also returning the verified entries (those before the first bad one)."""
    state = _Walk(Path(path), {k.key_id: k for k in pubkeys}, every_signature)
    state.actor_keys = dict(actor_keys) if actor_keys is not None else None
    state.genesis = dict(genesis or {})
    state.run(seal_key)
    if state.failure is None and require_pinned and not state.is_pinned():
        state.fail(
            "not-pinned",
            str(path),
            0,
            None,
            f"no key is pinned for actor {state.actor}: pass the federation's kit (--kit) or "
            f"--pubkey {state.actor}=KEY, or accept an unpinned check explicitly (--allow-unpinned)",
        )
    if not every_signature:
        state.check_signatures_anchored()
    if expected_head is not None and state.failure is None:
        state.check_head(expected_head)
    verification = Verification(
        log=str(path),
        files=tuple(state.files),
        actor=state.actor,
        role=state.role,
        key_id=state.key.key_id if state.key else None,
        key_pinned=state.is_pinned(),
        entries=len(state.entries),
        head=Head(state.entries[-1].seq, state.entries[-1].line_hash()) if state.entries else None,
        signatures_checked=state.signatures_checked,
        every_signature=every_signature,
        failure=state.failure,
    )
    return VerifiedLog(verification, tuple(state.entries), tuple(state.where))


class _Walk:
    """One pass over a log's lines; stops at the first structural failure."""

    def __init__(self, live: Path, pinned: dict[str, VerifyKey], every_signature: bool) -> None:
        self.live = live
        self.pinned = pinned
        self.every_signature = every_signature
        self.files: list[str] = []
        self.entries: list[Entry] = []
        self.where: list[tuple[str, int]] = []
        self.failure: Failure | None = None
        self.actor: str | None = None
        self.role: str | None = None
        self.key: VerifyKey | None = None
        self.signatures_checked = 0
        self.actor_keys: dict[str, VerifyKey] | None = None
        self.genesis: dict[str, str] = {}

    def is_pinned(self) -> bool:
        """Whether a key the caller gave vouches for the log (not only the log's own genesis)."""
        if self.key is None:
            return False
        if self.actor_keys is not None and self.actor in self.actor_keys:
            return True
        return bool(self.pinned)

    def fail(self, reason: str, file: str, line: int, seq: int | None, detail: str) -> None:
        self.failure = Failure(reason, file, line, seq, detail)

    def run(self, seal_key: SiteKey | None) -> None:
        segments = list_segments(self.live)
        if not segments:
            self.fail("missing", str(self.live), 0, None, f"{self.live} does not exist")
            return
        sealed_actor = _actor_hint(segments)
        prev_hash, expected = GENESIS_PREV, 0
        for segment in segments:
            name = str(segment.path)
            self.files.append(name)
            try:
                data = read_segment(segment, actor=self.actor or sealed_actor, seal_key=seal_key)
            except (AuditError, OSError) as error:
                self.fail("unreadable", name, 0, expected, str(error))
                return
            lines = data.split(b"\n")
            torn = lines.pop()
            for number, line in enumerate(lines, 1):
                entry = self.check_line(line, name, number, prev_hash, expected)
                if entry is None:
                    return
                self.entries.append(entry)
                self.where.append((name, number))
                prev_hash, expected = hashlib.sha256(line).hexdigest(), expected + 1
            if torn:
                self.fail(
                    "truncated", name, len(lines) + 1, expected, "the file ends in the middle of an entry"
                )
                return
        if not self.entries:
            self.fail("missing", str(self.live), 0, None, f"{self.live} holds no entries")

    def check_line(self, line: bytes, name: str, number: int, prev_hash: str, expected: int) -> Entry | None:
        try:
            entry, body = decode_line(line)
        except EntryFormatError as error:
            self.fail(error.reason, name, number, expected, error.detail)
            return None
        seq = entry.seq
        if hashlib.sha256(body).hexdigest() != entry.hash:
            self.fail(
                "hash-mismatch", name, number, seq, "the content was changed after the entry was hashed"
            )
        elif seq > expected:
            self.fail(
                "sequence-gap",
                name,
                number,
                seq,
                f"expected seq {expected}; seq {expected}..{seq - 1} missing",
            )
        elif seq < expected:
            self.fail(
                "sequence-order",
                name,
                number,
                seq,
                f"expected seq {expected}, found {seq} again or out of order",
            )
        elif entry.prev != prev_hash:
            self.fail("broken-chain", name, number, seq, "prev is not the SHA-256 of the previous line")
        elif seq == 0:
            self.check_genesis(entry, name, number)
        elif entry.actor != self.actor:
            self.fail(
                "actor-mismatch", name, number, seq, f"actor {entry.actor!r}, the log's is {self.actor!r}"
            )
        elif self.key is None or entry.key_id != self.key.key_id:
            self.fail("unknown-key", name, number, seq, f"signed by key {entry.key_id}, not the log's key")
        else:
            self.check_details(entry, name, number)
        if self.failure is None and self.every_signature:
            self.signatures_checked += 1
            if self.key is not None and not entry.signed_ok(self.key):
                self.fail(
                    "bad-signature", name, number, seq, f"not a valid signature by key {self.key.key_id}"
                )
        return entry if self.failure is None else None

    def check_genesis(self, entry: Entry, name: str, number: int) -> None:
        details = entry.details
        if entry.event != "log.genesis":
            self.fail("bad-genesis", name, number, 0, f"the first entry is {entry.event}, not log.genesis")
            return
        try:
            check_details("log.genesis", details)
            key = VerifyKey.from_raw(base64.b64decode(details["public_key"]))
        except (AuditError, KeyMaterialError) as error:
            self.fail("bad-genesis", name, number, 0, str(error))
            return
        if key.key_id != entry.key_id:
            self.fail(
                "unknown-key",
                name,
                number,
                0,
                f"the genesis names key {key.key_id} but is signed by {entry.key_id}",
            )
            return
        if self.pinned and key.key_id not in self.pinned:
            self.fail(
                "unknown-key", name, number, 0, f"the log's key {key.key_id} is not among the pinned keys"
            )
            return
        if self.actor_keys is not None:
            expected = self.actor_keys.get(entry.actor)
            if expected is None and not self.pinned:
                self.fail(
                    "unknown-actor",
                    name,
                    number,
                    0,
                    f"the log claims actor {entry.actor}, which has no key in the federation manifest or "
                    "--pubkey",
                )
                return
            if expected is not None and expected.key_id != key.key_id:
                self.fail(
                    "wrong-actor-key",
                    name,
                    number,
                    0,
                    f"the log claims actor {entry.actor}, whose key is {expected.key_id}, but is signed "
                    f"with key {key.key_id}",
                )
                return
        enrolled = self.genesis.get(entry.actor)
        if enrolled is not None and entry.line_hash() != enrolled:
            self.fail(
                "restarted-log",
                name,
                number,
                0,
                f"actor {entry.actor} enrolled its log with genesis {enrolled[:16]}...; this log starts "
                f"from {entry.line_hash()[:16]}... (re-created after enrolment)",
            )
            return
        self.actor, self.role, self.key = entry.actor, str(details["role"]), key

    def check_details(self, entry: Entry, name: str, number: int) -> None:
        try:
            check_details(entry.event, entry.details, role=self.role)
        except AuditError as error:
            self.fail("invalid-details", name, number, entry.seq, str(error))

    def check_signatures_anchored(self) -> None:
        """Chain-anchored signature check over the entries that passed the structural pass."""
        if not self.entries or self.key is None:
            return
        key = self.key

        def bad(index: int) -> bool:
            self.signatures_checked += 1
            return not self.entries[index].signed_ok(key)

        last = len(self.entries) - 1
        if not bad(last):
            return
        low, high = 0, last  # invariant: entry ``high`` is bad; every entry before ``low`` is good
        while low < high:
            middle = (low + high) // 2
            if bad(middle):
                high = middle
            else:
                low = middle + 1
        name, number = self.where[high]
        self.fail(
            "bad-signature",
            name,
            number,
            self.entries[high].seq,
            f"not a valid signature by key {key.key_id}",
        )
        del self.entries[high:], self.where[high:]

    def check_head(self, head: Head) -> None:
        last = self.entries[-1]
        name, number = self.where[-1]
        if head.seq > last.seq:
            self.fail(
                "missing-entries",
                name,
                number + 1,
                last.seq + 1,
                f"the log ends at seq {last.seq}, but its head was recorded at seq {head.seq} "
                f"(entries {last.seq + 1}..{head.seq} were cut)",
            )
        elif self.entries[head.seq].line_hash() != head.sha256:
            name, number = self.where[head.seq]
            self.fail("head-mismatch", name, number, head.seq, "this entry differs from the recorded head")


def _actor_hint(segments: list[Segment]) -> str | None:
    """The actor named by the live file's first entry: needed to open sealed segments by object id."""
    if not any(s.sealed for s in segments) or segments[-1].index is not None:
        return None
    with open(segments[-1].path, "rb") as handle:
        first = handle.readline().rstrip(b"\n")
    try:
        entry, _ = decode_line(first)
    except EntryFormatError:
        return None
    return entry.actor
