"""Provisioning from enrolment requests: the federation directory, its kits and manifest, add/revoke in place.

No private key of a site may exist outside its site directory: these tests build every federation from
requests written by real sites (``fedscan site init`` + ``site enrol``) and search the coordinator's files.
"""

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

from client.site import SiteDir
from client.site_enrolment import enrol_site
from client.site_init import init_site
from common.crypto.pki import certificate_info, is_issued_by, node_key_fingerprint
from common.enrolment import read_request
from common.errors import ConfigError, InputError
from common.federation_manifest import read_manifest
from server.provision import add_site, load_federation, provision, renew_server_certificate, revoke_site

KIT_FILES = ["README.md", "ca.pem", "federation.json", "kit.toml", "publisher.pub", "site.toml.template"]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _site_and_request(root: Path, site_id: str) -> tuple[SiteDir, Path]:
    site = init_site(root / "sites" / site_id, site_id)
    request = root / "requests" / f"{site_id}.json"
    request.parent.mkdir(parents=True, exist_ok=True)
    enrol_site(site, request)
    return site, request


@pytest.fixture()
def enrolled(tmp_path: Path) -> dict[str, tuple[SiteDir, Path]]:
    return {s: _site_and_request(tmp_path, s) for s in ("a", "b", "c", "d")}


@pytest.fixture()
def fed(tmp_path: Path, enrolled):  # type: ignore[no-untyped-def]
    requests = [read_request(enrolled[s][1]) for s in ("a", "b", "c")]
    return provision(tmp_path / "fed", "lung-ct", ["a", "b", "c"], "hub.example.org:9092", requests=requests)


def _private_key_material(site: SiteDir) -> list[bytes]:
    """The secret bytes of a site's private keys, to search for anywhere else."""
    node = site.node_key_file.read_bytes()
    body = b"".join(line for line in node.splitlines() if b"PRIVATE KEY" not in line)
    audit = (site.keys_dir / "audit.key").read_text().splitlines()[1].encode()
    return [body[:64], audit]


def test_provision_from_requests_holds_no_private_key_of_any_site(fed, enrolled) -> None:  # type: ignore[no-untyped-def]
    root = fed.root
    ca = (root / "ca" / "ca.pem").read_bytes()
    assert _mode(root / "ca" / "ca.key") == 0o600 and _mode(root / "ca") == 0o700
    assert _mode(fed.server_key) == 0o600 and _mode(fed.server_dir) == 0o700
    assert _mode(fed.publisher_key) == 0o600
    server_cert = fed.server_certificate.read_bytes()
    assert is_issued_by(server_cert, ca)
    assert set(certificate_info(server_cert).names) == {"hub.example.org", "127.0.0.1", "::1", "localhost"}
    record = tomllib.loads((fed.server_dir / "kit.toml").read_text())
    assert record["federation"]["superlink"] == "hub.example.org:9092"
    manifest = read_manifest(fed.manifest_file)
    for site_id in ("a", "b", "c"):
        site, _request = enrolled[site_id]
        kit = root / "sites" / site_id
        assert sorted(p.name for p in kit.iterdir()) == KIT_FILES
        assert (kit / "ca.pem").read_bytes() == ca
        assert (kit / "federation.json").read_bytes() == fed.manifest_file.read_bytes()
        public = site.node_pubkey_file.read_bytes()
        fingerprint = node_key_fingerprint(public)
        assert node_key_fingerprint(fed.node_public_key(site_id).read_bytes()) == fingerprint
        assert record["sites"][site_id]["fingerprint"] == fingerprint
        entry = manifest.site(site_id)
        assert entry is not None and entry.status == "active" and entry.node_fingerprint == fingerprint
        assert manifest.audit_keys()[site_id].to_pem() == (site.root / "audit" / "audit.pub").read_text()
        site_kit = tomllib.loads((kit / "kit.toml").read_text())
        assert site_kit["site"]["id"] == site_id
        assert site_kit["federation"]["ca_sha256"] == certificate_info(ca).sha256
        template = tomllib.loads((kit / "site.toml.template").read_text())
        assert template["site"] == {"id": site_id}
        assert "fedscan site run" in (kit / "README.md").read_text()
    # No site's private key, in any form, anywhere under the coordinator's federation directory.
    secrets = [m for s in ("a", "b", "c", "d") for m in _private_key_material(enrolled[s][0])]
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"OPENSSH PRIVATE KEY" not in data or path == fed.ca_key, path
            assert not any(secret in data for secret in secrets), path
    assert not any(p.name == "node.key" for p in root.rglob("*"))


def test_a_site_listed_without_a_request_is_pending_until_it_enrols(tmp_path: Path, enrolled) -> None:  # type: ignore[no-untyped-def]
    fed = provision(tmp_path / "fed", "f", ["a", "d"], "hub:9092", requests=[read_request(enrolled["a"][1])])
    assert fed.site("d").status == "pending" and not fed.node_public_key("d").exists()
    assert [s.site_id for s in fed.active_sites()] == ["a"]
    assert "not enrolled yet" in (fed.site_kit("d") / "README.md").read_text()
    fed = add_site(fed.root, read_request(enrolled["d"][1]))
    assert fed.site("d").status == "active" and fed.site("d").generation == 1
    assert read_manifest(fed.manifest_file).site("d").status == "active"


