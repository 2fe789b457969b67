"""Audit logs bound to their actors: the federation manifest names each actor's key and each site's log.

Real sites (``site init`` + ``site enrol``), a federation provisioned from their requests, and the
``fedscan audit`` CLI: a log signed with another actor's key fails, a site log deleted and re-created
fails (and the site refuses to re-create it itself), a log cut short is not appended to, and a site log
that no longer holds the head the server anchored is reported by reconciliation.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from client.site import SiteDir
from client.site_audit import anchor_file, audit_log_file, load_audit_key, site_log
from client.site_enrolment import enrol_site
from client.site_init import init_site
from common.audit import AuditLog, read_verified_log, reconcile
from common.cli import main
from common.crypto import generate_signing_key, load_signing_key
from common.enrolment import make_request, read_request
from common.errors import AuditError, ConfigError, InputError
from common.federation_manifest import ManifestSite, read_manifest, signed_manifest_bytes
from server.provision import Federation, add_site, provision


def fedscan(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


@pytest.fixture()
def federation(tmp_path: Path) -> tuple[Federation, dict[str, SiteDir]]:
    sites = {s: init_site(tmp_path / "sites" / s, s) for s in ("site-a", "site-b")}
    requests = []
    for site_id, site in sites.items():
        enrol_site(site, tmp_path / f"{site_id}.json")
        requests.append(read_request(tmp_path / f"{site_id}.json"))
    fed = provision(tmp_path / "fed", "aud", [], "hub:9092", requests=requests)
    return fed, sites


def _verify(capsys, fed: Federation, *logs: Path) -> tuple[int, list[dict]]:  # type: ignore[no-untyped-def,type-arg]
    code, out, _ = fedscan(capsys, "audit", "verify", *map(str, logs), "--kit", str(fed.server_dir), "--json")
    return code, json.loads(out)["logs"]


def test_each_log_is_checked_against_its_own_actors_key_from_the_manifest(
    federation, capsys, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    fed, sites = federation
    logs = [audit_log_file(s) for s in sites.values()]
    code, results = _verify(capsys, fed, *logs)
    assert code == 0 and all(r["ok"] and r["key_pinned"] for r in results)
    # site-b's log under site-a's name, signed with site-b's (enrolled, pinned) key: not site-a's key.
    forged = tmp_path / "forged" / "audit.jsonl"
    with AuditLog.open(forged, "site-a", load_audit_key(sites["site-b"]), role="site") as log:
        log.append("round.taken", run_id="run-1", round=1, model_sha256="01" * 32)
    code, results = _verify(capsys, fed, forged)
    assert code == 9 and results[0]["failure"]["reason"] == "wrong-actor-key"
    # Signed with the server's audit key, claiming to be site-a: the same.
    with AuditLog.open(tmp_path / "f2.jsonl", "site-a", load_signing_key(fed.audit_key), role="site") as log:
        log.append("round.taken", run_id="run-1", round=1, model_sha256="01" * 32)
    assert _verify(capsys, fed, tmp_path / "f2.jsonl")[1][0]["failure"]["reason"] == "wrong-actor-key"
    # An actor the federation never enrolled.
    with AuditLog.open(tmp_path / "f3.jsonl", "site-z", generate_signing_key(), role="site") as log:
        log.append("round.taken", run_id="run-1", round=1, model_sha256="01" * 32)
    assert _verify(capsys, fed, tmp_path / "f3.jsonl")[1][0]["failure"]["reason"] == "unknown-actor"


def test_a_deleted_site_log_is_not_recreated_and_a_recreated_one_fails(federation, capsys) -> None:  # type: ignore[no-untyped-def]
    fed, sites = federation
    site = sites["site-a"]
    live = audit_log_file(site)
    live.unlink()
    with pytest.raises(AuditError, match="missing, but its anchor records"), site_log(site):
        pass
    assert not live.exists()  # the site did not start a new log over the lost one
    # Someone re-creates it anyway, with the site's own audit key (an insider at the site):
    anchor_file(site).unlink()
    with site_log(site) as log:
        log.append("ingest.run", records=1, rejected=0, manifest_sha256="22" * 32)
    code, results = _verify(capsys, fed, live)
    assert code == 9 and results[0]["failure"]["reason"] == "restarted-log"
    # Positive control: the other site's untouched log still passes.
    assert _verify(capsys, fed, audit_log_file(sites["site-b"]))[0] == 0


def test_a_site_log_cut_short_is_not_appended_to(federation) -> None:  # type: ignore[no-untyped-def]
    _fed, sites = federation
    site = sites["site-b"]
    with site_log(site) as log:
        log.append("ingest.run", records=3, rejected=0, manifest_sha256="33" * 32)
    live = audit_log_file(site)
    lines = live.read_bytes().splitlines(keepends=True)
    live.write_bytes(b"".join(lines[:-1]))  # the last entry cut away: still a valid, shorter chain
    with pytest.raises(AuditError, match="entries were cut"), site_log(site):
        pass
    assert len(live.read_bytes().splitlines()) == len(lines) - 1  # nothing appended on top


def test_reconcile_reports_a_site_log_that_lost_the_head_the_server_anchored(
    federation, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    fed, sites = federation
    site = sites["site-a"]
    with site_log(site) as log:
        taken = log.append("round.taken", run_id="run-1", round=1, model_sha256="01" * 32)
    server = tmp_path / "server.jsonl"
    with AuditLog.open(server, "server", load_signing_key(fed.audit_key), role="server") as log:
        log.append("run.start", run_id="run-1", config_sha256="cc" * 32)
        log.append(
            "round.aggregated", run_id="run-1", round=1, model_sha256="01" * 32, participants=["site-a"],
            site_log_heads={"site-a": taken.line_hash()}, site_log_seqs={"site-a": taken.seq},
        )  # fmt: skip
    keys = {"pubkeys": (), "actor_keys": None}
    result = reconcile([read_verified_log(audit_log_file(site), **keys)], read_verified_log(server, **keys))
    assert result.ok, result.findings  # positive control: the head is where the server anchored it
    # The site's log re-created from scratch (same key), with a round.taken re-written into it.
    audit_log_file(site).unlink()
    anchor_file(site).unlink()
    with site_log(site) as log:
        log.append("round.taken", run_id="run-1", round=1, model_sha256="01" * 32)
    result = reconcile([read_verified_log(audit_log_file(site), **keys)], read_verified_log(server, **keys))
    assert [f.kind for f in result.findings] == ["anchored-head-missing"]


def test_an_enrolment_request_must_pin_the_sites_log(federation, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A request without ``audit_log_genesis`` (signed by the site itself, so its proofs verify) would
    enrol the site with no log pinned: its log could then be deleted and re-created and still verify
    against the manifest. Requests are refused without it."""
    _fed, sites = federation
    site = sites["site-a"]
    private = site.node_key_file.read_bytes()
    public = site.node_pubkey_file.read_bytes()
    unpinned = tmp_path / "unpinned.json"
    unpinned.write_bytes(
        make_request("site-a", private, public, load_audit_key(site), "2026-01-01T00:00:00Z", "")
    )
    with pytest.raises(InputError, match="audit_log_genesis"):
        read_request(unpinned)
    # Positive control: the same site's request made by `site enrol` pins its log and reads back.
    assert len(read_request(enrol_site(site, tmp_path / "pinned.json").request).audit_log_genesis) == 64


