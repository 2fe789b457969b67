"""`fedscan sim run --sites N`: generate synthetic hospitals, ingest them for real, then federate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from client.site import SiteDir
from client.site_config import SiteConfig
from client.site_init import load_site_key
from client.store import read_manifest
from simulations.datasets import synthetic_ct_sites
from simulations.partition import parse_partition

FEDSCAN = [sys.executable, "-m", "common.cli"]


def test_sites_and_site_dir_are_exclusive(tmp_path: Path) -> None:
    for extra in (["--sites", "2", "--site-dir", str(tmp_path)], []):
        result = subprocess.run(
            [*FEDSCAN, "sim", "run", "--out-dir", str(tmp_path / "run"), *extra],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode != 0 and "--sites N" in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_generated_sites_are_ingested_and_federated(tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = [*FEDSCAN, "sim", "run", "--sites", "2", "--slices", "30", "--partition", "dirichlet:0.5"]
    command += ["--model", "svm", "--rounds", "2", "--learning-rate", "0.01", "--no-secagg"]
    command += ["--out-dir", str(out), "--json"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["final"]["round"] == 2
    assert [r["sites_fit"] for r in summary["rounds"]] == [2, 2]
    assert all(r["failures"] == 0 for r in summary["rounds"])

    site_dirs = [out / "cohort" / "sites" / f"site-{k}" for k in (1, 2)]
    assert summary["config"]["site-dirs"].split(":") == [str(p) for p in site_dirs]
    manifests = []
    for root in site_dirs:  # real sites: keys, a sealed store, an ingest report
        site = SiteDir(root)
        # The generated sites' policy follows the run: --no-secagg is accepted, not refused.
        assert not SiteConfig.load(site.config_file).policy.require_secure_aggregation
        manifest = read_manifest(site.store_dir, load_site_key(site))
        assert manifest.records and any(site.reports_dir.iterdir())
        manifests.append((site.store_dir / "manifest.fseal").stat().st_mtime_ns)
    assert set(summary["rounds"][-1]["per_site"]) == {"site-1", "site-2"}

    # Starting over in the same --out-dir is refused; --resume reuses the very same sites.
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode != 0 and "--resume" in again.stderr
    reused = synthetic_ct_sites(out / "cohort", 2, parse_partition("dirichlet:0.5"), seed=0, reuse=True)
    assert list(reused.site_dirs) == site_dirs
    assert [(p / "store" / "manifest.fseal").stat().st_mtime_ns for p in site_dirs] == manifests
