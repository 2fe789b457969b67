"""A dishonest coordinator's numbers against the sites' ledgers, end to end: the real ServerApp and
ClientApps on Flower's simulation engine, real sealed stores, real SecAgg+.

* fraction-fit under-counting: ``fraction-fit = 0.05`` with ``min-fit-sites`` = all 3 sites trains
  every site every round. The server refuses it (with the figures); a coordinator that skips that
  check still cannot make a site book ``q = 0.05``: the sites book ``q = 1`` and refuse when the next
  round would overspend, each ledger within 1% of Google's dp-accounting at ``q = 1`` for the rounds
  that actually ran.
* the server's SecAgg+ threshold: the sites' distributed noise is what *their* policy assumes
  (``min_honest_sites``), measured in the aggregate the server receives; the server's threshold
  changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import server.privacy
from client.epsilon_ledger import EpsilonLedger
from client.policy import SitePolicy
from client.privacy_summary import privacy_summary
from client.site import SiteDir
from client.site_init import load_site_key
from common.config import RunConfig
from common.errors import ConfigError, FedscanError
from server.run_records import MODEL_FILE, read_round_records
from simulations.runtime import run_federation

pytestmark = pytest.mark.slow

Reference = Callable[[list[tuple[float, float, int]], float], float]


def _config(sites: list[Path], out: Path, **overrides: object) -> RunConfig:
    return RunConfig(
        **{  # type: ignore[arg-type]
            "model": "svm",
            "image_size": 16,
            "learning_rate": 0.01,
            "min_fit_sites": len(sites),
            "site_dirs": tuple(str(s) for s in sites),
            "out_dir": str(out),
            "client_dp": "distributed",
            "checkpoints": False,
            **overrides,
        }
    )


def test_fraction_fit_cannot_make_a_site_under_count(
    blob_site: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    reference_epsilon: Reference,
) -> None:
    policy = SitePolicy(min_sites=3, max_epsilon=8.0)
    sites = [blob_site(tmp_path, f"site-{i}", seed=i, policy=policy, records=30) for i in range(3)]
    config = _config(sites, tmp_path / "run", fraction_fit=0.05, client_dp_noise=1.0, num_server_rounds=4)

    with pytest.raises(ConfigError, match=r"fraction-fit 0.05 has no effect .* 3 of 3 sites per round"):
        run_federation(config.to_flower(), num_sites=3)

    # A coordinator that skips the check: every site trains every round, and books q = 1.
    monkeypatch.setattr(server.privacy, "check_fraction_fit", lambda *args: None)
    with pytest.raises(FedscanError, match="3 x budget-exhausted"):
        run_federation(config.to_flower(), num_sites=3)
    records = read_round_records(tmp_path / "run")
    assert [(r.round, r.sites_fit) for r in records] == [(1, 3), (2, 3)]  # round 3 was refused
    spent = reference_epsilon([(1.0, 1.0, 2)], 1e-5)  # two rounds, q = 1, noise 1.0
    assert spent <= policy.max_epsilon < reference_epsilon([(1.0, 1.0, 3)], 1e-5)
    for site in sites:
        ledger = EpsilonLedger(SiteDir(site)).spent(load_site_key(SiteDir(site)), 1e-5)
        assert abs(ledger - spent) <= 0.01 * spent, (ledger, spent)
    # The server reports q = 1 too; the amplified figure is separate and labelled.
    privacy = records[-1].privacy
    assert abs(privacy["epsilon_client"] - spent) <= 0.01 * spent and privacy["epsilon"] >= spent * 0.99
    assert "epsilon_client_amplified" not in privacy  # 3 of 3 sites sampled: nothing to amplify


@pytest.mark.parametrize("honest", [1, 3])
def test_the_noise_share_is_the_sites_own_not_the_servers_threshold(
    blob_site: Callable[..., Path], tmp_path: Path, honest: int
) -> None:
    """Clip 1e-3 and noise multiplier 1000: each site's update is noise of std 1 / sqrt(honest). The
    server averages 3 sites: std sqrt(3 / honest) / 3 per coordinate, whatever SecAgg+'s threshold (2)."""
    policy = SitePolicy(min_sites=3, min_honest_sites=honest)
    sites = [blob_site(tmp_path, f"site-{i}", seed=i, policy=policy, records=30) for i in range(3)]
    config = _config(
        sites, tmp_path / "run", client_dp_clip=1e-3, client_dp_noise=1000.0, num_server_rounds=1
    )
    run_federation(config.to_flower(), num_sites=3)
    (record,) = read_round_records(tmp_path / "run")
    assert record.privacy["secagg"]["threshold"] == 2
    with np.load(tmp_path / "run" / MODEL_FILE) as final:
        noisy = np.concatenate([final["arr_0"].ravel(), final["arr_1"].ravel()])  # coefficients, intercept
    expected = math.sqrt(3 / honest) / 3
    threshold_based = math.sqrt(3 / 2) / 3  # what a share of 1 / sqrt(threshold) would give
    assert abs(float(np.std(noisy)) - expected) <= 0.15 * expected
    assert abs(float(np.std(noisy)) - threshold_based) > 0.15 * threshold_based
    site = SiteDir(sites[0])
    (entry,) = EpsilonLedger(site).entries(load_site_key(site))
    (release,) = entry.releases
    assert (release.kind, release.sampling_rate, release.noise_multiplier, release.honest_sites) == (
        "client",
        1.0,
        1000.0,
        honest,
    )
    summary = privacy_summary(site, load_site_key(site), policy)
    (run,) = summary["runs"].values()
    assert any(f"at least {honest} honest site(s)" in a for a in run["assumptions"])
