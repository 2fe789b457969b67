"""Tamper tests: every edit, deletion, insertion, reordering, truncation and forgery is caught and named.

Each case damages a real log the way an insider with file access (but without the signing key) could,
then checks that verification names the exact first bad entry (file line and seq) and the reason --
and that the chain-anchored check and the exhaustive ``every_signature`` check give the same verdict.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.audit import AuditLog, Head, verify_log
from common.audit.entry import decode_line, encode_entry
from common.audit.verify import REASONS, Verification
from common.crypto import SigningKey, generate_signing_key
from common.errors import AuditError

H = "ab" * 32
N = 12  # entries: genesis + 11 rounds; lines 1..12 hold seq 0..11
K = 5  # the entry under attack: seq 5, line 6
KEY = generate_signing_key()


def _make_log(path: Path, key: SigningKey = KEY, **kw: object) -> None:
    with AuditLog.open(path, "site-a", key, role="site", **kw) as log:  # type: ignore[arg-type]
        for r in range(1, N):
            log.append(
                "round.taken", run_id="run-1", round=r, model_sha256=H, examples=10 * r, epsilon=0.5 * r
            )


def _verify_both(path: Path, **kw: object) -> Verification:
    fast = verify_log(path, **kw)  # type: ignore[arg-type]
    slow = verify_log(path, every_signature=True, **kw)  # type: ignore[arg-type]
    assert fast.failure == slow.failure
    assert fast.entries == slow.entries
    return fast


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


def _write(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def _rebuild_chain(lines: list[bytes], start: int, signer: SigningKey) -> list[bytes]:
    """Re-hash ``lines[start:]`` and re-link the chain, signing with ``signer`` (an attacker's key)."""
    out = lines[:start]
    for line in lines[start:]:
        entry, _ = decode_line(line)
        body = json.loads(line)
        for field in ("hash", "sig"):
            del body[field]
        body["prev"] = hashlib.sha256(out[-1]).hexdigest()
        body["key"] = entry.key_id  # claim the real key id
        out.append(encode_entry(body, signer))
    return out


def _edit_json(line: bytes, old: bytes, new: bytes) -> bytes:
    assert line.count(old) >= 1, (line, old)
    return line.replace(old, new, 1)


def _flip_after(line: bytes, marker: bytes) -> bytes:
    """Change the first character of the value after ``marker`` to another valid character."""
    at = line.index(marker) + len(marker)
    new = b"1" if line[at : at + 1] != b"1" else b"2"
    return line[:at] + new + line[at + 1 :]


def _forge_after(line: bytes) -> bytes:
    """A new entry that follows ``line`` correctly in every respect but the signature (wrong key)."""
    entry, _ = decode_line(line)
    body = {k: v for k, v in json.loads(line).items() if k not in ("hash", "sig")}
    body.update(
        seq=entry.seq + 1, prev=hashlib.sha256(line).hexdigest(), details={**entry.details, "examples": 1}
    )
    return encode_entry(body, KEY_EVE)


Edit = Callable[[list[bytes]], list[bytes]]


def _at(k: int, change: Callable[[bytes], bytes]) -> Edit:
    return lambda lines: [change(x) if i == k else x for i, x in enumerate(lines)]


# name -> (edit, reason, line named, seq named)
CASES: dict[str, tuple[Edit, str, int, int]] = {
    "edit details value": (
        _at(K, lambda x: _edit_json(x, b'"examples":50', b'"examples":51')),
        "hash-mismatch",
        6,
        5,
    ),
    "edit actor": (_at(K, lambda x: _edit_json(x, b'"site-a"', b'"site-b"')), "hash-mismatch", 6, 5),
    "edit event": (
        _at(K, lambda x: _edit_json(x, b'"event":"round.taken"', b'"event":"round.refusd"')),
        "hash-mismatch",
        6,
        5,
    ),
    "edit key id": (_at(K, lambda x: _flip_after(x, b'"key":"')), "hash-mismatch", 6, 5),
    "edit prev": (_at(K, lambda x: _flip_after(x, b'"prev":"')), "hash-mismatch", 6, 5),
    "lengthen prev": (_at(K, lambda x: _edit_json(x, b'"prev":"', b'"prev":"0')), "malformed", 6, 5),
    "edit seq": (_at(K, lambda x: _edit_json(x, b'"seq":5', b'"seq":6')), "hash-mismatch", 6, 6),
    "edit time": (_at(K, lambda x: _edit_json(x, b'"time":"20', b'"time":"19')), "hash-mismatch", 6, 5),
    "edit version": (_at(K, lambda x: _edit_json(x, b'"v":1', b'"v":2')), "malformed", 6, 5),
    "edit hash": (_at(K, lambda x: _flip_after(x, b'"hash":"')), "hash-mismatch", 6, 5),
    "edit signature": (_at(K, lambda x: _flip_after(x, b'"sig":"')), "bad-signature", 6, 5),
    "whitespace added": (_at(K, lambda x: _edit_json(x, b'"actor":', b'"actor": ')), "not-canonical", 6, 5),
    "delete an entry": (lambda ls: ls[:K] + ls[K + 1 :], "sequence-gap", 6, 6),
    "delete the genesis": (lambda ls: ls[1:], "sequence-gap", 1, 1),
    "duplicate an entry": (lambda ls: ls[: K + 1] + [ls[K]] + ls[K + 1 :], "sequence-order", 7, 5),
    "swap two entries": (lambda ls: ls[:K] + [ls[K + 1], ls[K]] + ls[K + 2 :], "sequence-gap", 6, 6),
    "move an entry to the end": (lambda ls: ls[:K] + ls[K + 1 :] + [ls[K]], "sequence-gap", 6, 6),
    "re-hash an edited entry and the rest of the chain": (
        lambda ls: _rebuild_chain(
            _at(K, lambda x: _edit_json(x, b'"examples":50', b'"examples":5'))(ls), K, KEY_EVE
        ),
        "bad-signature",
        6,
        5,
    ),
    "insert a forged entry": (
        lambda ls: ls[: K + 1] + [_forge_after(ls[K])] + ls[K + 1 :],
        "bad-signature",
        7,
        6,
    ),
    "forged signature on the last entry": (
        lambda ls: _rebuild_chain(ls, N - 1, KEY_EVE),
        "bad-signature",
        12,
        11,
    ),
}
KEY_EVE = generate_signing_key()


def test_the_reasons_table_covers_every_case() -> None:
    assert {reason for _, reason, _, _ in CASES.values()} <= set(REASONS)


@pytest.mark.parametrize("case", sorted(CASES))
def test_tampering_is_detected_and_the_first_bad_entry_named(tmp_path: Path, case: str) -> None:
    edit, reason, line, seq = CASES[case]
    path = tmp_path / "audit.jsonl"
    _make_log(path)
    assert _verify_both(path).ok
    _write(path, edit(_lines(path)))
    result = _verify_both(path, pubkeys=[KEY.verify_key])
    assert result.failure is not None, case
    assert (result.failure.reason, result.failure.line, result.failure.seq) == (reason, line, seq), (
        result.failure
    )
    assert result.failure.file == str(path)
    assert f"{path}:{line}: entry seq {seq}: {reason}" in result.summary()
    assert result.entries == line - 1  # everything before the named entry verified


def test_truncation_mid_entry_is_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _make_log(path)
    data = path.read_bytes()
    os.truncate(path, len(data) - 40)
    result = _verify_both(path)
    assert result.failure is not None
    assert (result.failure.reason, result.failure.line, result.failure.seq) == ("truncated", 12, 11)


def test_entries_cut_from_the_end_are_caught_by_a_recorded_head(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _make_log(path)
    head = verify_log(path).head
    assert head == Head(11, hashlib.sha256(_lines(path)[-1]).hexdigest())
    _write(path, _lines(path)[:9])
    # Without an anchor a clean cut at a line boundary leaves a valid, shorter log (documented).
    assert _verify_both(path).ok
    result = _verify_both(path, expected_head=head)
    assert result.failure is not None
    assert (result.failure.reason, result.failure.line, result.failure.seq) == ("missing-entries", 10, 9)
    assert "entries 9..11 were cut" in result.failure.detail


def test_a_rewritten_history_does_not_match_the_recorded_head(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _make_log(path)
    head = verify_log(path).head
    assert head is not None
    path.unlink()
    _make_log(path)  # same key holder, same events, different times: a rewritten log
    result = _verify_both(path, expected_head=head)
    assert result.failure is not None
    assert (result.failure.reason, result.failure.line, result.failure.seq) == ("head-mismatch", 12, 11)


def test_a_log_signed_by_another_key_is_refused_when_keys_are_pinned(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _make_log(path, key=KEY_EVE)
    assert _verify_both(path).ok  # self-consistent...
    assert not verify_log(path).key_pinned
    result = _verify_both(path, pubkeys=[KEY.verify_key])  # ...but not by the site's key
    assert result.failure is not None
    assert (result.failure.reason, result.failure.line, result.failure.seq) == ("unknown-key", 1, 0)


def test_an_entry_signed_by_a_second_key_is_unknown(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _make_log(path)
    lines = _lines(path)
    body = json.loads(lines[-1])
    for field in ("hash", "sig"):
        del body[field]
    body.update(seq=N, prev=hashlib.sha256(lines[-1]).hexdigest(), key=KEY_EVE.key_id)
    _write(path, [*lines, encode_entry(body, KEY_EVE)])
    result = _verify_both(path)
    assert result.failure is not None
    assert (result.failure.reason, result.failure.line, result.failure.seq) == ("unknown-key", 13, 12)


def test_details_outside_the_registry_are_invalid_even_when_signed(tmp_path: Path) -> None:
    """A key holder bypassing the writer's checks still cannot get free text past verification."""
    path = tmp_path / "audit.jsonl"
    _make_log(path)
    lines = _lines(path)
    body = json.loads(lines[-1])
    for field in ("hash", "sig"):
        del body[field]
    body.update(seq=N, prev=hashlib.sha256(lines[-1]).hexdigest(), details={**body["details"], "note": "x"})
    _write(path, [*lines, encode_entry(body, KEY)])
    result = _verify_both(path)
    assert result.failure is not None
    assert (result.failure.reason, result.failure.line, result.failure.seq) == ("invalid-details", 13, 12)


@pytest.mark.parametrize(
    ("damage", "reason", "file", "line", "seq"),
    [
        ("delete first segment", "sequence-gap", "audit.000002.jsonl", 1, 4),
        ("delete middle segment", "sequence-gap", "audit.000003.jsonl", 1, 8),
        ("delete last segment", "sequence-gap", "audit.jsonl", 1, 12),
        ("swap two segments", "sequence-gap", "audit.000001.jsonl", 1, 4),
        ("empty the live file", "missing-entries", "audit.000003.jsonl", 5, 12),
    ],
)
def test_segment_tampering_is_named(
    tmp_path: Path, damage: str, reason: str, file: str, line: int, seq: int
) -> None:
    path = tmp_path / "audit.jsonl"
    _make_log(path, max_entries=4)  # segments hold seq 0-3, 4-7, 8-11; the live file 12-14
    segments = [tmp_path / f"audit.00000{i}.jsonl" for i in (1, 2, 3)]
    head = verify_log(path).head
    assert _verify_both(path).entries == N + 3 and all(s.exists() for s in segments)
    if damage == "delete first segment":
        segments[0].unlink()
    elif damage == "delete middle segment":
        segments[1].unlink()
    elif damage == "delete last segment":
        segments[2].unlink()
    elif damage == "swap two segments":
        a, b = segments[0].read_bytes(), segments[1].read_bytes()
        segments[0].write_bytes(b)
        segments[1].write_bytes(a)
    else:
        path.write_bytes(b"")
    result = _verify_both(path, expected_head=head)
    assert result.failure is not None
    assert (
        result.failure.reason,
        Path(result.failure.file).name,
        result.failure.line,
        result.failure.seq,
    ) == (
        reason,
        file,
        line,
        seq,
    )


def test_missing_log_is_reported(tmp_path: Path) -> None:
    result = verify_log(tmp_path / "nothing.jsonl")
    assert result.failure is not None and result.failure.reason == "missing"
    with pytest.raises(AuditError, match="disappeared"):
        path = tmp_path / "audit.jsonl"
        log = AuditLog.open(path, "site-a", KEY, role="site")
        path.unlink()
        log.append("keys.shred", key_id="0" * 16)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_single_byte_change_is_caught_at_its_line(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    path = tmp_path_factory.mktemp("flip") / "audit.jsonl"
    _make_log(path)
    lines = _lines(path)
    k = data.draw(st.integers(0, len(lines) - 1), label="line index")
    position = data.draw(st.integers(0, len(lines[k]) - 1), label="byte")
    value = data.draw(st.integers(0, 255).filter(lambda v: v != lines[k][position]), label="new byte")
    changed = bytearray(lines[k])
    changed[position] = value
    lines[k] = bytes(changed)
    _write(path, lines)
    result = _verify_both(path)
    assert result.failure is not None
    assert result.failure.line == k + 1