def test_add_site_re_signs_the_manifest_and_touches_no_key(fed, enrolled) -> None:  # type: ignore[no-untyped-def]
    before = _digests(fed.root)
    serial = read_manifest(fed.manifest_file).serial
    fed = add_site(fed.root, read_request(enrolled["d"][1]))
    after = _digests(fed.root)
    changed = {k for k in before if before[k] != after.get(k)}
    assert not any(k.endswith((".key", ".pem")) for k in changed)  # no key or certificate re-issued
    assert "server/federation.json" in changed and "sites/a/federation.json" in changed
    new_files = {k for k in after if k not in before}
    assert new_files == {"server/nodes/d.pub", *(f"sites/d/{n}" for n in KIT_FILES)}
    assert read_manifest(fed.manifest_file).serial == serial + 1
    assert [s.site_id for s in fed.active_sites()] == ["a", "b", "c", "d"]
    with pytest.raises(ConfigError, match="already in federation"):
        add_site(fed.root, read_request(enrolled["d"][1]))


def test_revoked_key_can_never_be_enrolled_again(fed, enrolled, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    old = fed.site("b").fingerprint
    fed = revoke_site(fed.root, "b")
    assert fed.site("b").status == "revoked" and not fed.node_public_key("b").exists()
    assert node_key_fingerprint((fed.server_dir / "revoked" / "b.1.pub").read_bytes()) == old
    assert read_manifest(fed.manifest_file).site("b").status == "revoked"
    assert [s.site_id for s in load_federation(fed.root).active_sites()] == ["a", "c"]
    with pytest.raises(ConfigError, match="not active"):
        revoke_site(fed.root, "b")
    with pytest.raises(ConfigError, match="reuses a revoked node key"):
        add_site(fed.root, read_request(enrolled["b"][1]))
    site_b = enrolled["b"][0]
    renewed = tmp_path / "b-new.json"
    enrol_site(site_b, renewed, new_node_key=True)
    fed = add_site(fed.root, read_request(renewed))
    assert fed.site("b").status == "active" and fed.site("b").generation == 2
    assert fed.site("b").fingerprint != old


def test_a_tampered_request_is_refused(enrolled, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    body = json.loads(enrolled["a"][1].read_text())
    other = json.loads(enrolled["b"][1].read_text())
    body["request"]["node_public_key"] = other["request"]["node_public_key"]  # swap in b's node key
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(body))
    with pytest.raises(InputError, match="signature does not verify"):
        read_request(forged)
    body = json.loads(enrolled["a"][1].read_text())
    body["request"]["site_id"] = "b"
    forged.write_text(json.dumps(body))
    with pytest.raises(InputError, match="signature does not verify"):
        read_request(forged)


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


def test_cli_enrols_provisions_and_reports_as_json(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "200"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "common.cli", *args], capture_output=True, text=True, env=env, timeout=120
        )

    for site_id in ("a", "b"):
        made = cli("site", "init", "--site-dir", str(tmp_path / site_id), "--site-id", site_id)
        assert made.returncode == 0, made.stderr
        enrolled = cli("site", "enrol", "--site-dir", str(tmp_path / site_id), "--out",
                       str(tmp_path / f"{site_id}.json"), "--json")  # fmt: skip
        assert enrolled.returncode == 0, enrolled.stderr
        assert json.loads(enrolled.stdout)["site_id"] == site_id
    out = tmp_path / "fed"
    done = cli("server", "provision", "--federation", "demo", "--superlink-address", "10.0.0.5:9092",
               "--out", str(out), "--request", str(tmp_path / "a.json"),
               "--request", str(tmp_path / "b.json"), "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert [s["site"] for s in body["sites"]] == ["a", "b"] and body["superlink"] == "10.0.0.5:9092"
    revoke = cli("server", "provision", "revoke-site", "--out", str(out), "--site", "a", "--json")
    assert revoke.returncode == 0, revoke.stderr
    assert [s["status"] for s in json.loads(revoke.stdout)["sites"]] == ["revoked", "active"]
    bad = cli("server", "provision", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "--federation" in bad.stderr


def _request_with_keys_of(site: SiteDir, site_id: str, out: Path) -> Path:
    """A request for ``site_id`` signed with ``site``'s keys (whoever holds them: the site, or a thief)."""
    from client.site_audit import load_audit_key
    from common.enrolment import make_request

    private, public = site.node_key_file.read_bytes(), site.node_pubkey_file.read_bytes()
    out.write_bytes(
        make_request(site_id, private, public, load_audit_key(site), "2026-01-01T00:00:00Z", "ab" * 32)
    )
    return out


def test_no_node_or_audit_key_is_enrolled_for_two_sites_nor_again_after_its_revocation(
    fed, enrolled, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """A node key stands for one site: enrolled for a second site id it would let one party act as two
    (and the SuperLink cannot register one key twice: the coordinator would not start), and a key
    revoked because it was exposed must not come back under a new site id from whoever took it."""
    site_a, site_b = enrolled["a"][0], enrolled["b"][0]
    with pytest.raises(ConfigError, match="already enrolled"):
        add_site(fed.root, read_request(_request_with_keys_of(site_a, "e", tmp_path / "a-as-e.json")))
    stolen = tmp_path / "b-as-e.json"
    _request_with_keys_of(site_b, "e", stolen)  # b's keys, copied before b's revocation
    fed = revoke_site(fed.root, "b")
    with pytest.raises(ConfigError, match="revoked"):
        add_site(fed.root, read_request(stolen))
    twice = [read_request(enrolled["a"][1]), read_request(tmp_path / "a-as-e.json")]
    with pytest.raises(ConfigError, match="already enrolled"):
        provision(tmp_path / "fed2", "f2", [], "hub:9092", requests=twice)
    # Positive control: a new site with keys of its own is enrolled.
    fed = add_site(fed.root, read_request(enrolled["d"][1]))
    assert fed.site("d").status == "active"
