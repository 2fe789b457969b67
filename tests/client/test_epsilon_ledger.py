"""The epsilon ledger: sealed, keyed by the site's own counter, per patient, checked against dp-accounting."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from client.epsilon_ledger import (
    REPLIES_KEPT,
    EpsilonLedger,
    LedgerEntry,
    Release,
    patient_level_epsilon,
)
from client.site_init import init_site, load_site_key
from common.crypto import seal_file
from common.errors import IntegrityError
from common.privacy.accounting import SampledGaussian, group_mechanism, sampled_gaussian_rdp

Reference = Callable[[list[tuple[float, float, int]], float], float]
SAMPLE = Release("sample", 0.1, 1.1, 20)


def _booking(run: str, server_round: int, *releases: Release) -> LedgerEntry:
    return LedgerEntry(0, f"{run}-{server_round}", run, server_round, releases, 1e-5)


def test_ledger_is_sealed_and_accumulates_across_runs(tmp_path: Path, reference_epsilon: Reference) -> None:
    site = init_site(tmp_path / "a", "a")
    key = load_site_key(site)
    ledger = EpsilonLedger(site)
    for run in ("run-1", "run-2"):
        ledger.append(key, [_booking(run, r, SAMPLE) for r in (1, 2, 3)])
    raw = ledger.path.read_bytes()
    assert b"sample" not in raw and b"run-1" not in raw  # sealed: nothing readable on disk
    entries = ledger.entries(key)
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5, 6] and all(e.recorded_at for e in entries)
    total = ledger.spent(key, 1e-5)
    reference = reference_epsilon([(0.1, 1.1, 20 * 6)], 1e-5)  # six rounds of 20 steps
    assert abs(total - reference) <= 0.01 * reference
    report = ledger.report(key, 1e-5)
    assert report["unit"] == "patient" and report["head"] == {"seq": 6, "sha256": ledger.head(key)[1]}
    per_run = report["runs"]["run-1"]  # type: ignore[index]
    assert per_run["rounds"] == 3 and per_run["epsilon"] < total
    assert abs(per_run["epsilon"] - reference_epsilon([(0.1, 1.1, 60)], 1e-5)) <= 0.01 * per_run["epsilon"]


def test_the_servers_round_number_merges_nothing(tmp_path: Path, reference_epsilon: Reference) -> None:
    """Ten bookings that all claim server round 1 cost ten rounds (format 1 merged them into one)."""
    site = init_site(tmp_path / "a", "a")
    key = load_site_key(site)
    ledger = EpsilonLedger(site)
    for index in range(10):
        booking = ledger.book(
            key, message_id=f"m{index}", run="r", server_round=1, releases=[SAMPLE], delta=1e-5
        )
        assert booking.entry is not None and booking.entry.seq == index + 1
    assert abs(ledger.spent(key, 1e-5) - reference_epsilon([(0.1, 1.1, 200)], 1e-5)) <= 0.01 * ledger.spent(
        key, 1e-5
    )


def test_a_round_costs_its_tightest_release_and_no_dp_is_infinite() -> None:
    sample = Release("sample", 0.2, 0.7, 50)  # weak: large epsilon
    client = Release("client", 1.0, 5.0, 1, honest_sites=1)  # strong: small epsilon
    both = patient_level_epsilon([_booking("r", 1, sample, client)], 1e-5)
    assert both == pytest.approx(patient_level_epsilon([_booking("r", 1, client)], 1e-5))
    assert both < patient_level_epsilon([_booking("r", 1, sample)], 1e-5)
    assert (
        patient_level_epsilon([_booking("r", 2, Release("none")), _booking("r", 1, client)], 1e-5) == math.inf
    )


def test_record_level_dp_sgd_is_converted_to_patients_by_group_privacy(reference_epsilon: Reference) -> None:
    per_record = Release("sample", 0.05, 6.0, 100, unit="record", group_size=4)
    per_patient = Release("sample", 0.05, 6.0, 100, unit="patient")
    converted = patient_level_epsilon([_booking("r", 1, per_record)], 1e-5)
    # A patient of 4 records: touched with probability 1 - 0.95^4, sensitivity 4 clips (sigma / 4).
    reference = reference_epsilon([(1 - 0.95**4, 6.0 / 4, 100)], 1e-5)
    assert abs(converted - reference) <= 0.01 * reference
    assert converted > 5 * patient_level_epsilon([_booking("r", 1, per_patient)], 1e-5)
    # Without subsampling the group bound is exact: the Gaussian's RDP grows with the square of k.
    exact = group_mechanism(SampledGaussian(1.0, 2.0, 1), 3)
    assert sampled_gaussian_rdp(1.0, exact.noise_multiplier, 8.0) == pytest.approx(8.0 * 9 / (2 * 4.0))


def test_a_redelivered_message_is_answered_from_the_ledger_and_never_booked_twice(tmp_path: Path) -> None:
    site = init_site(tmp_path / "a", "a")
    key = load_site_key(site)
    ledger = EpsilonLedger(site)
    first = ledger.book(key, message_id="msg-1", run="r", server_round=1, releases=[SAMPLE], delta=1e-5)
    assert first.entry is not None
    ledger.settle(key, first.entry, reply=b"the masked update")
    again = ledger.book(key, message_id="msg-1", run="r", server_round=7, releases=[SAMPLE], delta=1e-5)
    assert again.entry is None and again.previous is not None and again.previous.seq == 1
    assert ledger.stored_reply(key, again.previous) == b"the masked update"
    assert len(ledger.entries(key)) == 1
    assert b"masked" not in next(ledger.replies_dir.iterdir()).read_bytes()  # kept sealed

    # A booking whose training failed released nothing: void, free, and the message may train again.
    failed = ledger.book(key, message_id="msg-2", run="r", server_round=2, releases=[SAMPLE], delta=1e-5)
    assert failed.entry is not None
    ledger.settle(key, failed.entry, reply=None)
    assert ledger.spent(key, 1e-5) == pytest.approx(patient_level_epsilon([_booking("r", 1, SAMPLE)], 1e-5))
    retried = ledger.book(key, message_id="msg-2", run="r", server_round=2, releases=[SAMPLE], delta=1e-5)
    assert retried.entry is not None and retried.entry.seq == 3

    # Only the newest replies are kept: an older message coming back finds its booking but no reply.
    for index in range(REPLIES_KEPT + 1):
        booking = ledger.book(
            key, message_id=f"later-{index}", run="r", server_round=3, releases=[SAMPLE], delta=1e-5
        )
        assert booking.entry is not None
        ledger.settle(key, booking.entry, reply=b"x")
    old = ledger.book(key, message_id="msg-1", run="r", server_round=1, releases=[SAMPLE], delta=1e-5)
    assert old.previous is not None and ledger.stored_reply(key, old.previous) is None
    assert len(list(ledger.replies_dir.iterdir())) == REPLIES_KEPT


def test_the_budget_check_and_the_booking_are_one_step(tmp_path: Path) -> None:
    """Eight threads race to book; the ledger never ends over budget and refuses the rest."""
    site = init_site(tmp_path / "a", "a")
    key = load_site_key(site)
    ledger = EpsilonLedger(site)
    one = patient_level_epsilon([_booking("r", 1, SAMPLE)], 1e-5)
    three = patient_level_epsilon([_booking("r", i, SAMPLE) for i in (1, 2, 3)], 1e-5)
    budget = (three + patient_level_epsilon([_booking("r", i, SAMPLE) for i in range(4)], 1e-5)) / 2
    outcomes: list[bool] = []

    def book(index: int) -> None:
        booking = ledger.book(
            key,
            message_id=f"m{index}",
            run="r",
            server_round=1,
            releases=[SAMPLE],
            delta=1e-5,
            max_epsilon=budget,
            budget_delta=1e-5,
        )
        outcomes.append(booking.entry is not None)

    threads = [threading.Thread(target=book, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [False] * 5 + [True] * 3
    spent = ledger.spent(key, 1e-5)
    assert one < spent <= budget and spent == pytest.approx(three)


def test_a_ledger_older_than_the_audit_log_refuses_to_book(tmp_path: Path) -> None:
    site = init_site(tmp_path / "a", "a")
    key = load_site_key(site)
    ledger = EpsilonLedger(site)
    ledger.append(key, [_booking("r", 1, SAMPLE), _booking("r", 2, SAMPLE)])
    before = ledger.head(key)
    with pytest.raises(IntegrityError, match="older copy"):
        ledger.book(key, message_id="m", run="r", server_round=3, releases=[SAMPLE], delta=1e-5, not_before=3)
    assert ledger.head(key) == before  # nothing booked
    booking = ledger.book(
        key, message_id="m", run="r", server_round=3, releases=[SAMPLE], delta=1e-5, not_before=2
    )
    assert booking.entry is not None and booking.head[0] == 3 and booking.head[1] != before[1]


def test_a_format_1_ledger_is_read_conservatively(tmp_path: Path, reference_epsilon: Reference) -> None:
    """Format 1 merged entries by the server's round number; read back, each entry costs its own round
    (the sample and client entries one round wrote together stay one booking)."""
    site = init_site(tmp_path / "a", "a")
    key = load_site_key(site)
    old = [
        {"run": "r", "round": 1, "kind": "sample", "sampling_rate": 0.1, "noise_multiplier": 1.1, "steps": 20,
         "delta": 1e-5, "recorded_at": f"2026-01-01T00:00:0{i}+00:00"}
        for i in range(5)
    ]  # fmt: skip
    body = {"format": 1, "entries": old}
    ledger = EpsilonLedger(site)
    ledger.path.parent.mkdir(mode=0o700, exist_ok=True)
    seal_file(key, json.dumps(body).encode(), ledger.path, object_id="privacy/epsilon-ledger")
    entries = ledger.entries(key)
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5] and {e.releases[0].unit for e in entries} == {"record"}
    assert abs(ledger.spent(key, 1e-5) - reference_epsilon([(0.1, 1.1, 100)], 1e-5)) <= 0.01 * ledger.spent(
        key, 1e-5
    )


def test_a_tampered_ledger_does_not_open(tmp_path: Path) -> None:
    site = init_site(tmp_path / "a", "a")
    key = load_site_key(site)
    ledger = EpsilonLedger(site)
    ledger.append(key, [_booking("r", 1, SAMPLE)])
    data = bytearray(ledger.path.read_bytes())
    data[-5] ^= 1
    ledger.path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        ledger.entries(key)
