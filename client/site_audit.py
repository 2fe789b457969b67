"""The site's audit log: what the site did with its keys, its data and its policy, signed by the site.

Every site keeps one append-only, hash-chained log (:mod:`common.audit`), ``audit/audit.jsonl``, signed
with its own Ed25519 key ``keys/audit.key`` (0600; created by ``fedscan site init``; its public half is
``audit/audit.pub`` for auditors). The actor is the site id in lower case
(:func:`common.audit.federation.site_actor`). The events written here:

``site.init``
    the site was created: its id, data key id, signing key id and policy;
``keys.rotate`` / ``keys.shred``
    the data key was rotated (objects re-wrapped) or destroyed (crypto-shredding). The audit key is
    neither: the log outlives the data it describes, as evidence that it was erased;
``deid.run`` / ``ingest.run``
    a de-identification or ingest run: profile, options, counts per reason, manifest and report hashes;
``policy.change``
    site.toml's policy differs from the last one the log recorded (noticed whenever the log is opened,
    so an edit by hand is recorded before the next thing the site does under it);
``site.enrolled``, ``trust.publisher``, ``bundle.accepted`` / ``bundle.refused``
    the site's enrolment request, the publisher key it trusts, and its verdict on each app bundle
    (:mod:`client.site_enrolment`, :mod:`client.supernode_process`).

The site keeps an *anchor* of its own log beside it (``audit/anchor.json``: the log's genesis and last
head, signed with the audit key) and refuses to write to a log that no longer matches it: a deleted log
is not silently re-created with a new genesis, and a log cut short is not appended to. The federation
keeps the other anchors: the manifest pins each site's log genesis (from its enrolment request) and the
server's log records each participant's log head every round (``fedscan audit reconcile``).

Round decisions (``round.taken``, ``round.refused``) are written by the ClientApp's audit mod
(:mod:`client.audit_mod`). Details are counts, hashes, key ids and fedscan's own category names,
never a value read from a DICOM file: the event registry refuses anything else.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from client.site import SiteDir
from client.site_config import SiteConfig
from common.audit import AuditLog, canonical_json, sha256_hex
from common.audit.entry import EntryFormatError, decode_line
from common.audit.events import to_token
from common.audit.federation import site_actor
from common.crypto import (
    SigningKey,
    generate_signing_key,
    load_signing_key,
    write_signing_key,
    write_verify_key,
)
from common.errors import AuditError, KeyMaterialError
from common.fsio import write_atomic

if TYPE_CHECKING:
    from client.deid.report import DeidReport
    from client.ingest_report import IngestReport
    from client.policy import SitePolicy
    from client.site_keys import RotationReport
    from client.store import Manifest

__all__ = [
    "anchor_file",
    "audit_key_file",
    "audit_log_file",
    "audit_pubkey_file",
    "create_audit_key",
    "last_ledger_seq",
    "load_audit_key",
    "manifest_sha256",
    "policy_config",
    "policy_sha256",
    "record_deid_run",
    "record_ingest_run",
    "record_key_rotation",
    "record_key_shred",
    "record_site_init",
    "shred_evidence",
    "site_log",
]

_POLICY_SEEN: dict[str, tuple[int, str]] = {}  # log path -> (site.toml mtime, policy hash last logged)
_POLICY_LOCK = threading.Lock()


def audit_key_file(site: SiteDir) -> Path:
    """The site's audit signing key (Ed25519, 0600)."""
    return site.keys_dir / "audit.key"


def audit_log_file(site: SiteDir) -> Path:
    """The live file of the site's audit log."""
    return site.root / "audit" / "audit.jsonl"


def audit_pubkey_file(site: SiteDir) -> Path:
    """The public half of the audit key (PEM), to hand to auditors and the coordinator."""
    return site.root / "audit" / "audit.pub"


def create_audit_key(site: SiteDir) -> SigningKey:
    """Create the site's audit key (refuses to replace one: it would orphan the log it signed)."""
    key = generate_signing_key()
    site.keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_signing_key(audit_key_file(site), key)
    audit_pubkey_file(site).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_verify_key(audit_pubkey_file(site), key)
    return key


