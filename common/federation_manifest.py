"""The signed federation manifest: who is in a federation, with which keys, as the coordinator vouches for it.

``fedscan server provision`` builds it from the sites' enrolment requests and signs it with the
federation's publisher key; every kit carries a copy (``federation.json``). It lets

* a site see who is in its federation and check that it is enrolled with its own node key;
* an auditor check each actor's audit log against *that actor's* key (``fedscan audit verify --kit``): a
  log that claims to be ``site-a``'s but is signed with another key fails;
* the coordinator register exactly the enrolled, non-revoked node keys with its SuperLink.

Format (JSON): ``{"manifest": {...}, "publisher": "<key id>", "signature": "<base64 Ed25519>"}``; the
signature covers ``b"fedscan federation manifest v1\\x00"`` followed by the canonical JSON of
``manifest``. ``serial`` grows by one with every change (add, revoke), so a newer manifest is recognised.
Revoked sites stay listed (their past logs still verify; their node keys are not registered).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from common.audit.federation import SERVER_ACTOR, site_actor
from common.crypto.signing import SigningKey, VerifyKey, load_verify_key
from common.errors import InputError, KeyMaterialError

__all__ = [
    "MANIFEST_FILE",
    "SITE_STATUSES",
    "FederationManifest",
    "ManifestSite",
    "audit_actor_clash",
    "read_manifest",
    "signed_manifest_bytes",
]

MANIFEST_FILE: Final = "federation.json"
SITE_STATUSES: Final = ("active", "revoked", "pending")
_LABEL: Final = b"fedscan federation manifest v1\x00"
_MAX_BYTES: Final = 16 * 1024 * 1024


@dataclass(frozen=True)
class ManifestSite:
    """One site as the manifest lists it; a ``pending`` site has no keys yet (no enrolment request)."""

    site_id: str
    status: str
    node_public_key: str = ""
    node_fingerprint: str = ""
    audit_key: str = ""  # base64 of the raw Ed25519 public key
    audit_genesis: str = ""  # SHA-256 of the first line of the site's audit log, from its request
    generation: int = 1
    added: str = ""
    revoked: str = ""

    @property
    def actor(self) -> str:
        return site_actor(self.site_id)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "site_id": self.site_id,
            "status": self.status,
            "node_public_key": self.node_public_key,
            "node_fingerprint": self.node_fingerprint,
            "audit_key": self.audit_key,
            "audit_genesis": self.audit_genesis,
            "generation": self.generation,
            "added": self.added,
            "revoked": self.revoked,
        }


@dataclass(frozen=True)
class FederationManifest:
    """A verified federation manifest."""

    federation: str
    superlink: str
    ca_sha256: str
    publisher_key: VerifyKey
    server_audit_key: VerifyKey
    serial: int
    issued: str
    sites: tuple[ManifestSite, ...]

    def site(self, site_id: str) -> ManifestSite | None:
        return next((s for s in self.sites if s.site_id == site_id), None)

    def audit_keys(self) -> dict[str, VerifyKey]:
        """Each actor's audit key: ``server`` and every enrolled site (revoked ones too: old logs verify)."""
        keys = {SERVER_ACTOR: self.server_audit_key}
        for site in self.sites:
            if site.audit_key:
                keys[site.actor] = load_verify_key(site.audit_key)
        return keys

    def enrolled_log_genesis(self) -> dict[str, str]:
        """Each site actor's enrolled log genesis (SHA-256 of its log's first line)."""
        return {s.actor: s.audit_genesis for s in self.sites if s.audit_genesis and s.status != "pending"}

    def body(self) -> dict[str, Any]:
        """The signed part, JSON-ready."""
        return {
            "format": 1,
            "kind": "fedscan-federation-manifest",
            "federation": self.federation,
            "superlink": self.superlink,
            "ca_sha256": self.ca_sha256,
            "publisher_key": self.publisher_key.to_base64(),
            "server_audit_key": self.server_audit_key.to_base64(),
            "serial": self.serial,
            "issued": self.issued,
            "sites": [s.to_dict() for s in sorted(self.sites, key=lambda s: s.site_id)],
        }