@pytest.mark.parametrize("rogue_id", ["Server", "SITE-A"])
def test_no_site_can_enrol_under_the_servers_or_another_sites_audit_actor(
    federation, capsys, tmp_path: Path, rogue_id: str
) -> None:  # type: ignore[no-untyped-def]
    """A log's actor is the site id in lower case: a site enrolled as ``Server`` (or ``SITE-A`` next to
    ``site-a``) would own the server's (or site-a's) audit actor, and its key would replace the real
    actor's in the manifest, so that its own logs verify in their name and theirs fail."""
    fed, sites = federation
    rogue = init_site(tmp_path / "rogue" / rogue_id, rogue_id)
    request = read_request(enrol_site(rogue, tmp_path / "rogue.json").request)
    with pytest.raises(ConfigError, match="audit actor"):
        add_site(fed.root, request)
    requests = [read_request(enrol_site(s, tmp_path / f"{i}.json").request) for i, s in sites.items()]
    with pytest.raises(ConfigError, match="audit actor"):
        provision(tmp_path / "fed2", "aud2", [], "hub:9092", requests=[*requests, request])
    # A manifest that lists such a site anyway (the coordinator signs what it likes) is refused when read,
    # so an auditor's --kit never pins the rogue key for the server or site-a.
    manifest = read_manifest(fed.manifest_file)
    entry = ManifestSite(rogue_id, "active", audit_key=request.audit_key.to_base64(), audit_genesis="ab" * 32)
    forged = dataclasses.replace(manifest, sites=(*manifest.sites, entry), serial=manifest.serial + 1)
    fed.manifest_file.write_bytes(signed_manifest_bytes(forged, load_signing_key(fed.publisher_key)))
    actor = rogue_id.lower()
    claimed = tmp_path / "claimed.jsonl"
    role = "server" if actor == "server" else "site"
    with AuditLog.open(claimed, actor, load_audit_key(rogue), role=role):
        pass  # the genesis alone claims the actor
    code, out, err = fedscan(capsys, "audit", "verify", str(claimed), "--kit", str(fed.server_dir))
    assert code != 0 and "audit actor" in out + err


def test_reconcile_takes_only_the_servers_own_log_as_the_servers(federation, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """With per-actor keys (no kit, so no genesis pin), site-a can sign a log of role ``server`` under
    its own actor, listing the rounds it likes: it verifies (site-a's key, site-a's actor) but is not
    the server's log, and reconciliation must not take it as one."""
    fed, sites = federation
    site = sites["site-a"]
    with site_log(site) as log:
        log.append("round.taken", run_id="run-1", round=1, model_sha256="01" * 32)

    def server_log(path: Path, actor: str, key) -> Path:  # type: ignore[no-untyped-def]
        with AuditLog.open(path, actor, key, role="server") as log:
            log.append("run.start", run_id="run-1", config_sha256="cc" * 32)
            log.append(
                "round.aggregated", run_id="run-1", round=1, model_sha256="01" * 32, participants=["site-a"]
            )
        return path

    a_pub, server_pub = tmp_path / "a.pub", tmp_path / "server.pub"
    a_pub.write_text(load_audit_key(site).verify_key.to_openssh())
    server_pub.write_text(load_signing_key(fed.audit_key).verify_key.to_openssh())
    keys = ["--pubkey", f"site-a={a_pub}", "--pubkey", f"server={server_pub}"]
    genuine = server_log(tmp_path / "server.jsonl", "server", load_signing_key(fed.audit_key))
    assert fedscan(capsys, "audit", "reconcile", str(audit_log_file(site)), str(genuine), *keys)[0] == 0
    forged = server_log(tmp_path / "forged.jsonl", "site-a", load_audit_key(site))
    code, out, err = fedscan(capsys, "audit", "reconcile", str(audit_log_file(site)), str(forged), *keys)
    assert code != 0 and "not the server's" in out + err