def load_audit_key(site: SiteDir) -> SigningKey:
    """The site's audit key; created on first use for a site made before audit logs existed."""
    path = audit_key_file(site)
    if not path.exists() and not audit_log_file(site).exists():
        with contextlib.suppress(KeyMaterialError):  # another process created it first
            return create_audit_key(site)
    return load_signing_key(path)


def policy_sha256(policy: SitePolicy) -> str:
    """SHA-256 of the policy's canonical TOML (``SitePolicy.to_toml``): names one exact policy."""
    return hashlib.sha256(policy.to_toml().encode("utf-8")).hexdigest()


def policy_config(policy: SitePolicy) -> dict[str, Any]:
    """The policy as the log's flat ``config`` map (an infinite budget is left out; hashes counted)."""
    config: dict[str, Any] = {
        "require_secure_aggregation": policy.require_secure_aggregation,
        "min_sites": policy.min_sites,
        "allowed_models": ".".join(policy.allowed_models),
        "max_delta": policy.max_delta,
        "approved_app_hashes": len(policy.approved_app_hashes),
        "min_honest_sites": policy.min_honest_sites,
    }
    if math.isfinite(policy.max_epsilon):
        config["max_epsilon"] = policy.max_epsilon
    return config


def manifest_sha256(manifest: Manifest) -> str:
    """SHA-256 of the store manifest's canonical JSON: a commitment to exactly the records the store holds.

    The manifest holds keyed pseudonyms and labels, so the hash reveals nothing about patients, yet
    anyone holding the site key can recompute it from ``store/manifest.fseal``.
    """
    return hashlib.sha256(manifest.to_json()).hexdigest()


def _last_logged_policy(path: Path) -> dict[str, Any] | None:
    """Details of the live file's latest entry recording a policy (``site.init`` or ``policy.change``)."""
    try:
        lines = path.read_bytes().split(b"\n")
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        if b'"policy_sha256"' not in line:
            continue
        with contextlib.suppress(EntryFormatError):
            entry, _ = decode_line(line)
            if entry.event in ("site.init", "policy.change"):
                return dict(entry.details)
    return None


def last_ledger_seq(site: SiteDir, chunk: int = 1 << 16) -> int:
    """The newest epsilon-ledger counter the live audit log recorded (``round.taken``'s ``ledger_seq``),
    read from the end of the file; 0 if none. The ledger mod refuses to book on a ledger behind it."""
    path = audit_log_file(site)
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return 0
    with handle:
        end = handle.seek(0, 2)
        tail = b""
        while end > 0:
            start = max(0, end - chunk)
            handle.seek(start)
            tail = handle.read(end - start) + tail
            end = start
            lines = tail.split(b"\n")
            complete = lines if start == 0 else lines[1:]  # the first piece may be cut
            for line in reversed(complete):
                if b'"ledger_seq"' not in line:
                    continue
                with contextlib.suppress(EntryFormatError):
                    entry, _ = decode_line(line)
                    if "ledger_seq" in entry.details:
                        return int(entry.details["ledger_seq"])
            tail = lines[0] if start > 0 else b""
    return 0


def _note_policy(site: SiteDir, log: AuditLog) -> None:
    """Append ``policy.change`` if site.toml's policy is not the one the log last recorded."""
    try:
        mtime = site.config_file.stat().st_mtime_ns
    except FileNotFoundError:
        return
    key = str(log.path)
    with _POLICY_LOCK:
        seen = _POLICY_SEEN.get(key)
        if seen is not None and seen[0] == mtime:
            return
        policy = SiteConfig.load(site.config_file).policy
        digest = policy_sha256(policy)
        if seen is None or seen[1] != digest:
            last = _last_logged_policy(log.path)
            if last is None or last.get("policy_sha256") != digest:
                config = policy_config(policy)
                previous = last.get("policy", {}) if last is not None else {}
                changed = sorted(k for k in set(config) | set(previous) if config.get(k) != previous.get(k))
                details: dict[str, Any] = {"policy_sha256": digest, "policy": config, "changed": changed}
                if last is not None:
                    details["previous_sha256"] = last["policy_sha256"]
                log.append("policy.change", **details)
        _POLICY_SEEN[key] = (mtime, digest)


