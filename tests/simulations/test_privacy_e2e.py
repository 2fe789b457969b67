"""Privacy by default, end to end: the real Flower simulation engine, real sealed stores, real SecAgg+.

* the server never receives a site's plain update under SecAgg+ (every byte of every reply it pulls is
  captured and searched for the update the site computes, recomputed here with the same seed; the same
  search finds it when secure aggregation is off, so the search can fail);
* a site that fails after joining a round does not stop it, with DP on: the epsilons reported per
  round agree with an independent accountant (Opacus) and the sites' sealed ledgers;
* a server without secure aggregation against sites that require it fails with the refusal code.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from flwr.app import Message
from flwr.superlink.grid import InMemoryGrid
from opacus.accountants import RDPAccountant

from client.dp_sgd import TrainingPopulation, round_mechanism
from client.epsilon_ledger import EpsilonLedger
from client.policy import SitePolicy, refusals_file
from client.site import SiteDir
from client.site_init import load_site_key
from client.store import load_split
from client.training import train_locally
from common.config import RunConfig
from common.errors import TrainingError
from common.models import model_from_config
from server.run_records import read_round_records
from simulations.runtime import run_federation

pytestmark = pytest.mark.slow

OPEN = SitePolicy(require_secure_aggregation=False)  # lets the same sites run the plain control


def _config(sites: list[Path], out: Path, **overrides: object) -> RunConfig:
    return RunConfig(
        **{  # type: ignore[arg-type]
            "num_server_rounds": 1,
            "model": "svm",
            "image_size": 16,
            "learning_rate": 0.01,
            "min_fit_sites": len(sites),
            "site_dirs": tuple(str(s) for s in sites),
            "out_dir": str(out),
            **overrides,
        }
    )


def _blobs(message: Message) -> list[bytes]:
    """Every byte string in a reply: arrays (as serialised) and byte values of config records."""
    if message.has_error():
        return [str(message.error.reason).encode()]
    out: list[bytes] = []
    for record in message.content.array_records.values():
        out += [array.data for array in record.values()]
    for record in message.content.config_records.values():
        for value in record.values():
            values = value if isinstance(value, list) else [value]
            out += [v for v in values if isinstance(v, bytes)]
    return out


@pytest.fixture
def server_inbox(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Everything the ServerApp pulls from the sites, captured on Flower's message path."""
    inbox: list[bytes] = []
    original = InMemoryGrid.pull_messages

    def pull_messages(self, message_ids):  # type: ignore[no-untyped-def]
        replies = list(original(self, message_ids))
        for reply in replies:
            inbox.extend(_blobs(reply))
        return replies

    monkeypatch.setattr(InMemoryGrid, "pull_messages", pull_messages)
    return inbox


def _plain_update(site: Path, config: RunConfig) -> bytes:
    """The site's round-1 SVM coefficients, recomputed here exactly as its ClientApp computes them."""
    model = model_from_config(config)
    train = load_split(SiteDir(site).store_dir, load_site_key(SiteDir(site)), "train")
    train_locally(model, train, config, 1)
    return model.get_arrays()[0].tobytes()


def test_the_server_never_receives_a_plain_update_under_secagg(
    blob_site: Callable[..., Path], tmp_path: Path, server_inbox: list[bytes]
) -> None:
    sites = [blob_site(tmp_path, f"site-{i}", seed=i, policy=OPEN) for i in range(3)]
    plain = _config(sites, tmp_path / "plain", secure_aggregation=False)
    updates = [_plain_update(s, plain) for s in sites]
    assert len(set(updates)) == 3 and all(len(u) == 16 * 16 * 8 for u in updates)

    run_federation(plain.to_flower(), num_sites=3)
    assert all(any(u in blob for blob in server_inbox) for u in updates)  # the search does find them

    server_inbox.clear()
    secure = _config(sites, tmp_path / "secure", secure_aggregation=True)
    assert _plain_update(sites[0], secure) == updates[0]  # same seed, same update
    run_federation(secure.to_flower(), num_sites=3)
    assert len(server_inbox) > 10  # public keys, encrypted shares, masked vectors, evaluation counts
    for update in updates:
        assert not any(update in blob for blob in server_inbox)
        assert not any(update[:64] in blob for blob in server_inbox)  # not even its first 8 values
    (record,) = read_round_records(tmp_path / "secure")
    assert record.sites_fit == 3 and record.failures == 0 and record.privacy["secagg"]["num_shares"] == 3


