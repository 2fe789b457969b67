"""The simulation runtime carries the run config to the ServerApp and every ClientApp, and fails loudly.

Real Flower simulation engine (Ray) in this process, real sealed stores; no mocks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from client.policy import SitePolicy
from client.site_init import init_site, load_site_key
from client.store import Record, StoreWriter
from common.config import RunConfig
from common.errors import TrainingError
from server.run_records import read_round_records
from simulations.runtime import run_federation

pytestmark = pytest.mark.slow


def _make_site(root: Path, name: str, seed: int, size: int = 16, n: int = 60, positives: float = 0.5) -> Path:
    site = init_site(root / name, name, policy=SitePolicy(min_sites=2))  # two-site runs
    rng = np.random.default_rng(seed)
    writer = StoreWriter(
        site.store_dir, load_site_key(site), image_size=size, split_fractions=(0.6, 0.0, 0.4)
    )
    for i in range(n):
        label = int(rng.random() < positives)
        pixels = rng.normal(0.4, 0.05, (size, size)).astype(np.float32)
        if label:
            pixels[6:10, 6:10] += 0.5
        writer.add(Record(pixels=np.clip(pixels, 0, 1), label=label, patient=f"p{i}", study=f"s{i}"))
    writer.commit()
    return site.root


def test_run_config_reaches_server_and_clients(tmp_path: Path) -> None:
    sites = [_make_site(tmp_path, f"site-{i}", seed=i) for i in range(2)]
    config = RunConfig(
        num_server_rounds=2,  # not the default 3: the server must have read it
        model="svm",  # not the default cnn: both sides must agree or shapes mismatch
        image_size=16,
        learning_rate=0.01,
        min_fit_sites=2,
        site_dirs=tuple(str(s) for s in sites),  # clients find their data only through the run config
        out_dir=str(tmp_path / "run"),
    )
    run_federation(config.to_flower(), num_sites=2)
    rounds = read_round_records(tmp_path / "run")
    assert [r.round for r in rounds] == [1, 2]
    assert all(r.sites_fit == 2 and r.failures == 0 for r in rounds)
    with np.load(tmp_path / "run" / "final_model.npz") as model:
        assert model["arr_0"].shape == (1, 16 * 16)  # the SVM's coef_, at image-size 16
    assert rounds[-1].accuracy is not None and rounds[-1].accuracy > 0.6


def test_a_failing_site_makes_the_run_fail(tmp_path: Path) -> None:
    good = _make_site(tmp_path, "good", seed=1)
    # Never ingested: its ClientApp cannot load data (its policy accepts this two-site run).
    empty = init_site(tmp_path / "empty", "empty", policy=SitePolicy(min_sites=2)).root
    config = RunConfig(
        num_server_rounds=1,
        model="svm",
        image_size=16,
        min_fit_sites=2,
        site_dirs=(str(good), str(empty)),
        out_dir=str(tmp_path / "run"),
    )
    with pytest.raises(TrainingError, match="failures"):
        run_federation(config.to_flower(), num_sites=2)


def test_cnn_under_secagg_fedprox_with_a_site_missing_a_class(tmp_path: Path) -> None:
    """SecAgg+ and FedProx together, class weighting, a site with no positive case, central evaluation."""
    sites = [
        _make_site(tmp_path, "balanced", seed=3),
        _make_site(tmp_path, "mostly-positive", seed=4, positives=0.8),
        _make_site(tmp_path, "no-positives", seed=5, positives=0.0),
    ]
    public = tmp_path / "public-test.npz"
    rng = np.random.default_rng(9)
    y = rng.integers(0, 2, 40)
    x = np.clip(rng.normal(0.4, 0.05, (40, 16, 16)), 0, 1).astype(np.float32)
    x[y == 1, 6:10, 6:10] += 0.5
    np.savez(public, x=x, y=y)
    config = RunConfig(
        num_server_rounds=2,
        model="cnn",
        image_size=16,
        cnn_widths="8,16",
        optimizer="adam",
        learning_rate=0.01,
        local_steps=6,
        class_weighting=True,
        strategy="fedprox",
        proximal_mu=0.01,
        secure_aggregation=True,
        min_fit_sites=3,
        site_dirs=tuple(str(s) for s in sites),
        out_dir=str(tmp_path / "run"),
        central_test_set=str(public),
    )
    run_federation(config.to_flower(), num_sites=3)
    rounds = read_round_records(tmp_path / "run")
    assert [r.round for r in rounds] == [1, 2]
    assert all(r.failures == 0 and r.sites_fit == 3 and r.sites_evaluated == 3 for r in rounds)
    final = rounds[-1]
    assert set(final.per_site) == {"balanced", "mostly-positive", "no-positives"}
    assert final.per_class["1"]["support"] > 0 and final.sensitivity is not None
    assert final.central is not None and final.central["num_examples"] == 40
    assert (tmp_path / "run" / "checkpoints" / "round-0002.fseal").exists()
