"""``fedscan site run`` refuses a site that is not ready, before any Flower process starts."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from client.site import SiteDir
from client.site_config import SiteConfig
from client.site_enrolment import enrol_site
from client.site_init import init_site, load_site_key
from client.store import Record, StoreWriter
from client.supernode import SiteKit, SiteNode, check_site
from common.crypto.signing import generate_signing_key, load_signing_key
from common.enrolment import read_request
from common.errors import InputError, KeyMaterialError, PolicyError, StoreError
from common.federation_manifest import read_manifest, signed_manifest_bytes
from server.provision import add_site, load_federation, provision, revoke_site


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


def _request(site: SiteDir, path: Path) -> Path:
    enrol_site(site, path)
    return path


@pytest.fixture()
def sites(tmp_path: Path) -> dict[str, SiteDir]:
    return {"a": _site(tmp_path / "sites", "a"), "b": _site(tmp_path / "sites", "b")}


@pytest.fixture()
def kits(tmp_path: Path, sites: dict[str, SiteDir]) -> Path:
    requests = [read_request(_request(sites[s], tmp_path / f"{s}.json")) for s in ("a", "b")]
    fed = provision(tmp_path / "fed", "f", ["a", "b"], "127.0.0.1:9092", requests=requests)
    return fed.root / "sites"


def test_a_ready_site_passes_adopts_its_kits_publisher_and_gets_its_policy(sites, kits: Path) -> None:  # type: ignore[no-untyped-def]
    ready = check_site(sites["a"], SiteKit.load(kits / "a"))
    assert ready.config.site_id == "a" and ready.adopted_publisher
    assert ready.config.policy.require_secure_aggregation  # the safe default travels with the check
    trusted = SiteConfig.load(sites["a"].config_file).policy.publisher_keys()
    assert [k.key_id for k in trusted] == [SiteKit.load(kits / "a").publisher_key_id]
    assert not check_site(sites["a"], SiteKit.load(kits / "a")).adopted_publisher  # adopted once
    assert '"trust.publisher"' in (sites["a"].root / "audit" / "audit.jsonl").read_text()


def test_another_publishers_kit_is_refused_once_one_is_trusted(sites, kits: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    check_site(sites["a"], SiteKit.load(kits / "a"))  # trusts the federation's publisher now
    other = provision(tmp_path / "other", "f", ["a"], "127.0.0.1:9092",
                      requests=[read_request(_request(sites["a"], tmp_path / "again.json"))])  # fmt: skip
    with pytest.raises(InputError, match="not one this site trusts"):
        check_site(sites["a"], SiteKit.load(other.site_kit("a")))
    # A manifest re-signed by a forged publisher key inside the right kit is refused too.
    forged = json.loads((kits / "a" / "federation.json").read_text())
    forged["manifest"]["publisher_key"] = generate_signing_key().verify_key.to_base64()
    (kits / "a" / "federation.json").write_text(json.dumps(forged))
    with pytest.raises(InputError, match="signature does not verify"):
        check_site(sites["a"], SiteKit.load(kits / "a"))


@pytest.mark.parametrize("claim", ["audit_key", "audit_genesis"])
def test_a_manifest_that_names_another_audit_key_or_log_for_the_site_is_refused(  # type: ignore[no-untyped-def]
    sites, kits: Path, claim: str
) -> None:
    """The coordinator signs the manifest, so it could enrol its own key (or another log) as a site's
    audit identity and then sign that site's log itself, and ``audit verify --kit`` would vouch for it.
    The site checks every claim the manifest makes about it, not only its node key."""
    kit = SiteKit.load(kits / "a")
    check_site(sites["a"], kit)  # positive control: the manifest made from a's own request
    fed = load_federation(kits.parent)
    manifest = read_manifest(kit.manifest_file)
    swapped = {
        "audit_key": generate_signing_key().verify_key.to_base64(),  # a key the coordinator holds
        "audit_genesis": "ab" * 32,  # a log the site never wrote
    }[claim]
    sites_ = tuple(
        dataclasses.replace(s, **{claim: swapped}) if s.site_id == "a" else s for s in manifest.sites
    )
    forged = dataclasses.replace(manifest, sites=sites_, serial=manifest.serial + 1)
    kit.manifest_file.write_bytes(signed_manifest_bytes(forged, load_signing_key(fed.publisher_key)))
    with pytest.raises(KeyMaterialError, match="audit"):
        check_site(sites["a"], kit)


def test_node_key_open_to_others_is_refused(sites, kits: Path) -> None:  # type: ignore[no-untyped-def]
    os.chmod(sites["a"].node_key_file, 0o640)
    with pytest.raises(KeyMaterialError, match="chmod 600"):
        check_site(sites["a"], SiteKit.load(kits / "a"))


def test_a_node_key_that_is_not_the_enrolled_one_is_refused(sites, kits: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    enrol_site(sites["a"], tmp_path / "renewed.json", new_node_key=True)  # a new key, not enrolled
    with pytest.raises(KeyMaterialError, match="not the node key federation f enrolled"):
        check_site(sites["a"], SiteKit.load(kits / "a"))


def test_a_pending_or_revoked_site_is_refused_with_what_to_do(sites, kits: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fed = provision(tmp_path / "f2", "f2", ["a", "b"], "127.0.0.1:9092",
                    requests=[read_request(_request(sites["b"], tmp_path / "b2.json"))])  # fmt: skip
    with pytest.raises(PolicyError, match="not enrolled .*fedscan site enrol"):
        check_site(sites["a"], SiteKit.load(fed.site_kit("a")))
    fed = add_site(fed.root, read_request(_request(sites["a"], tmp_path / "a2.json")))
    check_site(sites["a"], SiteKit.load(fed.site_kit("a")))
    revoke_site(fed.root, "a")
    with pytest.raises(PolicyError, match="revoked"):
        check_site(sites["a"], SiteKit.load(fed.site_kit("a")))


def test_another_sites_kit_is_refused(sites, kits: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PolicyError, match="kit .* is for site 'b'"):
        check_site(sites["a"], SiteKit.load(kits / "b"))


def test_a_swapped_or_missing_ca_certificate_is_refused(sites, kits: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    other = provision(tmp_path / "other", "g", ["a"], "127.0.0.1:9092")
    shutil.copy(other.ca_certificate, kits / "a" / "ca.pem")
    with pytest.raises(InputError, match="not the federation's CA"):
        check_site(sites["a"], SiteKit.load(kits / "a"))
    (kits / "a" / "ca.pem").unlink()
    with pytest.raises(InputError, match="missing"):
        check_site(sites["a"], SiteKit.load(kits / "a"))


def test_a_site_without_data_is_refused(tmp_path: Path) -> None:
    site = _site(tmp_path / "empty", "a", records=0)
    fed = provision(tmp_path / "fed", "f", [], "127.0.0.1:9092",
                    requests=[read_request(_request(site, tmp_path / "a.json"))])  # fmt: skip
    with pytest.raises(StoreError, match="fedscan site ingest"):
        check_site(site, SiteKit.load(fed.site_kit("a")))


def test_the_supernode_command_carries_ca_key_trust_port_and_site_dir(sites, kits: Path) -> None:  # type: ignore[no-untyped-def]
    site = sites["a"]
    kit = SiteKit.load(kits / "a")
    check_site(site, kit)
    node = SiteNode(site, kit, isolation="warm", max_wait=0.2)
    argv = node.supernode_argv()
    joined = " ".join(argv)
    assert argv[1:3] == ["-m", "client.supernode_process"]  # the bundle gate's launcher
    assert f"--root-certificates {kits / 'a' / 'ca.pem'}" in joined
    assert f"--auth-supernode-private-key {site.node_key_file}" in joined
    assert "--superlink 127.0.0.1:9092" in joined and "--isolation process" in joined
    assert "--insecure" not in argv
    assert argv[argv.index("--host") + 1] == "127.0.0.1"  # the Runtime API never listens outside
    node_config = Path(argv[argv.index("--node-config") + 1]).read_text()
    assert node_config == f'site-dir = "{site.root.resolve()}"\n'
    trusted = Path(argv[argv.index("--trusted-entities") + 1]).read_text()
    assert kit.publisher_key_id in trusted and "ssh-ed25519" in trusted
    assert os.stat(node.home / "superexec.secret").st_mode & 0o777 == 0o600


def test_cli_exits_with_the_error_code_and_one_line(sites, kits: Path) -> None:  # type: ignore[no-untyped-def]
    site = sites["a"]
    os.chmod(site.node_key_file, 0o644)
    done = subprocess.run(
        [sys.executable, "-m", "common.cli", "site", "run",
         "--site-dir", str(site.root), "--kit", str(kits / "a")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == KeyMaterialError.exit_code
    assert "chmod 600" in done.stderr and "Traceback" not in done.stderr
    assert not (site.root / "flower" / "logs").exists()  # refused before any Flower process started


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


def test_an_older_manifest_than_one_seen_is_refused(sites, kits: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    old = (kits / "a" / "federation.json").read_bytes()
    check_site(sites["a"], SiteKit.load(kits / "a"))
    spare = _site(tmp_path / "more", "c")
    add_site(kits.parent, read_request(_request(spare, tmp_path / "c.json")))  # serial goes up
    check_site(sites["a"], SiteKit.load(kits / "a"))  # the newer manifest is seen
    (kits / "a" / "federation.json").write_bytes(old)  # a downgrade to the earlier, validly signed one
    with pytest.raises(InputError, match="older than serial"):
        check_site(sites["a"], SiteKit.load(kits / "a"))
