"""Writing audit logs: format, durability rules, concurrent writers, rotation, crash recovery, refusals."""

from __future__ import annotations

import base64
import hashlib
import json
import multiprocessing
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from common.audit import AuditLog, canonical_json, read_verified_log, verify_log
from common.audit.entry import GENESIS_PREV, encode_entry
from common.crypto import SigningKey, generate_key, generate_signing_key, seal_file
from common.errors import AuditError

H = "ab" * 32


def _open(path: Path, key: SigningKey, **kw: object) -> AuditLog:
    return AuditLog.open(path, "site-a", key, role="site", **kw)  # type: ignore[arg-type]


def _rounds(log: AuditLog, n: int, start: int = 1) -> None:
    for r in range(start, start + n):
        log.append("round.taken", run_id="run-1", round=r, model_sha256=H, examples=10, epsilon=0.1 * r)


def test_genesis_and_line_format_match_the_documented_rules(tmp_path: Path) -> None:
    key = generate_signing_key()
    clock = iter([datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)] * 3)
    with _open(tmp_path / "audit.jsonl", key, clock=lambda: next(clock)) as log:
        entry = log.append("site.init", site_id="site-a", signing_key_id=key.key_id)
    lines = (tmp_path / "audit.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 3
    genesis = json.loads(lines[0])
    assert genesis["seq"] == 0 and genesis["prev"] == GENESIS_PREV and genesis["event"] == "log.genesis"
    assert genesis["details"] == {
        "format": "fedscan-audit-v1",
        "public_key": key.verify_key.to_base64(),
        "role": "site",
    }
    assert genesis["time"] == "2025-01-02T03:04:05.678901Z"
    # The documented hand procedure: body = line up to ',"hash":' plus '}'; hash = SHA-256(body);
    # sig = Ed25519(b"fedscan-audit-entry-v1:" + hash); prev = SHA-256(previous line).
    for raw in lines[:2]:
        body = raw[: raw.rindex(b',"hash":')] + b"}"
        fields = json.loads(raw)
        assert body == canonical_json({k: v for k, v in fields.items() if k not in ("hash", "sig")})
        assert hashlib.sha256(body).hexdigest() == fields["hash"]
        assert key.verify_key.verify(
            b"fedscan-audit-entry-v1:" + fields["hash"].encode(), base64.b64decode(fields["sig"])
        )
    assert json.loads(lines[1])["prev"] == hashlib.sha256(lines[0]).hexdigest()
    assert entry.seq == 1 and entry.line == lines[1]
    assert stat.S_IMODE((tmp_path / "audit.jsonl").stat().st_mode) == 0o600


def test_reopening_continues_the_chain_and_head_matches(tmp_path: Path) -> None:
    key = generate_signing_key()
    path = tmp_path / "audit.jsonl"
    with _open(path, key) as log:
        _rounds(log, 3)
    with _open(path, key) as log:
        _rounds(log, 2, start=4)
        head = log.head()
    result = verify_log(path, pubkeys=[key.verify_key])
    assert result.ok and result.entries == 6 and result.head == head and result.key_pinned


def test_signing_rules_refuse_foreign_logs_and_library_events(tmp_path: Path) -> None:
    key = generate_signing_key()
    path = tmp_path / "audit.jsonl"
    _open(path, key).close()
    with pytest.raises(AuditError, match="belongs to actor site-a"):
        AuditLog.open(path, "site-b", key, role="site").append("keys.shred", key_id="0" * 16)
    with pytest.raises(AuditError, match="one signing key"):
        _open(path, generate_signing_key()).append("keys.shred", key_id="0" * 16)
    with _open(path, key) as log:
        with pytest.raises(AuditError, match="written by the log itself"):
            log.append("log.genesis", role="site", public_key=key.verify_key.to_base64(), format="x")
        with pytest.raises(AuditError, match="written by the server"):
            log.append("round.aggregated", run_id="r", round=1, model_sha256=H, participants=[])
    with pytest.raises(AuditError, match="pseudonymous token"):
        AuditLog.open(tmp_path / "b.jsonl", "Site A", key, role="site")
    with pytest.raises(AuditError, match="role"):
        AuditLog.open(tmp_path / "b.jsonl", "site-a", key, role="hospital")
    log = _open(path, key)
    log.close()
    with pytest.raises(AuditError, match="closed"):
        _rounds(log, 1)


def test_writer_refuses_to_chain_on_an_entry_it_cannot_verify(tmp_path: Path) -> None:
    key = generate_signing_key()
    path = tmp_path / "audit.jsonl"
    with _open(path, key) as log:
        _rounds(log, 2)
        last = log.head()
    # Someone without the key appends an entry claiming the same key id, with a made-up signature.
    body = {
        "actor": "site-a",
        "details": {"key_id": "0" * 16},
        "event": "keys.shred",
        "key": key.key_id,
        "prev": last.sha256,
        "seq": last.seq + 1,
        "time": "2025-01-01T00:00:00.000000Z",
        "v": 1,
    }
    forged = encode_entry(body, generate_signing_key())
    with open(path, "ab") as handle:
        handle.write(forged + b"\n")
    with pytest.raises(AuditError, match="does not verify under this log's key"):
        _open(path, key)  # opening reads the tail, so the forgery stops the log before any append
    result = verify_log(path)
    assert result.failure is not None and result.failure.reason == "bad-signature"
    assert (result.failure.seq, result.failure.line) == (3, 4)


def test_torn_last_line_is_cut_and_recorded(tmp_path: Path) -> None:
    key = generate_signing_key()
    path = tmp_path / "audit.jsonl"
    with _open(path, key) as log:
        _rounds(log, 2)
    torn = b'{"actor":"site-a","details":{"ro'
    with open(path, "ab") as handle:
        handle.write(torn)
    assert verify_log(path).failure.reason == "truncated"  # type: ignore[union-attr]
    with _open(path, key) as log:
        _rounds(log, 1, start=3)
    verified = read_verified_log(path)
    assert verified.verification.ok
    recovered = [e for e in verified.entries if e.event == "log.recovered"]
    assert [dict(e.details) for e in recovered] == [
        {"dropped_bytes": len(torn), "dropped_sha256": hashlib.sha256(torn).hexdigest()}
    ]
    assert verified.entries[-1].event == "round.taken"


@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "sealed"])
def test_rotation_keeps_one_chain_across_segments(tmp_path: Path, sealed: bool) -> None:
    key, seal_key = generate_signing_key(), generate_key() if sealed else None
    path = tmp_path / "audit.jsonl"
    with _open(path, key, seal_key=seal_key, max_entries=10) as log:
        _rounds(log, 30)
    names = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock"))
    suffix = ".sealed" if sealed else ""
    assert names == [f"audit.00000{i}.jsonl{suffix}" for i in (1, 2, 3)] + ["audit.jsonl"]
    result = verify_log(path, seal_key=seal_key, every_signature=True)
    assert result.ok and result.entries == 31 + 3 and len(result.files) == 4
    if sealed:
        assert b"round.taken" not in (tmp_path / "audit.000001.jsonl.sealed").read_bytes()
        missing = verify_log(path)
        assert missing.failure is not None and missing.failure.reason == "unreadable"
        assert "--seal-key" in missing.failure.detail
        wrong = verify_log(path, seal_key=generate_key())
        assert wrong.failure is not None and wrong.failure.reason == "unreadable"


