"""`fedscan site inspect` shows the site's privacy record: budget, epsilon per run, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from client.epsilon_ledger import EpsilonLedger, LedgerEntry, Release
from client.policy import Refusal, SitePolicy, record_refusal
from client.site import SiteDir
from client.site_init import init_site, load_site_key
from client.store import Record, StoreWriter
from common.cli import build_app


def _site(root: Path, policy: SitePolicy) -> SiteDir:
    site = init_site(root, root.name, policy=policy)
    writer = StoreWriter(site.store_dir, load_site_key(site), image_size=16)
    rng = np.random.default_rng(0)
    for i in range(6):
        writer.add(
            Record(
                pixels=rng.random((16, 16)).astype(np.float32), label=i % 2, patient=f"p{i}", study=f"s{i}"
            )
        )
    writer.commit()
    return site


def _inspect(site: SiteDir, *extra: str) -> str:
    result = CliRunner().invoke(build_app(), ["site", "inspect", "--site-dir", str(site.root), *extra])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_a_new_site_has_spent_nothing_and_inspect_creates_no_privacy_files(tmp_path: Path) -> None:
    site = _site(tmp_path / "hospital", SitePolicy(max_epsilon=3.0))
    privacy = json.loads(_inspect(site, "--json"))["privacy"]
    assert privacy["budget_epsilon"] == 3.0 and privacy["spent_epsilon"] == 0.0
    assert privacy["remaining_epsilon"] == 3.0 and privacy["refusals"] == 0 and privacy["runs"] == {}
    assert not (site.root / "privacy").exists()


def test_spent_epsilon_per_run_and_refusals_by_code_are_shown(tmp_path: Path) -> None:
    site = _site(tmp_path / "hospital", SitePolicy(max_epsilon=100.0))
    key = load_site_key(site)
    ledger = EpsilonLedger(site)
    sample = (Release("sample", 0.25, 1.1, 12),)
    ledger.append(key, [LedgerEntry(0, f"a-{r}", "run-a", r, sample, 1e-5) for r in (1, 2, 3)])
    ledger.append(key, [LedgerEntry(0, "b-1", "run-b", 1, sample, 1e-5)])
    for server_round in (4, 5):
        record_refusal(
            site, Refusal("budget-exhausted", "over budget"), run="run-a", server_round=server_round
        )
    record_refusal(site, Refusal("too-few-sites", "2 < 3"), run="run-c", server_round=1)

    privacy = json.loads(_inspect(site, "--json"))["privacy"]
    expected = ledger.report(key, 1e-5)
    assert privacy["spent_epsilon"] == pytest.approx(expected["total_epsilon"])
    assert (
        0
        < privacy["runs"]["run-b"]["epsilon"]
        < privacy["runs"]["run-a"]["epsilon"]
        < privacy["spent_epsilon"]
    )
    assert privacy["runs"]["run-a"]["rounds"] == 3 and privacy["runs"]["run-b"]["rounds"] == 1
    assert privacy["unit"] == "patient" and privacy["bookings"] == 4
    assert privacy["ledger_head"] == {"seq": 4, "sha256": ledger.head(key)[1]}
    assert privacy["runs"]["run-a"]["assumptions"] == [
        "DP-SGD sampled whole patients with per-patient clipping"
    ]
    assert privacy["remaining_epsilon"] == pytest.approx(100.0 - privacy["spent_epsilon"])
    assert privacy["refusals"] == 3
    assert privacy["refusals_by_code"] == {"budget-exhausted": 2, "too-few-sites": 1}
    assert [r["round"] for r in privacy["recent_refusals"]] == [4, 5, 1]

    shown = _inspect(site)
    assert "privacy budget and refusals" in shown and "budget-exhausted x2" in shown
    assert "patient" in shown and "ledger head" in shown
    assert f"{privacy['spent_epsilon']:.3f}" in shown


def test_a_run_without_noise_shows_an_unbounded_spend(tmp_path: Path) -> None:
    site = _site(tmp_path / "hospital", SitePolicy(max_epsilon=3.0))
    EpsilonLedger(site).append(
        load_site_key(site), [LedgerEntry(0, "p-1", "plain-run", 1, (Release("none"),), 1e-5)]
    )
    privacy = json.loads(_inspect(site, "--json"))["privacy"]  # valid JSON: no Infinity literal
    assert privacy["spent_epsilon"] == "inf" and privacy["remaining_epsilon"] == 0.0
    assert privacy["runs"]["plain-run"]["epsilon"] == "inf"
