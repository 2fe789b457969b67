"""Joining a federation from the site's side: the enrolment request, and trusting the kit's publisher.

``fedscan site enrol`` turns the site's own key pairs (made by ``fedscan site init``; the node key signs
the SuperNode's requests, the audit key the site's log) into a public enrolment request
(:mod:`common.enrolment`) for the coordinator. No private key leaves the site. ``--new-node-key``
destroys the node key (overwritten, then unlinked) and makes a new one, for a site whose key was
revoked or may have been exposed.

When the coordinator's kit arrives, ``fedscan site run`` checks it against the site
(:func:`trust_kit_publisher`): the federation manifest must be signed by a publisher this site trusts
(``[policy] trusted_publishers``). A site that trusts no publisher yet adopts its kit's key (trust on
first use, like an SSH host key: the kit came over a channel the operator trusts), writes it into
site.toml and records it in the audit log; a kit signed by any other key is refused from then on.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
from dataclasses import dataclass
from pathlib import Path

from client.site import SiteDir
from client.site_audit import load_audit_key, site_log
from client.site_config import SiteConfig
from client.site_init import create_node_key
from client.site_keys import destroy_file
from common.audit import read_verified_log
from common.crypto.pki import node_key_fingerprint, node_public_key, read_private_file
from common.crypto.signing import VerifyKey, load_verify_key
from common.enrolment import make_request
from common.errors import AuditError, InputError, KeyMaterialError
from common.fsio import write_atomic, write_private_atomic

__all__ = ["EnrolmentResult", "audit_log_genesis", "enrol_site", "node_key_sha256", "trust_kit_publisher"]


@dataclass(frozen=True)
class EnrolmentResult:
    """What ``site enrol`` wrote: the request file and the public keys it carries."""

    request: Path
    site_id: str
    node_fingerprint: str
    audit_key_id: str
    new_node_key: bool


def node_key_sha256(public_openssh: bytes) -> str:
    """SHA-256 (hex) of a node public key's OpenSSH line without comment: how the audit log names it."""
    return hashlib.sha256(b" ".join(public_openssh.split()[:2])).hexdigest()


def audit_log_genesis(site: SiteDir) -> str:
    """SHA-256 of the first line of the site's audit log (verified first), which its enrolment pins."""
    from client.site_audit import audit_log_file
    from client.site_keys import load_site_key

    with site_log(site):  # make sure the log exists (a site made before audit logs existed)
        pass
    verified = read_verified_log(audit_log_file(site), seal_key=load_site_key(site))
    if not verified.verification.ok or not verified.entries:
        raise AuditError(
            f"The site's audit log does not verify ({verified.verification.failure}); "
            "it cannot be enrolled until that is resolved."
        )
    return verified.entries[0].line_hash()


def enrol_site(site: SiteDir, out: Path, *, new_node_key: bool = False) -> EnrolmentResult:
    """Write the site's public enrolment request to ``out``; create the node key if the site has none.

    Raises
    ------
    KeyMaterialError
        The node or audit key is unsafe (mode, owner) or does not match its public half.
    """
    config = SiteConfig.load(site.config_file)
    renewed = False
    if new_node_key and site.node_key_file.exists():
        destroy_file(site.node_key_file)
        if site.node_pubkey_file.exists():
            site.node_pubkey_file.unlink()
        renewed = True
    if not site.node_key_file.exists():
        create_node_key(site, config.site_id)
        renewed = True
    private = read_private_file(site.node_key_file)
    public = node_public_key(private)
    recorded = site.node_pubkey_file.read_bytes() if site.node_pubkey_file.exists() else b""
    if recorded.split()[:2] != public.split()[:2]:
        raise KeyMaterialError(f"{site.node_pubkey_file} is not the public half of {site.node_key_file}.")
    audit_key = load_audit_key(site)
    created = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    request = make_request(config.site_id, private, public, audit_key, created, audit_log_genesis(site))
    write_atomic(Path(out), request, mode=0o644)
    with site_log(site) as log:
        log.append(
            "site.enrolled",
            node_key_sha256=node_key_sha256(public),
            audit_key_id=audit_key.key_id,
            new_node_key=renewed,
        )
    return EnrolmentResult(Path(out), config.site_id, node_key_fingerprint(public), audit_key.key_id, renewed)


def trust_kit_publisher(site: SiteDir, kit_publisher: Path) -> tuple[VerifyKey, bool]:
    """The publisher key this site trusts for ``kit_publisher``'s kit; adopt it if the site trusts none.

    Returns the key and whether it was adopted now.

    Raises
    ------
    InputError
        The kit has no readable publisher key, or the site already trusts other publishers only.
    """
    try:
        offered = load_verify_key(kit_publisher)
    except (KeyMaterialError, OSError) as error:
        raise InputError(f"{kit_publisher} is not the kit's publisher key ({error}).") from None
    config = SiteConfig.load(site.config_file)
    trusted = config.policy.publisher_keys()
    if offered in trusted:
        return offered, False
    if trusted:
        raise InputError(
            f"The kit's publisher key {offered.key_id} ({kit_publisher}) is not one this site trusts "
            f"({', '.join(k.key_id for k in trusted)} in {site.config_file}). If the coordinator really "
            "changed it, check the new key's id with them and add it to [policy] trusted_publishers."
        )
    policy = dataclasses.replace(config.policy, trusted_publishers=(offered.to_openssh(),))
    updated = dataclasses.replace(config, policy=policy)
    write_private_atomic(site.config_file, updated.to_toml().encode())
    with site_log(site) as log:  # notes the policy change as well
        log.append("trust.publisher", publisher_key_id=offered.key_id, public_key=offered.to_base64())
    return offered, True
