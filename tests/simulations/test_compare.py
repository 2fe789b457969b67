"""The FLamby-style comparison: partitions, real breast-cancer sites, and `fedscan sim compare`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from client.site import SiteDir
from client.site_init import load_site_key
from client.store import load_split
from common.errors import ConfigError
from simulations.datasets import breast_cancer_sites
from simulations.partition import PartitionSpec, parse_partition, partition_indices


def test_parse_partition() -> None:
    assert parse_partition("dirichlet:0.5") == PartitionSpec("dirichlet", 0.5)
    assert parse_partition("iid").kind == "iid"
    for bad in ("dirichlet:0", "dirichlet:x", "shards:3", "iid:2"):
        with pytest.raises(ConfigError, match="partition"):
            parse_partition(bad)


def test_dirichlet_partition_is_seeded_complete_and_skewed() -> None:
    labels = np.repeat([0, 1], [300, 200])
    parts = partition_indices(labels, 5, parse_partition("dirichlet:0.3"), seed=4)
    again = partition_indices(labels, 5, parse_partition("dirichlet:0.3"), seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(500))  # every example, once
    assert min(len(p) for p in parts) >= 10
    shares = [labels[p].mean() for p in parts]
    assert max(shares) - min(shares) > 0.3  # label skew
    iid = partition_indices(labels, 5, parse_partition("iid"), seed=4)
    assert max(labels[p].mean() for p in iid) - min(labels[p].mean() for p in iid) < 0.2


def test_breast_cancer_sites_are_sealed_fedscan_sites(tmp_path: Path) -> None:
    site_set = breast_cancer_sites(tmp_path, 3, parse_partition("dirichlet:0.5"), seed=1)
    assert (site_set.image_size, site_set.num_features) == (6, 30)
    total = 0
    for root in site_set.site_dirs:
        site = SiteDir(root)
        assert (site.store_dir / "manifest.fseal").exists() and site.site_key_file.exists()
        train = load_split(site.store_dir, load_site_key(site), "train")
        test = load_split(site.store_dir, load_site_key(site), "test")
        assert train.x.shape[1:] == (6, 6) and np.all(train.x.reshape(len(train), -1)[:, 30:] == 0)
        total += len(train) + len(test)
    assert total == 569


@pytest.mark.slow
def test_compare_on_breast_cancer_federated_matches_pooled(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "common.cli", "sim", "compare", "--dataset", "breast-cancer"]
        + ["--sites", "5", "--partition", "dirichlet:0.5", "--seeds", "0", "--rounds", "6", "--json"]
        + ["--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    rows = summary["rows"]
    assert {"pooled", "federated", "local (mean of sites)"} <= set(rows)
    assert len([r for r in rows if r.startswith("local site-")]) == 5
    assert summary["federated_rounds"] == [6]
    pooled, federated = rows["pooled"]["accuracy"]["mean"], rows["federated"]["accuracy"]["mean"]
    assert pooled > 0.9
    assert federated >= 0.97 * pooled, summary["federated_over_pooled"]
    assert federated > rows["local (mean of sites)"]["accuracy"]["mean"]
    run = tmp_path / "runs" / "federated-seed-0"
    assert (run / "metrics.jsonl").exists() and (run / "checkpoints" / "round-0006.fseal").exists()
