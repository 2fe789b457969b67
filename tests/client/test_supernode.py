"""``fedscan site run`` refuses a site that is not ready, before any Flower process starts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from client.site import SiteDir
from client.site_init import init_site, load_site_key
from client.store import Record, StoreWriter
from client.supernode import SiteKit, SiteNode, check_site
from common.crypto.pki import new_node_key
from common.errors import InputError, KeyMaterialError, PolicyError, StoreError
from server.provision import provision


def _site(root: Path, site_id: str, records: int = 6) -> SiteDir:
    site = init_site(root / site_id, site_id)
    if records:
        key = load_site_key(site)
        writer = StoreWriter(site.store_dir, key, image_size=16, split_fractions=(0.5, 0.0, 0.5))
        rng = np.random.default_rng(0)
        for i in range(records):
            pixels = rng.random((16, 16), dtype=np.float32)
            writer.add(Record(pixels=pixels, label=i % 2, patient=f"p{i}", study=f"s{i}"))
        writer.commit()
    return site


@pytest.fixture()
def kits(tmp_path: Path) -> Path:
    fed = provision(tmp_path / "fed", "f", ["a", "b"], "127.0.0.1:9092")
    return fed.root / "sites"


def test_a_ready_site_passes_and_gets_its_policy(tmp_path: Path, kits: Path) -> None:
    config = check_site(_site(tmp_path, "a"), SiteKit.load(kits / "a"))
    assert config.site_id == "a"
    assert config.policy.require_secure_aggregation  # the safe default travels with the check


def test_node_key_open_to_others_is_refused(tmp_path: Path, kits: Path) -> None:
    os.chmod(kits / "a" / "node.key", 0o640)
    with pytest.raises(KeyMaterialError, match="chmod 600"):
        check_site(_site(tmp_path, "a"), SiteKit.load(kits / "a"))


def test_a_node_key_that_is_not_the_registered_one_is_refused(tmp_path: Path, kits: Path) -> None:
    (kits / "a" / "node.key").unlink()
    (kits / "a" / "node.key").write_bytes(new_node_key().private_openssh)
    os.chmod(kits / "a" / "node.key", 0o600)
    with pytest.raises(KeyMaterialError, match="not the key registered"):
        check_site(_site(tmp_path, "a"), SiteKit.load(kits / "a"))


def test_another_sites_kit_is_refused(tmp_path: Path, kits: Path) -> None:
    with pytest.raises(PolicyError, match="kit .* is for site 'b'"):
        check_site(_site(tmp_path, "a"), SiteKit.load(kits / "b"))


def test_a_swapped_or_missing_ca_certificate_is_refused(tmp_path: Path, kits: Path) -> None:
    other = provision(tmp_path / "other", "g", ["a"], "127.0.0.1:9092")
    site = _site(tmp_path, "a")
    shutil.copy(other.ca_certificate, kits / "a" / "ca.pem")
    with pytest.raises(InputError, match="not the federation's CA"):
        check_site(site, SiteKit.load(kits / "a"))
    (kits / "a" / "ca.pem").unlink()
    with pytest.raises(InputError, match="missing"):
        check_site(site, SiteKit.load(kits / "a"))


def test_a_site_without_data_is_refused(tmp_path: Path, kits: Path) -> None:
    with pytest.raises(StoreError, match="fedscan site ingest"):
        check_site(_site(tmp_path, "a", records=0), SiteKit.load(kits / "a"))


def test_the_supernode_command_carries_ca_key_port_and_site_dir(tmp_path: Path, kits: Path) -> None:
    site = _site(tmp_path, "a")
    node = SiteNode(site, SiteKit.load(kits / "a"), isolation="warm", max_wait=0.2)
    argv = node.supernode_argv()
    joined = " ".join(argv)
    assert f"--root-certificates {kits / 'a' / 'ca.pem'}" in joined
    assert f"--auth-supernode-private-key {kits / 'a' / 'node.key'}" in joined
    assert "--superlink 127.0.0.1:9092" in joined and "--isolation process" in joined
    assert "--insecure" not in argv
    assert argv[argv.index("--host") + 1] == "127.0.0.1"  # the Runtime API never listens outside
    node_config = Path(argv[argv.index("--node-config") + 1]).read_text()
    assert node_config == f'site-dir = "{site.root.resolve()}"\n'
    assert os.stat(node.home / "superexec.secret").st_mode & 0o777 == 0o600


def test_cli_exits_with_the_error_code_and_one_line(tmp_path: Path, kits: Path) -> None:
    site = _site(tmp_path, "a")
    os.chmod(kits / "a" / "node.key", 0o644)
    done = subprocess.run(
        [sys.executable, "-m", "common.cli", "site", "run",
         "--site-dir", str(site.root), "--kit", str(kits / "a")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == KeyMaterialError.exit_code
    assert "chmod 600" in done.stderr and "Traceback" not in done.stderr
    assert not (site.root / "flower").exists()  # refused before any Flower process started


_WARM_UP_THEN_FORK = """
import os
from client.supernode import warm_up
from common.app_identity import app_hash

warm_up()
before = app_hash.cache_info()
pid = os.fork()
if pid == 0:  # a task forked from the warm interpreter finds the hash already computed
    app_hash()
    os._exit(0 if app_hash.cache_info().misses == before.misses else 3)
_, status = os.waitpid(pid, 0)
print(before.currsize, os.waitstatus_to_exitcode(status), app_hash() == app_hash.__wrapped__())
"""


def test_warm_up_computes_the_app_hash_that_forked_tasks_reuse(fresh_python: Callable[[str], str]) -> None:
    cached, child_exit, same_as_fresh = fresh_python(_WARM_UP_THEN_FORK).split()
    assert (cached, child_exit, same_as_fresh) == ("1", "0", "True")