@contextlib.contextmanager
def site_log(site: SiteDir) -> Iterator[AuditLog]:
    """The site's audit log, open for appending (a policy edited since the last entry is logged first).

    Raises
    ------
    AuditError
        The log does not match its anchor: it was deleted, cut short or re-created.
    """
    actor = site_actor(SiteConfig.load(site.config_file).site_id)
    key = load_audit_key(site)
    anchor = _checked_anchor(site, key)
    with AuditLog.open(audit_log_file(site), actor, key, role="site") as log:
        if anchor is not None and log.head().seq < int(anchor["seq"]):
            raise AuditError(
                f"The site's audit log {log.path} ends at seq {log.head().seq}, before its anchored seq "
                f"{anchor['seq']}: entries were cut. Restore the log from backup."
            )
        _note_policy(site, log)
        yield log
        _write_anchor(site, key, log, anchor)


def anchor_file(site: SiteDir) -> Path:
    """The site's anchor of its own log: genesis and last head, signed with the audit key."""
    return site.root / "audit" / "anchor.json"


_ANCHOR_LABEL = b"fedscan site log anchor v1\x00"


def _anchor_message(anchor: Mapping[str, Any]) -> bytes:
    body = {k: anchor[k] for k in ("genesis", "seq", "sha256")}
    return _ANCHOR_LABEL + canonical_json(body)