def _opacus_epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    accountant = RDPAccountant()
    accountant.history = history
    return float(accountant.get_epsilon(delta))


def test_a_site_failing_mid_round_does_not_stop_it_and_epsilon_is_reported(
    blob_site: Callable[..., Path], tmp_path: Path
) -> None:
    policy = SitePolicy(min_sites=3)
    sites = [blob_site(tmp_path, f"site-{i}", seed=i, policy=policy) for i in range(5)]
    shutil.rmtree(SiteDir(sites[4]).store_dir)  # joins the round (no data needed), then cannot train
    config = _config(
        sites,
        tmp_path / "run",
        num_server_rounds=2,
        sample_dp=True,
        sample_dp_epsilon=2.0,
        client_dp="distributed",
        client_dp_clip=2.0,
        client_dp_noise=0.8,
    )
    run_federation(config.to_flower(), num_sites=5)  # no exception: the dropout is tolerated

    records = read_round_records(tmp_path / "run")
    assert [r.round for r in records] == [1, 2]
    for record in records:
        assert record.sites_fit == 4 and record.failures == 0
        assert record.privacy["dropouts"] == 1 and record.privacy["evaluate_dropouts"] == 1
        assert record.privacy["secagg"]["threshold"] == 4
        client_reference = _opacus_epsilon([(0.8, 1.0, record.round)], 1e-5)
        assert abs(record.privacy["epsilon_client"] - client_reference) <= 0.01 * client_reference

    # Sample level: each site's epsilon from its own ledger and Opacus, the server reports the largest.
    per_site = []
    for site in sites[:4]:
        entries = EpsilonLedger(SiteDir(site)).entries(load_site_key(SiteDir(site)))
        assert [e.server_round for e in entries] == [1, 2] and {e.state for e in entries} == {"sent"}
        sample = [r for e in entries for r in e.releases if r.kind == "sample"]
        train = load_split(SiteDir(site).store_dir, load_site_key(SiteDir(site)), "train")
        mechanism = round_mechanism(config, TrainingPopulation.of(train))
        assert (sample[0].sampling_rate, sample[0].noise_multiplier) == (
            mechanism.sampling_rate,
            mechanism.noise_multiplier,
        )
        per_site.append(
            _opacus_epsilon(
                [(mechanism.noise_multiplier, mechanism.sampling_rate, 2 * mechanism.steps)], 1e-5
            )
        )
    assert not EpsilonLedger(SiteDir(sites[4])).path.exists()  # the failed site never trained
    reported = records[-1].privacy["epsilon_sample_max"]
    assert abs(reported - max(per_site)) <= 0.01 * max(per_site) and reported <= 2.0


def test_a_server_without_secure_aggregation_fails_with_the_refusal_code(
    blob_site: Callable[..., Path], tmp_path: Path
) -> None:
    sites = [blob_site(tmp_path, f"site-{i}", seed=i, policy=SitePolicy()) for i in range(3)]
    config = _config(sites, tmp_path / "run", secure_aggregation=False)
    with pytest.raises(TrainingError, match="3 x no-secure-aggregation"):
        run_federation(config.to_flower(), num_sites=3)
    for site in sites:
        assert '"code": "no-secure-aggregation"' in refusals_file(SiteDir(site)).read_text()


def test_more_dropouts_than_secagg_tolerates_fail_the_run_loudly(
    blob_site: Callable[..., Path], tmp_path: Path
) -> None:
    sites = [blob_site(tmp_path, f"site-{i}", seed=i, policy=SitePolicy()) for i in range(3)]
    for site in sites[1:]:
        shutil.rmtree(SiteDir(site).store_dir)  # two of three fail after joining: threshold 2 is unreachable
    config = _config(sites, tmp_path / "run", client_dp="central")  # max_weight 1: no size query first
    with pytest.raises(TrainingError, match=r"secure aggregation halted \(1 of 3 sites still active"):
        run_federation(config.to_flower(), num_sites=3)
