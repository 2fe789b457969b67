"""Provisioning: the federation directory, its kits and modes, and adding/revoking sites in place."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from cryptography import x509

from common.crypto.pki import certificate_info, is_issued_by, node_key_fingerprint, node_public_key
from common.errors import ConfigError, InputError
from server.provision import add_site, load_federation, provision, renew_server_certificate, revoke_site


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture()
def fed(tmp_path: Path):  # type: ignore[no-untyped-def]
    return provision(tmp_path / "fed", "lung-ct", ["a", "b", "c"], "hub.example.org:9092")


def test_provision_writes_ca_server_kit_and_one_kit_per_site(fed) -> None:  # type: ignore[no-untyped-def]
    root = fed.root
    ca = (root / "ca" / "ca.pem").read_bytes()
    assert _mode(root / "ca" / "ca.key") == 0o600 and _mode(root / "ca") == 0o700
    assert _mode(fed.server_key) == 0o600 and _mode(fed.server_dir) == 0o700
    server_cert = fed.server_certificate.read_bytes()
    assert is_issued_by(server_cert, ca)
    assert set(certificate_info(server_cert).names) == {"hub.example.org", "127.0.0.1", "::1", "localhost"}
    record = tomllib.loads((fed.server_dir / "kit.toml").read_text())
    assert record["federation"]["superlink"] == "hub.example.org:9092"
    for site in ("a", "b", "c"):
        kit = root / "sites" / site
        assert sorted(p.name for p in kit.iterdir()) == [
            "README.md", "ca.pem", "kit.toml", "node.key", "node.pub", "site.toml.template",
        ]  # fmt: skip
        assert _mode(kit / "node.key") == 0o600 and _mode(kit) == 0o700
        assert (kit / "ca.pem").read_bytes() == ca
        public = (kit / "node.pub").read_bytes()
        assert public == fed.node_public_key(site).read_bytes()  # what the server registers
        assert node_public_key((kit / "node.key").read_bytes()) == b" ".join(public.split()[:2])
        site_kit = tomllib.loads((kit / "kit.toml").read_text())
        assert site_kit["site"]["id"] == site
        fingerprint = node_key_fingerprint(public)
        assert site_kit["site"]["fingerprint"] == fingerprint == record["sites"][site]["fingerprint"]
        assert site_kit["federation"]["ca_sha256"] == certificate_info(ca).sha256
        template = tomllib.loads((kit / "site.toml.template").read_text())
        assert template["site"] == {"id": site}
        assert template["federation"] == {"name": "lung-ct", "superlink": "hub.example.org:9092"}
        assert "fedscan site run" in (kit / "README.md").read_text()
    # Each site's kit holds its own key and nobody else's.
    keys = {(root / "sites" / s / "node.key").read_bytes() for s in ("a", "b", "c")}
    assert len(keys) == 3
    assert not any("node.key" in p.name for p in fed.server_dir.rglob("*"))


def test_add_site_issues_only_the_new_kit(fed) -> None:  # type: ignore[no-untyped-def]
    before = _digests(fed.root)
    fed = add_site(fed.root, "d")
    after = _digests(fed.root)
    changed = {k for k in before if before[k] != after.get(k)}
    assert changed == {"server/kit.toml", "server/README.md"}
    kit_files = ("README.md", "ca.pem", "kit.toml", "node.key", "node.pub", "site.toml.template")
    new_files = {k for k in after if k not in before}
    assert new_files == {"server/nodes/d.pub", *(f"sites/d/{n}" for n in kit_files)}
    assert [s.site_id for s in fed.active_sites()] == ["a", "b", "c", "d"]
    with pytest.raises(ConfigError, match="already in federation"):
        add_site(fed.root, "d")


def test_revoke_moves_the_key_out_and_a_readded_site_gets_a_new_key(fed) -> None:  # type: ignore[no-untyped-def]
    old = fed.site("b").fingerprint
    fed = revoke_site(fed.root, "b")
    assert fed.site("b").status == "revoked"
    assert not fed.node_public_key("b").exists()
    assert node_key_fingerprint((fed.server_dir / "revoked" / "b.1.pub").read_bytes()) == old
    assert not (fed.site_kit("b") / "node.key").exists()
    assert [s.site_id for s in load_federation(fed.root).active_sites()] == ["a", "c"]
    with pytest.raises(ConfigError, match="already revoked"):
        revoke_site(fed.root, "b")
    fed = add_site(fed.root, "b")
    assert fed.site("b").status == "active" and fed.site("b").generation == 2
    assert fed.site("b").fingerprint != old


def test_renewed_server_certificate_is_new_and_still_from_the_same_ca(fed) -> None:  # type: ignore[no-untyped-def]
    old = fed.server_certificate.read_bytes()
    fed = renew_server_certificate(fed.root, extra_names=["hub2.example.org"])
    new = fed.server_certificate.read_bytes()
    assert new != old and is_issued_by(new, fed.ca_certificate.read_bytes())
    assert "hub2.example.org" in certificate_info(new).names
    serials = {x509.load_pem_x509_certificate(pem).serial_number for pem in (old, new)}
    assert len(serials) == 2
    assert _mode(fed.server_key) == 0o600


@pytest.mark.parametrize(
    ("sites", "address", "message"),
    [
        (["a", "a"], "hub:9092", "more than once"),
        (["a", "b/c"], "hub:9092", "Invalid site id"),
        (["a"], "hub", "HOST:PORT"),
        (["a"], "hub:70000", "HOST:PORT"),
        ([], "hub:9092", "at least one site"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(
    tmp_path: Path, sites: list[str], address: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        provision(tmp_path / "fed", "f", sites, address)
    assert not (tmp_path / "fed").exists() or not any((tmp_path / "fed").iterdir())


def test_an_existing_federation_is_never_overwritten(fed) -> None:  # type: ignore[no-untyped-def]
    before = _digests(fed.root)
    with pytest.raises(ConfigError, match="not empty"):
        provision(fed.root, "other", ["x"], "hub:1")
    assert _digests(fed.root) == before
    with pytest.raises(InputError, match="not a federation directory"):
        load_federation(fed.root / "sites")


def test_cli_provisions_and_reports_as_json(tmp_path: Path) -> None:
    out = tmp_path / "fed"
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "common.cli", "server", "provision", "--federation", "demo",
         "--sites", "a,b", "--superlink-address", "10.0.0.5:9092", "--out", str(out), "--json"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert [s["site"] for s in body["sites"]] == ["a", "b"] and body["superlink"] == "10.0.0.5:9092"
    revoke = subprocess.run(
        [sys.executable, "-m", "common.cli", "server", "provision", "revoke-site", "--out", str(out),
         "--site", "a", "--json"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert revoke.returncode == 0, revoke.stderr
    assert [s["status"] for s in json.loads(revoke.stdout)["sites"]] == ["revoked", "active"]
    bad = subprocess.run(
        [sys.executable, "-m", "common.cli", "server", "provision", "--out", str(tmp_path / "x")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "--federation" in bad.stderr