def _first_line(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.readline().rstrip(b"\n")


def _checked_anchor(site: SiteDir, key: SigningKey) -> dict[str, Any] | None:
    """The verified anchor, after checking the live log against it (None before the first anchor)."""
    import base64
    import json

    path = anchor_file(site)
    try:
        anchor = json.loads(path.read_text())
        signature = base64.b64decode(anchor["signature"])
        seq = int(anchor["seq"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as error:
        raise AuditError(f"{path} is malformed ({error}); the site's log cannot be checked.") from None
    if not key.verify_key.verify(_anchor_message(anchor), signature):
        raise AuditError(f"{path} is not signed by this site's audit key: it was altered.")
    live = audit_log_file(site)
    if not live.exists() or live.stat().st_size == 0:
        raise AuditError(
            f"The site's audit log {live} is missing, but its anchor records {seq + 1} entries: restore "
            "the log from backup; fedscan does not start a new log over a lost one."
        )
    try:
        first, _ = decode_line(_first_line(live))
    except EntryFormatError:
        raise AuditError(
            f"The first line of {live} is not an audit entry: restore the log from backup."
        ) from None
    if first.seq == 0 and anchor.get("genesis") and first.line_hash() != anchor["genesis"]:
        raise AuditError(
            f"The site's audit log {live} starts from another genesis than the one anchored: it was "
            "re-created. Restore the original log from backup."
        )
    return dict(anchor)


def _write_anchor(site: SiteDir, key: SigningKey, log: AuditLog, previous: Mapping[str, Any] | None) -> None:
    import base64
    import json

    head = log.head()
    genesis = str(previous.get("genesis", "")) if previous is not None else ""
    if not genesis:
        first, _ = decode_line(_first_line(log.path))
        genesis = first.line_hash() if first.seq == 0 else ""
    anchor: dict[str, Any] = {"genesis": genesis, "seq": head.seq, "sha256": head.sha256}
    anchor["signature"] = base64.b64encode(key.sign(_anchor_message(anchor))).decode("ascii")
    write_atomic(anchor_file(site), json.dumps(anchor, sort_keys=True).encode(), mode=0o600)


def record_site_init(site: SiteDir) -> None:
    """``site.init``: the new site's id, key ids and policy (called by :func:`client.site_init.init_site`)."""
    from client.site_keys import load_site_key

    config = SiteConfig.load(site.config_file)
    actor = site_actor(config.site_id)
    key = load_audit_key(site)
    policy = config.policy
    with AuditLog.open(audit_log_file(site), actor, key, role="site") as log:
        log.append(
            "site.init",
            site_id=actor,
            data_key_id=load_site_key(site).key_id,
            signing_key_id=key.key_id,
            policy_sha256=policy_sha256(policy),
            policy=policy_config(policy),
        )


def record_key_rotation(site: SiteDir, report: RotationReport) -> None:
    """``keys.rotate``: old and new data key ids, objects re-wrapped."""
    with site_log(site) as log:
        log.append(
            "keys.rotate", old_key_id=report.old_key_id, new_key_id=report.new_key_id, objects=report.objects
        )


def shred_evidence(site: SiteDir) -> dict[str, Any]:
    """What ``keys.shred`` will record, read *before* the keys are destroyed: the data key id and the
    number of sealed objects it makes unrecoverable.

    The key id comes from the key itself when it can be loaded, else from a sealed object's header,
    else (an empty site whose key source is unavailable) from the de-identification secret.
    """
    from client.site_keys import load_site_keyring, sealed_objects
    from common.crypto import load_key_file, read_header
    from common.errors import FedscanError

    objects = list(sealed_objects(site))
    key_id: str | None = None
    with contextlib.suppress(FedscanError):  # a key source that is unavailable now (env unset, ...)
        key_id = load_site_keyring(site).key_ids[0]
    if key_id is None and objects:
        key_id = read_header(objects[0][0]).key_id
    if key_id is None:
        key_id = load_key_file(site.deid_secret_file).key_id
    return {"key_id": key_id, "objects": len(objects)}


def record_key_shred(site: SiteDir, evidence: Mapping[str, Any]) -> None:
    """``keys.shred`` with what :func:`shred_evidence` read before the shredding."""
    with site_log(site) as log:
        log.append("keys.shred", **evidence)


def _counts(counter: Mapping[str, int]) -> dict[str, int]:
    out: Counter[str] = Counter()
    for name, count in counter.items():
        out[to_token(str(name))] += int(count)
    return dict(sorted(out.items()))


def record_deid_run(site: SiteDir, report: DeidReport, *, profile: str, report_bytes: bytes) -> None:
    """``deid.run``: profile, options, counts per rejection category and the report's hash."""
    burned_in = sum(1 for r in report.rejections if "burned-in" in r.category) + report.files_masked
    with site_log(site) as log:
        log.append(
            "deid.run",
            files_in=report.files_seen,
            files_out=report.files_written,
            files_rejected=report.files_rejected,
            profile=to_token(profile),
            options=sorted({to_token(o) for o in report.options}),
            rejected=_counts(report.reason_counts()),
            burned_in_flagged=burned_in,
            config_sha256=sha256_hex(canonical_json({"profile": profile, "options": list(report.options)})),
            report_sha256=hashlib.sha256(report_bytes).hexdigest(),
        )


def record_ingest_run(site: SiteDir, report: IngestReport, manifest: Manifest, store_key_id: str) -> None:
    """``ingest.run``: records added and rejected (per reason), labels, the de-identification profile
    applied on the way in (fedscan's, with site.toml's ``[deid]`` options), manifest and report hashes."""
    options = SiteConfig.load(site.config_file).deid_options
    labels: Counter[str] = Counter()
    for label, count in report.per_label.items():
        labels["unlabelled" if int(label) < 0 else f"label-{int(label)}"] += int(count)
    with site_log(site) as log:
        log.append(
            "ingest.run",
            records=report.records_added,
            rejected=len(report.rejected),
            manifest_sha256=manifest_sha256(manifest),
            files=report.files_seen,
            rejected_reasons=_counts(report.rejected_by_reason),
            labels=dict(sorted(labels.items())),
            store_key_id=store_key_id,
            total_records=manifest.count(),
            report_sha256=hashlib.sha256(report.to_json().encode("utf-8")).hexdigest(),
            profile="fedscan",
            options=sorted({to_token(o) for o in options}),
        )
