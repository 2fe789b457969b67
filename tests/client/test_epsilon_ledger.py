"""The epsilon ledger: sealed at the site, accumulating across runs, composed as an accountant would."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from opacus.accountants import RDPAccountant

from client.epsilon_ledger import EpsilonLedger, LedgerEntry, record_level_epsilon
from client.site_init import init_site, load_site_key
from common.errors import IntegrityError


def _opacus(history: list[tuple[float, float, int]], delta: float) -> float:
    accountant = RDPAccountant()
    accountant.history = history
    return float(accountant.get_epsilon(delta))


def test_ledger_is_sealed_and_accumulates_across_runs(tmp_path: Path) -> None:
    site = init_site(tmp_path / "a", "a")
    key = load_site_key(site)
    ledger = EpsilonLedger(site)
    for run in ("run-1", "run-2"):
        for server_round in (1, 2, 3):
            ledger.append(key, [LedgerEntry(run, server_round, "sample", 0.1, 1.1, 20, 1e-5)])
    raw = ledger.path.read_bytes()
    assert b"sample" not in raw and b"run-1" not in raw  # sealed: nothing readable on disk
    entries = ledger.entries(key)
    assert len(entries) == 6 and all(e.recorded_at for e in entries)
    total = ledger.spent(key, 1e-5)
    reference = _opacus([(1.1, 0.1, 20 * 6)], 1e-5)  # six rounds of 20 steps, one accountant
    assert abs(total - reference) <= 0.01 * reference
    report = ledger.report(key, 1e-5)
    per_run = report["runs"]["run-1"]  # type: ignore[index]
    assert per_run["rounds"] == 3 and per_run["epsilon"] < total
    assert abs(per_run["epsilon"] - _opacus([(1.1, 0.1, 60)], 1e-5)) <= 0.01 * per_run["epsilon"]


def test_a_round_counts_its_tighter_mechanism_and_no_dp_is_infinite() -> None:
    sample = LedgerEntry("r", 1, "sample", 0.2, 0.7, 50, 1e-5)  # weak: large epsilon
    client = LedgerEntry("r", 1, "client", 1.0, 5.0, 1, 1e-5)  # strong: small epsilon
    both = record_level_epsilon([sample, client], 1e-5)
    assert both == pytest.approx(record_level_epsilon([client], 1e-5))
    assert both < record_level_epsilon([sample], 1e-5)
    assert record_level_epsilon([LedgerEntry("r", 2, "none", 1.0, 0.0, 1, 1e-5), client], 1e-5) == math.inf


def test_a_tampered_ledger_does_not_open(tmp_path: Path) -> None:
    site = init_site(tmp_path / "a", "a")
    key = load_site_key(site)
    ledger = EpsilonLedger(site)
    ledger.append(key, [LedgerEntry("r", 1, "sample", 0.1, 1.0, 10, 1e-5)])
    data = bytearray(ledger.path.read_bytes())
    data[-5] ^= 1
    ledger.path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        ledger.entries(key)