def audit_actor_clash(site_ids: Iterable[str]) -> str | None:
    """Why these sites could not each have an audit actor of their own, or ``None``.

    A site's audit actor is its id in lower case (:func:`common.audit.federation.site_actor`): a site
    named ``Server`` would be the server's actor, and ``SITE-A`` next to ``site-a`` would share one, so
    that one party's key would stand for another's log in :meth:`FederationManifest.audit_keys`.
    """
    seen: dict[str, str] = {}
    for site_id in site_ids:
        actor = site_id.lower()
        if actor == SERVER_ACTOR:
            return f"site {site_id!r} would have the server's audit actor {SERVER_ACTOR!r}"
        if seen.get(actor, site_id) != site_id:
            return f"sites {seen[actor]!r} and {site_id!r} would share the audit actor {actor!r}"
        seen[actor] = site_id
    return None


def _canonical(body: Mapping[str, Any]) -> bytes:
    return _LABEL + json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def signed_manifest_bytes(manifest: FederationManifest, key: SigningKey) -> bytes:
    """The manifest file's bytes, signed with the publisher key (which must be the one it names)."""
    if key.verify_key != manifest.publisher_key:
        raise KeyMaterialError("The manifest must be signed by the publisher key it names.")
    body = manifest.body()
    envelope = {
        "manifest": body,
        "publisher": key.key_id,
        "signature": base64.b64encode(key.sign(_canonical(body))).decode("ascii"),
    }
    return (json.dumps(envelope, indent=2, sort_keys=True) + "\n").encode()


def read_manifest(path: Path, trusted: tuple[VerifyKey, ...] | None = None) -> FederationManifest:
    """Read a federation manifest and verify its signature.

    With ``trusted``, the manifest's publisher key must be one of them (a site's trusted publishers);
    without, it is checked against the key it names (integrity only: pass the key you trust).

    Raises
    ------
    InputError
        Missing, malformed, or a signature that does not verify; or signed by a key not in ``trusted``.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise InputError(f"Federation manifest {path} cannot be read ({error.strerror}).") from None
    if len(raw) > _MAX_BYTES:
        raise InputError(f"Federation manifest {path} is implausibly large ({len(raw)} bytes).")
    try:
        envelope = json.loads(raw)
        body = envelope["manifest"]
        signature = base64.b64decode(envelope["signature"], validate=True)
        if body.get("kind") != "fedscan-federation-manifest" or body.get("format") != 1:
            raise ValueError("not a fedscan federation manifest (format 1)")
        publisher = load_verify_key(str(body["publisher_key"]))
        manifest = FederationManifest(
            federation=str(body["federation"]),
            superlink=str(body["superlink"]),
            ca_sha256=str(body["ca_sha256"]),
            publisher_key=publisher,
            server_audit_key=load_verify_key(str(body["server_audit_key"])),
            serial=int(body["serial"]),
            issued=str(body["issued"]),
            sites=tuple(
                ManifestSite(
                    site_id=str(s["site_id"]),
                    status=str(s["status"]),
                    node_public_key=str(s.get("node_public_key", "")),
                    node_fingerprint=str(s.get("node_fingerprint", "")),
                    audit_key=str(s.get("audit_key", "")),
                    audit_genesis=str(s.get("audit_genesis", "")),
                    generation=int(s.get("generation", 1)),
                    added=str(s.get("added", "")),
                    revoked=str(s.get("revoked", "")),
                )
                for s in body["sites"]
            ),
        )
    except (ValueError, KeyError, TypeError, AttributeError, KeyMaterialError) as error:
        raise InputError(f"Federation manifest {path} is malformed ({error}).") from None
    if not publisher.verify(_canonical(body), signature):
        raise InputError(f"Federation manifest {path}: the signature does not verify (altered or forged).")
    if trusted is not None and publisher not in trusted:
        raise InputError(
            f"Federation manifest {path} is signed by publisher key {publisher.key_id}, which is not one "
            "this site trusts ([policy] trusted_publishers in site.toml)."
        )
    if any(s.status not in SITE_STATUSES for s in manifest.sites):
        raise InputError(f"Federation manifest {path} lists a site with an unknown status.")
    clash = audit_actor_clash(s.site_id for s in manifest.sites)
    if clash is not None:
        raise InputError(f"Federation manifest {path}: {clash}; each audit actor must be one party's.")
    return manifest