def test_rotation_by_size(tmp_path: Path) -> None:
    key = generate_signing_key()
    path = tmp_path / "audit.jsonl"
    with _open(path, key, max_bytes=4096) as log:
        _rounds(log, 40)
    assert len(list(tmp_path.glob("audit.0*.jsonl"))) >= 3
    assert all(p.stat().st_size < 4096 + 600 for p in tmp_path.glob("audit.0*.jsonl"))
    assert verify_log(path).ok


def test_interrupted_rotations_are_completed_by_the_next_append(tmp_path: Path) -> None:
    key, seal_key = generate_signing_key(), generate_key()
    path = tmp_path / "audit.jsonl"
    with _open(path, key, seal_key=seal_key, max_entries=1000) as log:
        _rounds(log, 3)
    # Crash 1: the segment was sealed but the live file not yet removed.
    seal_file(
        seal_key, path.read_bytes(), tmp_path / "audit.000001.jsonl.sealed", object_id="audit/site-a/000001"
    )
    with _open(path, key, seal_key=seal_key) as log:
        _rounds(log, 2, start=4)
    assert verify_log(path, seal_key=seal_key).ok
    # Crash 2: the live file was moved to a segment, the new live file not yet started.
    os.rename(path, tmp_path / "audit.000002.jsonl")
    with _open(path, key, seal_key=seal_key) as log:
        _rounds(log, 1, start=6)
    verified = read_verified_log(path, seal_key=seal_key)
    assert verified.verification.ok, verified.verification.failure
    assert [e.details["round"] for e in verified.entries if e.event == "round.taken"] == [1, 2, 3, 4, 5, 6]
    assert [dict(e.details) for e in verified.entries if e.event == "log.rotated"] == [
        {"segment": 1, "sealed": True},
        {"segment": 2, "sealed": False},
    ]


def _worker(path: str, seed: bytes, worker: int, count: int) -> None:
    with AuditLog.open(Path(path), "site-a", SigningKey.from_seed(seed), role="site", max_entries=40) as log:
        for i in range(count):
            log.append("round.taken", run_id=f"w{worker}", round=i, model_sha256=H)


def _inherited_worker(log: AuditLog, worker: int, count: int) -> None:
    for i in range(count):
        log.append("round.taken", run_id=f"w{worker}", round=i, model_sha256=H)


def test_concurrent_writers_produce_one_gap_free_chain(tmp_path: Path) -> None:
    key = generate_signing_key()
    path = tmp_path / "audit.jsonl"
    inherited = _open(path, key, max_entries=40)  # opened before forking: children must not share its lock
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_worker, args=(str(path), key.seed, w, 40)) for w in range(2)]
    workers += [context.Process(target=_inherited_worker, args=(inherited, w, 40)) for w in (2, 3)]
    for p in workers:
        p.start()
    _inherited_worker(inherited, 4, 40)  # and the parent writes at the same time
    for p in workers:
        p.join(60)
        assert p.exitcode == 0
    inherited.close()
    verified = read_verified_log(path, pubkeys=[key.verify_key], every_signature=True)
    assert verified.verification.ok, verified.verification.failure
    assert [e.seq for e in verified.entries] == list(range(len(verified.entries)))
    taken = [(e.details["run_id"], e.details["round"]) for e in verified.entries if e.event == "round.taken"]
    assert sorted(taken) == sorted((f"w{w}", i) for w in range(5) for i in range(40))
    for w in range(5):  # each writer's own entries stay in the order it wrote them
        assert [r for run, r in taken if run == f"w{w}"] == list(range(40))
