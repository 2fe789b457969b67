"""Audit log throughput: durable appends and offline verification, next to their references.

Prints, in one run, pinned to one CPU core:

1. Durable appends through :meth:`common.audit.AuditLog.append` (lock, tail check, sign, one
   ``write(2)``, ``fsync``) next to the bare reference: ``write`` + ``fsync`` of lines of the same size
   on the same disk. The disk's fsync latency bounds both.
2. Verification of a log of N entries (default 50,000): the default chain-anchored mode (every line,
   hash, link, detail and the signatures the anchor needs) and ``every_signature`` (one Ed25519
   verification per entry), next to the bare cost of ``Ed25519PublicKey.verify`` alone. Target:
   >= 10,000 entries/s verified, signatures included, on one core.

The verification log is generated in memory with the writer's own encoder (no fsync per line: that is
the append benchmark's business), then written once. Each timing is the best of a few rounds (the
machines are shared and noisy). Files go to a temporary directory removed at the end.

Run: ``flock /tmp/fedscan-heavy.lock .venv/bin/python benchmarks/bench_audit.py [--quick] [--entries N]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common.audit import AuditLog, verify_log
from common.audit.entry import GENESIS_PREV, encode_entry, signed_message
from common.audit.log import LOG_FORMAT, utc_timestamp
from common.crypto import SigningKey, generate_signing_key

H = "ab" * 32
TARGET = 10_000


def _best(rounds: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def _details(r: int) -> dict[str, object]:
    return {
        "run_id": "run-1",
        "round": r,
        "model_sha256": H,
        "examples": 120,
        "epsilon": 0.01 * r,
        "secagg": True,
    }


def bench_append(directory: Path, key: SigningKey, count: int, rounds: int) -> None:
    path = directory / "append.jsonl"
    log = AuditLog.open(path, "site-a", key, role="site", max_entries=10**9, max_bytes=2**40)
    log.append("round.taken", **_details(0))  # warm up
    line = path.read_bytes().split(b"\n")[-2] + b"\n"
    fd = os.open(directory / "bare.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def appends() -> None:
        for r in range(1, count + 1):
            log.append("round.taken", **_details(r))

    def bare_writes() -> None:
        for _ in range(count):
            os.write(fd, line)
            os.fsync(fd)

    ours, bare = float("inf"), float("inf")
    try:
        for _ in range(rounds):  # interleaved: the disk's fsync latency drifts from second to second
            ours = min(ours, _best(1, appends))
            bare = min(bare, _best(1, bare_writes))
    finally:
        os.close(fd)
        log.close()
    print(f"durable append ({count} entries per round, {len(line)} B each, fsync per entry)")
    print(f"  AuditLog.append       {count / ours:10,.0f} entries/s  ({1e6 * ours / count:7.0f} us/entry)")
    print(f"  bare write + fsync    {count / bare:10,.0f} lines/s    ({1e6 * bare / count:7.0f} us/line)")
    print(f"  ratio append / bare   {bare / ours:10.2f}")


def _generate(path: Path, key: SigningKey, count: int) -> None:
    """A valid log of ``count`` entries, built with the writer's encoder, written once."""
    now = utc_timestamp()
    genesis = {"role": "site", "public_key": key.verify_key.to_base64(), "format": LOG_FORMAT}
    lines, prev = [], GENESIS_PREV
    for seq in range(count):
        event, details = ("log.genesis", genesis) if seq == 0 else ("round.taken", _details(seq))
        body = {
            "actor": "site-a",
            "details": details,
            "event": event,
            "key": key.key_id,
            "prev": prev,
            "seq": seq,
            "time": now,
            "v": 1,
        }
        line = encode_entry(body, key)
        lines.append(line)
        prev = hashlib.sha256(line).hexdigest()
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def bench_verify(directory: Path, key: SigningKey, count: int, rounds: int) -> None:
    path = directory / "verify.jsonl"
    _generate(path, key, count)
    pinned = [key.verify_key]
    anchored = _best(rounds, lambda: verify_log(path, pubkeys=pinned))
    result = verify_log(path, pubkeys=pinned)
    assert result.ok and result.entries == count, result.failure
    exhaustive = _best(max(1, rounds - 1), lambda: verify_log(path, pubkeys=pinned, every_signature=True))
    message, signature = signed_message(H), key.sign(signed_message(H))
    sample = min(count, 5_000)
    bare = _best(rounds, lambda: [key.verify_key.verify(message, signature) for _ in range(sample)]) / sample
    size = path.stat().st_size
    print(f"\nverify ({count:,} entries, {size / 2**20:.1f} MiB, one core)")
    print(
        f"  chain-anchored (default) {count / anchored:10,.0f} entries/s  "
        f"({result.signatures_checked} signature(s) + every line, hash, link, detail)"
    )
    print(f"  every signature          {count / exhaustive:10,.0f} entries/s  ({count:,} signatures)")
    print(
        f"  bare Ed25519 verify      {1 / bare:10,.0f} signatures/s (the ceiling for one-per-entry checking)"
    )
    print(f"  every-signature / bare   {(count / exhaustive) * bare:10.2f}")
    verdict = "meets" if count / anchored >= TARGET else "MISSES"
    print(f"  target >= {TARGET:,} entries/s: default mode {verdict} it ({count / anchored / TARGET:.1f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Fewer entries and rounds (a smoke run).")
    parser.add_argument("--entries", type=int, default=None, help="Entries in the verification log.")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    appends = 200 if args.quick else 1_000
    entries = args.entries or (10_000 if args.quick else 50_000)
    rounds = 2 if args.quick else 3
    key = generate_signing_key()
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        bench_append(Path(tmp), key, appends, rounds)
        bench_verify(Path(tmp), key, entries, rounds)


if __name__ == "__main__":
    main()
