"""The site's audit log: init, key rotation and shredding, policy edits, de-identification and ingest runs.

Every test drives the real site commands (library calls the CLI makes) on a real site directory, then
reads the log back through the verifier with the site's published public key pinned.
"""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import numpy as np
import pytest

from client.deid.command import deidentify_command, report_path
from client.ingest import ingest_folder
from client.site import SiteDir
from client.site_audit import (
    audit_key_file,
    audit_log_file,
    audit_pubkey_file,
    load_audit_key,
    manifest_sha256,
    policy_sha256,
    site_log,
)
from client.site_config import SiteConfig
from client.site_init import init_site, load_site_key
from client.site_keys import rotate_site_key, shred_site_keys
from client.store import Record, StoreWriter, read_manifest
from common.audit import Entry, read_verified_log
from common.crypto import load_verify_key
from common.errors import AuditError
from simulations.cohort import CohortSpec, SiteCohort, generate_cohort


def _entries(site: SiteDir) -> list[Entry]:
    verified = read_verified_log(audit_log_file(site), pubkeys=[load_verify_key(audit_pubkey_file(site))])
    assert verified.verification.ok and verified.verification.key_pinned, verified.verification.summary()
    return list(verified.entries)


def _events(site: SiteDir) -> list[str]:
    return [e.event for e in _entries(site)]


def _with_records(site: SiteDir, n: int = 12) -> None:
    rng = np.random.default_rng(0)
    writer = StoreWriter(site.store_dir, load_site_key(site), image_size=16)
    for i in range(n):
        writer.add(
            Record(pixels=rng.random((16, 16)).astype(np.float32), label=i % 2, patient=f"p{i}", study="s")
        )
    writer.commit()


def test_init_creates_the_audit_key_and_starts_the_log_with_site_init(tmp_path: Path) -> None:
    site = init_site(tmp_path / "a", "Hospital-A")
    assert stat.S_IMODE(audit_key_file(site).stat().st_mode) == 0o600
    genesis, init = _entries(site)
    assert (genesis.event, genesis.actor, init.event) == ("log.genesis", "hospital-a", "site.init")
    details = init.details
    assert details["site_id"] == "hospital-a"
    assert details["data_key_id"] == load_site_key(site).key_id
    assert details["signing_key_id"] == load_audit_key(site).key_id == init.key_id
    policy = SiteConfig.load(site.config_file).policy
    assert details["policy_sha256"] == policy_sha256(policy)
    assert details["policy"]["min_sites"] == policy.min_sites and "max_epsilon" not in details["policy"]


def test_an_id_that_cannot_name_a_log_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="cannot name an audit log"):
        init_site(tmp_path / "dated", "20240117")
    assert not (tmp_path / "dated").exists()


def test_rotation_and_shredding_are_logged_and_the_log_outlives_the_keys(tmp_path: Path) -> None:
    site = init_site(tmp_path / "a", "a")
    _with_records(site)
    old = load_site_key(site).key_id
    report = rotate_site_key(site)
    new = load_site_key(site).key_id
    objects = report.objects
    assert objects >= 2  # the manifest and a shard at least
    shred_site_keys(site)
    entries = _entries(site)  # still verifies: the audit key is not a data key and is not shredded
    assert [e.event for e in entries] == ["log.genesis", "site.init", "keys.rotate", "keys.shred"]
    assert entries[2].details == {"old_key_id": old, "new_key_id": new, "objects": objects}
    assert entries[3].details == {"key_id": new, "objects": objects}
    assert audit_key_file(site).exists() and not site.site_key_file.exists()


def test_a_policy_edited_by_hand_is_logged_once_before_the_next_event(tmp_path: Path) -> None:
    site = init_site(tmp_path / "a", "a")
    init_hash = _entries(site)[1].details["policy_sha256"]
    text = site.config_file.read_text()
    site.config_file.write_text(
        text.replace("min_sites = 3", "min_sites = 5").replace("max_epsilon = inf", "max_epsilon = 8.0")
    )
    rotate_site_key(site)
    with site_log(site):  # opening the log again finds nothing new to record
        pass
    entries = _entries(site)
    assert [e.event for e in entries] == ["log.genesis", "site.init", "policy.change", "keys.rotate"]
    change = entries[2].details
    assert change["previous_sha256"] == init_hash
    assert change["policy_sha256"] == policy_sha256(SiteConfig.load(site.config_file).policy) != init_hash
    assert change["changed"] == ["max_epsilon", "min_sites"]
    assert change["policy"]["min_sites"] == 5 and change["policy"]["max_epsilon"] == 8.0


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> SiteCohort:
    root = tmp_path_factory.mktemp("export")
    spec = CohortSpec(n_sites=1, slices_per_site=24, image_size=64, seed=5, burned_in_fraction=0.2)
    (generated,) = generate_cohort(root, spec)
    return generated


def test_deid_and_ingest_runs_are_logged_with_counts_and_hashes_and_no_phi(
    tmp_path: Path, cohort: SiteCohort
) -> None:
    site = init_site(tmp_path / "a", "a")
    out = tmp_path / "deid-out"
    options = ["clean-descriptors", "burned-in=reject"]  # so that burned-in rejections are logged
    deidentify_command(cohort.dicom_dir, out, site.root, "basic", options, False, 1, True)
    reports = sorted(site.reports_dir.glob("deid-*.json"))
    assert reports and report_path(site.root, out).parent == site.reports_dir
    report = ingest_folder(site, cohort.dicom_dir, cohort.labels_csv, workers=1)

    entries = _entries(site)
    assert [e.event for e in entries][2:] == ["deid.run", "ingest.run"]
    deid, ingest = entries[2].details, entries[3].details
    assert deid["files_in"] == len(cohort.files) == deid["files_out"] + deid["files_rejected"]
    assert deid["files_rejected"] >= 1 and sum(deid["rejected"].values()) == deid["files_rejected"]
    assert deid["burned_in_flagged"] >= 1 and "burned-in-text" in deid["rejected"]
    assert deid["profile"] == "basic" and "clean-descriptors" in deid["options"]
    assert deid["report_sha256"] == hashlib.sha256(reports[-1].read_bytes()).hexdigest()

    manifest = read_manifest(site.store_dir, load_site_key(site))
    assert ingest["manifest_sha256"] == manifest_sha256(manifest)
    assert ingest["records"] == report.records_added == ingest["total_records"] == manifest.count()
    assert ingest["rejected"] == len(report.rejected) == sum(ingest["rejected_reasons"].values())
    assert sum(ingest["labels"].values()) == report.records_added
    assert ingest["store_key_id"] == load_site_key(site).key_id and ingest["profile"] == "fedscan"

    log_bytes = audit_log_file(site).read_bytes()
    planted = [v for v in cohort.phi_values if len(v) >= 4]
    assert planted
    leaks = [
        v for v in planted if v.encode("utf-8", "ignore") in log_bytes or v.lower().encode() in log_bytes
    ]
    assert leaks == []
