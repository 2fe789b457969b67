"""Provisioning a federation from the sites' enrolment requests: the CA, certificates, keys of record, kits.

Sites create their own private keys (``fedscan site init``) and send the coordinator a public enrolment
request (``fedscan site enrol``: node and audit public keys, each with a proof of possession,
:mod:`common.enrolment`). ``fedscan server provision`` writes one *federation directory*::

    FED/
      ca/ca.key, ca/ca.pem          the CA (0600 key): take it offline; needed only to renew the
                                    SuperLink certificate
      server/                       the server's kit: stays with the coordinator
        kit.toml                    the federation record: name, SuperLink address, sites, their keys
        federation.json             the signed federation manifest (:mod:`common.federation_manifest`)
        ca.pem, superlink.pem, superlink.key (0600)
        publisher.key (0600), publisher.pub   signs app bundles and the manifest; sites trust the .pub
        audit.key (0600), audit.pub the key every run signs the server's audit log with
        nodes/<site>.pub            enrolled node public keys, registered with the SuperLink
        revoked/<site>.<n>.pub      revoked keys (unregistered by every SuperLink start and sync)
        README.md
      sites/<site>/                 one kit per site: copy it to that site; it holds no private key
        kit.toml, ca.pem, publisher.pub, federation.json, site.toml.template, README.md

No private key of a site ever exists here. A site listed with ``--sites`` but without a request is
*pending*: it is in the record and its kit, but has no key and cannot connect until
``fedscan server provision add-site --request`` enrols it. Revoking a site moves its public key to
``revoked/``; a revoked node key can never be enrolled again (the site makes a new one). Every change
re-signs the manifest (its ``serial`` grows) and refreshes every kit; nothing else is re-issued, so
running sites keep working.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from common.crypto.pki import (
    PemPair,
    certificate_info,
    issue_server_certificate,
    new_certificate_authority,
    node_key_fingerprint,
    read_private_file,
    write_new_private_file,
    write_public_file,
)
from common.crypto.signing import (
    SigningKey,
    generate_signing_key,
    load_signing_key,
    load_verify_key,
    write_signing_key,
)
from common.enrolment import EnrolmentRequest
from common.errors import ConfigError, InputError
from common.federation_manifest import (
    MANIFEST_FILE,
    FederationManifest,
    ManifestSite,
    audit_actor_clash,
    signed_manifest_bytes,
)
from common.fsio import write_atomic
from server.audit_trail import create_audit_key

__all__ = [
    "KIT_FORMAT",
    "PUBLISHER_KEY",
    "LOOPBACK_NAMES",
    "Federation",
    "SiteEntry",
    "add_site",
    "load_federation",
    "manifest_of",
    "parse_address",
    "provision",
    "renew_server_certificate",
    "revoke_site",
    "site_fingerprint_on_disk",
]

KIT_FORMAT = 2
#: The publisher key's file name in the server kit (``.pub`` beside it, and in every site kit).
PUBLISHER_KEY = "publisher.key"
# The same rule as a site's id in site.toml (client.site_config), so a kit always fits its site.
_SITE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: Always in the SuperLink certificate: the SuperLink's own helpers and the coordinator's CLI reach it
#: on the loopback interface.
LOOPBACK_NAMES = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class SiteEntry:
    """One site of the federation as the coordinator records it."""

    site_id: str
    fingerprint: str  # of the node key; empty while pending
    status: str  # active | revoked | pending
    added: str
    revoked: str = ""
    generation: int = 1  # bumps each time the site gets a new key (revoke, then add again)
    node_public_key: str = ""  # one OpenSSH line, from the site's enrolment request
    audit_key: str = ""  # base64 Ed25519 public key, from the site's enrolment request
    audit_genesis: str = ""  # SHA-256 of the first line of the site's audit log, from its request
    revoked_fingerprints: tuple[str, ...] = ()  # earlier keys of this site, never to be enrolled again


@dataclass(frozen=True)
class Federation:
    """A federation directory and its record (``server/kit.toml``)."""

    root: Path
    name: str
    superlink: str
    names: tuple[str, ...]
    created: str
    sites: tuple[SiteEntry, ...]
    serial: int = 0  # the manifest's serial: grows with every change

    @property
    def server_dir(self) -> Path:
        return self.root / "server"

    @property
    def publisher_key(self) -> Path:
        """The publisher's signing key (Ed25519, 0600): signs app bundles and the federation manifest."""
        return self.server_dir / PUBLISHER_KEY

    @property
    def publisher_pubkey(self) -> Path:
        return self.server_dir / "publisher.pub"

    @property
    def manifest_file(self) -> Path:
        return self.server_dir / MANIFEST_FILE

    @property
    def ca_certificate(self) -> Path:
        return self.server_dir / "ca.pem"

    @property
    def server_certificate(self) -> Path:
        return self.server_dir / "superlink.pem"

    @property
    def server_key(self) -> Path:
        return self.server_dir / "superlink.key"

    @property
    def audit_key(self) -> Path:
        """The server's audit-log signing key (Ed25519, 0600); ``audit_pubkey`` is for auditors."""
        return self.server_dir / "audit.key"

    @property
    def audit_pubkey(self) -> Path:
        return self.server_dir / "audit.pub"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca" / "ca.key"

    def site_kit(self, site_id: str) -> Path:
        return self.root / "sites" / site_id

    def node_public_key(self, site_id: str) -> Path:
        return self.server_dir / "nodes" / f"{site_id}.pub"

    def active_sites(self) -> tuple[SiteEntry, ...]:
        return tuple(s for s in self.sites if s.status == "active")

    def site(self, site_id: str) -> SiteEntry | None:
        return next((s for s in self.sites if s.site_id == site_id), None)

    @property
    def port(self) -> int:
        return parse_address(self.superlink)[1]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) -> (host, port), with a clear error."""
    host, sep, port_text = address.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(
            f"SuperLink address {address!r} must be HOST:PORT (e.g. hub.example.org:9092 or "
            "[2001:db8::1]:9092), with a port between 1 and 65535."
        )
    if not _is_ip(host) and not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", host):
        raise ConfigError(f"SuperLink host {host!r} is neither an IP address nor a DNS name.")
    return host, int(port_text)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _check_site_ids(site_ids: Sequence[str]) -> None:
    bad = [s for s in site_ids if not _SITE_ID.match(s)]
    if bad:
        raise ConfigError(
            f"Invalid site id(s) {', '.join(map(repr, bad))}: use 1-64 letters, digits, '.', '_' or '-' "
            "(the same id as the site's `fedscan site init --site-id`)."
        )
    dupes = sorted({s for s in site_ids if site_ids.count(s) > 1})
    if dupes:
        raise ConfigError(f"Site id(s) listed more than once: {', '.join(dupes)}.")


def _check_audit_actors(site_ids: Sequence[str]) -> None:
    clash = audit_actor_clash(site_ids)
    if clash is not None:
        raise ConfigError(f"Cannot enrol: {clash}. Each site needs a site id of its own (case aside).")


def _check_keys_unused(request: EnrolmentRequest, others: Sequence[SiteEntry]) -> None:
    """A request's keys must be no other site's, now or before (a node key stands for one site, and a
    revoked one may have been exposed: it must not come back under another site id)."""
    for other in others:
        if request.node_fingerprint in other.revoked_fingerprints or (
            other.status == "revoked" and request.node_fingerprint == other.fingerprint
        ):
            raise ConfigError(
                f"Site {request.site_id}'s request carries a node key revoked for site {other.site_id} "
                f"({request.node_fingerprint}); a revoked key is never enrolled again."
            )
        if request.node_fingerprint == other.fingerprint:
            raise ConfigError(
                f"Site {request.site_id}'s request carries the node key already enrolled for site "
                f"{other.site_id} ({request.node_fingerprint}): each site needs keys of its own."
            )
        if other.audit_key and request.audit_key.to_base64() == other.audit_key:
            raise ConfigError(
                f"Site {request.site_id}'s request carries the audit key already enrolled for site "
                f"{other.site_id} ({request.audit_key.key_id}): each site needs keys of its own."
            )


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def provision(
    out: Path,
    federation: str,
    site_ids: Sequence[str],
    superlink_address: str,
    *,
    requests: Sequence[EnrolmentRequest] = (),
    extra_names: Sequence[str] = (),
) -> Federation:
    """Create a federation directory at ``out`` (which must not exist or be empty).

    Parameters
    ----------
    federation
        The federation's name (in certificates, kits and records).
    site_ids
        The sites; may be empty when ``requests`` name them. A listed site without a request is pending.
    superlink_address
        ``HOST:PORT`` the sites will connect to. ``HOST`` goes into the SuperLink certificate's SANs,
        with ``extra_names`` (other names or addresses of the same server, e.g. behind a proxy) and
        the loopback names.
    requests
        Verified enrolment requests (:func:`common.enrolment.read_request`), one per enrolled site.
    """
    out = Path(out)
    if not _NAME.match(federation):
        raise ConfigError(
            f"Federation name {federation!r} is invalid: use 1-64 letters, digits, '.', '_' or '-'."
        )
    host, _port = parse_address(superlink_address)
    for name in extra_names:
        parse_address(f"{name}:1")
    requested = [r.site_id for r in requests]
    _check_site_ids(requested)
    _check_site_ids(list(site_ids))
    if site_ids and not set(requested) <= set(site_ids):
        extra = sorted(set(requested) - set(site_ids))
        raise ConfigError(f"Enrolment requests for site(s) not in --sites: {', '.join(extra)}.")
    all_ids = list(dict.fromkeys([*site_ids, *requested]))
    if not all_ids:
        raise ConfigError("A federation needs at least one site (--sites a,b,c or --request FILE).")
    _check_audit_actors(all_ids)
    for request in requests:
        _check_keys_unused(request, [_enrolled(r) for r in requests if r.site_id != request.site_id])
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not empty; choose a new directory for the federation.")
    out.mkdir(parents=True, exist_ok=True)
    names = tuple(dict.fromkeys([host, *extra_names, *LOOPBACK_NAMES]))
    fed = Federation(out.resolve(), federation, superlink_address, names, _now(), ())
    ca = new_certificate_authority(f"fedscan {federation} CA")
    _private_dir(fed.root / "ca")
    write_new_private_file(fed.ca_key, ca.private_key)
    write_public_file(fed.root / "ca" / "ca.pem", ca.certificate)
    _private_dir(fed.server_dir)
    write_public_file(fed.ca_certificate, ca.certificate)
    _write_server_certificate(fed, ca)
    create_audit_key(fed.audit_key, fed.audit_pubkey)
    publisher = generate_signing_key()
    write_signing_key(fed.publisher_key, publisher)
    write_public_file(
        fed.publisher_pubkey,
        (publisher.verify_key.to_openssh(f"fedscan:{federation}:publisher") + "\n").encode(),
    )
    by_id = {r.site_id: r for r in requests}
    sites = tuple(
        _enrolled(by_id[site_id]) if site_id in by_id else SiteEntry(site_id, "", "pending", _now())
        for site_id in all_ids
    )

    for request in requests:
        _write_node_key(fed, request)
    return _publish(replace(fed, sites=sites))


def _write_server_certificate(fed: Federation, ca: PemPair) -> None:
    pair = issue_server_certificate(ca, f"fedscan {fed.name} SuperLink", fed.names)
    if fed.server_key.exists():
        fed.server_key.unlink()
    write_new_private_file(fed.server_key, pair.private_key)
    write_public_file(fed.server_certificate, pair.certificate)


def _enrolled(request: EnrolmentRequest, generation: int = 1, earlier: tuple[str, ...] = ()) -> SiteEntry:
    return SiteEntry(
        request.site_id,
        request.node_fingerprint,
        "active",
        _now(),
        generation=generation,
        node_public_key=request.node_public_key,
        audit_key=request.audit_key.to_base64(),
        audit_genesis=request.audit_log_genesis,
        revoked_fingerprints=earlier,
    )


def _write_node_key(fed: Federation, request: EnrolmentRequest) -> None:
    (fed.server_dir / "nodes").mkdir(exist_ok=True)
    comment = f"fedscan:{fed.name}:{request.site_id}"
    write_public_file(fed.node_public_key(request.site_id), f"{request.node_public_key} {comment}\n".encode())


def _publisher(fed: Federation) -> SigningKey:
    return load_signing_key(fed.publisher_key)


def manifest_of(fed: Federation) -> FederationManifest:
    """The federation manifest the record describes (unsigned; :func:`_publish` signs and writes it)."""
    return FederationManifest(
        federation=fed.name,
        superlink=fed.superlink,
        ca_sha256=certificate_info(fed.ca_certificate.read_bytes()).sha256,
        publisher_key=load_verify_key(fed.publisher_pubkey),
        server_audit_key=load_verify_key(fed.audit_pubkey),
        serial=fed.serial,
        issued=_now(),
        sites=tuple(
            ManifestSite(
                site_id=s.site_id,
                status=s.status,
                node_public_key=s.node_public_key,
                node_fingerprint=s.fingerprint,
                audit_key=s.audit_key,
                audit_genesis=s.audit_genesis,
                generation=s.generation,
                added=s.added,
                revoked=s.revoked,
            )
            for s in sorted(fed.sites, key=lambda s: s.site_id)
        ),
    )


def _publish(fed: Federation) -> Federation:
    """Record a change: bump the serial, write the record, sign the manifest, refresh every kit."""
    fed = replace(fed, serial=fed.serial + 1)
    _write_record(fed)
    manifest = signed_manifest_bytes(manifest_of(fed), _publisher(fed))
    write_public_file(fed.manifest_file, manifest)
    for site in fed.sites:
        _write_site_files(fed, site, manifest)
    _write_server_readme(fed)
    return fed


def add_site(root: Path, request: EnrolmentRequest) -> Federation:
    """Enrol the site of ``request``: a new site, a pending one, or a revoked one with a new node key.

    Raises
    ------
    ConfigError
        The site is already active, or the request reuses a node key that was revoked.
    """
    fed = load_federation(root)
    _check_site_ids([request.site_id])
    _check_audit_actors([*(s.site_id for s in fed.sites if s.site_id != request.site_id), request.site_id])
    current = fed.site(request.site_id)
    if current is not None and current.status == "active":
        raise ConfigError(
            f"Site {request.site_id} is already in federation {fed.name}; "
            "revoke it first to give it a new key."
        )
    earlier = (
        () if current is None else tuple(f for f in (*current.revoked_fingerprints, current.fingerprint) if f)
    )
    if request.node_fingerprint in earlier:
        raise ConfigError(
            f"Site {request.site_id}'s request reuses a revoked node key ({request.node_fingerprint}): the "
            "site must make a new one (`fedscan site enrol --new-node-key`)."
        )
    _check_keys_unused(request, [s for s in fed.sites if s.site_id != request.site_id])
    generation = 1 if current is None or current.status == "pending" else current.generation + 1
    _write_node_key(fed, request)
    entry = _enrolled(request, generation, earlier)
    return _publish(replace(fed, sites=(*(s for s in fed.sites if s.site_id != request.site_id), entry)))


def revoke_site(root: Path, site_id: str) -> Federation:
    """Revoke ``site_id``: its public key moves to ``revoked/`` and the manifest marks it revoked.

    The SuperLink refuses the key once it is unregistered: ``fedscan server provision revoke-site``
    unregisters it at once if this kit's SuperLink is running, else the next start of one does,
    before it accepts any site (:meth:`server.superlink.SuperLink.sync_registrations`).
    """
    fed = load_federation(root)
    entry = fed.site(site_id)
    if entry is None:
        raise ConfigError(f"Site {site_id} is not in federation {fed.name}.")
    if entry.status != "active":
        raise ConfigError(f"Site {site_id} is {entry.status}, not active: nothing to revoke.")
    revoked_dir = fed.server_dir / "revoked"
    revoked_dir.mkdir(exist_ok=True)
    public = fed.node_public_key(site_id)
    if public.exists():
        public.replace(revoked_dir / f"{site_id}.{entry.generation}.pub")
    return _publish(
        replace(
            fed,
            sites=tuple(
                replace(s, status="revoked", revoked=_now()) if s.site_id == site_id else s for s in fed.sites
            ),
        )
    )


def renew_server_certificate(root: Path, *, extra_names: Sequence[str] = ()) -> Federation:
    """Issue a new SuperLink certificate (and key) from the CA, e.g. before the old one expires.

    Sites need nothing new: they trust the CA, not the certificate. Needs ``ca/ca.key`` back online.
    """
    fed = load_federation(root)
    for name in extra_names:
        parse_address(f"{name}:1")
    ca = PemPair(fed.ca_certificate.read_bytes(), read_private_file(fed.ca_key))
    fed = replace(fed, names=tuple(dict.fromkeys([*fed.names, *extra_names])))
    _write_server_certificate(fed, ca)
    return _publish(fed)


# ---- records and kits ----------------------------------------------------------------------------


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def _write_record(fed: Federation) -> None:
    lines = [
        "# fedscan federation record, written by `fedscan server provision`; edit with its commands.",
        "[federation]",
        f"format = {KIT_FORMAT}",
        f"name = {_toml_string(fed.name)}",
        f"superlink = {_toml_string(fed.superlink)}",
        f"names = [{', '.join(_toml_string(n) for n in fed.names)}]",
        f"created = {_toml_string(fed.created)}",
        f"serial = {fed.serial}",
        "",
    ]
    for s in sorted(fed.sites, key=lambda s: s.site_id):
        lines += [
            f"[sites.{_toml_string(s.site_id)}]",
            f"status = {_toml_string(s.status)}",
            f"fingerprint = {_toml_string(s.fingerprint)}",
            f"node_public_key = {_toml_string(s.node_public_key)}",
            f"audit_key = {_toml_string(s.audit_key)}",
            f"audit_genesis = {_toml_string(s.audit_genesis)}",
            f"added = {_toml_string(s.added)}",
            f"revoked = {_toml_string(s.revoked)}",
            f"generation = {s.generation}",
            f"revoked_fingerprints = [{', '.join(_toml_string(f) for f in s.revoked_fingerprints)}]",
            "",
        ]
    write_atomic(fed.server_dir / "kit.toml", "\n".join(lines).encode(), mode=0o644)


def load_federation(root: Path) -> Federation:
    """Read a federation directory (or its ``server/`` kit) written by :func:`provision`.

    Raises
    ------
    InputError
        If there is no federation record there, or it is malformed or of another format.
    """
    root = Path(root).resolve()
    if not (root / "server" / "kit.toml").exists() and (root / "kit.toml").exists() and root.name == "server":
        root = root.parent
    record = root / "server" / "kit.toml"
    try:
        raw = tomllib.loads(record.read_text())
    except FileNotFoundError:
        raise InputError(
            f"{root} is not a federation directory (no server/kit.toml): run `fedscan server provision`."
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"{record} is not valid TOML: {error}.") from None
    try:
        head = raw["federation"]
        if head.get("format") != KIT_FORMAT:
            raise InputError(
                f"{record} has format {head.get('format')!r}; this fedscan reads {KIT_FORMAT} (a federation "
                "provisioned from the sites' enrolment requests: provision it again)."
            )
        sites = tuple(
            SiteEntry(
                site_id=site_id,
                fingerprint=str(body["fingerprint"]),
                status=str(body["status"]),
                added=str(body["added"]),
                revoked=str(body.get("revoked", "")),
                generation=int(body.get("generation", 1)),
                node_public_key=str(body.get("node_public_key", "")),
                audit_key=str(body.get("audit_key", "")),
                audit_genesis=str(body.get("audit_genesis", "")),
                revoked_fingerprints=tuple(str(f) for f in body.get("revoked_fingerprints", ())),
            )
            for site_id, body in raw.get("sites", {}).items()
        )
        return Federation(
            root=root,
            name=str(head["name"]),
            superlink=str(head["superlink"]),
            names=tuple(str(n) for n in head["names"]),
            created=str(head["created"]),
            sites=sites,
            serial=int(head.get("serial", 0)),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"{record} is malformed ({error!r}).") from None


def _write_site_files(fed: Federation, site: SiteEntry, manifest: bytes) -> None:
    kit = fed.site_kit(site.site_id)
    kit.mkdir(parents=True, exist_ok=True)
    ca = certificate_info(fed.ca_certificate.read_bytes())
    publisher = load_verify_key(fed.publisher_pubkey)
    kit_toml = "\n".join(
        [
            "# fedscan site kit: what `fedscan site run --kit` reads. Written by `fedscan server provision`.",
            "[federation]",
            f"format = {KIT_FORMAT}",
            f"name = {_toml_string(fed.name)}",
            f"superlink = {_toml_string(fed.superlink)}",
            f"ca_sha256 = {_toml_string(ca.sha256)}",
            f"publisher_key_id = {_toml_string(publisher.key_id)}",
            "",
            "[site]",
            f"id = {_toml_string(site.site_id)}",
            "",
        ]
    )
    write_public_file(kit / "kit.toml", kit_toml.encode())
    write_public_file(kit / "ca.pem", fed.ca_certificate.read_bytes())
    write_public_file(kit / "publisher.pub", fed.publisher_pubkey.read_bytes())
    write_public_file(kit / MANIFEST_FILE, manifest)
    template = "\n".join(
        [
            "# site.toml for this site: `fedscan site init --site-dir DIR --site-id "
            f"{site.site_id}` writes the full file;",
            "# check that [site] id matches, and keep this [federation] table in it (for reference; "
            "`fedscan site run --kit` reads the kit).",
            "[site]",
            f"id = {_toml_string(site.site_id)}",
            "",
            "[federation]",
            f"name = {_toml_string(fed.name)}",
            f"superlink = {_toml_string(fed.superlink)}",
            "",
        ]
    )
    write_public_file(kit / "site.toml.template", template.encode())
    state = {
        "active": f"enrolled with node key `{site.fingerprint}`",
        "pending": "**not enrolled yet**: send the coordinator the output of "
        "`fedscan site enrol --site-dir DIR --out REQUEST`",
        "revoked": "**revoked**: this site can no longer connect",
    }[site.status]
    readme = f"""# fedscan site kit: {site.site_id} in federation {fed.name}

Copy this folder to the machine of site `{site.site_id}` (for example to `/srv/fedscan/kit`) over a
channel you trust. It holds no private key: the site's keys were made at the site (`fedscan site init`)
and never leave it. This site is {state}.

| file | what |
|---|---|
| `ca.pem` | the federation's CA certificate: the site uses it to verify the SuperLink (TLS) |
| `publisher.pub` | the publisher key (id `{publisher.key_id}`): signs app bundles and `federation.json` |
| `federation.json` | the signed federation manifest: every site, its node and audit public keys, its status |
| `kit.toml` | federation name, SuperLink address `{fed.superlink}` |
| `site.toml.template` | the [site] id and [federation] table for this site's site.toml |

Steps at the site:

1. `fedscan site init --site-dir /srv/fedscan/site --site-id {site.site_id}` (once; back up its keys offline),
   then `fedscan site enrol --site-dir /srv/fedscan/site --out request.json` and send `request.json`
   (public) to the coordinator.
2. `fedscan site ingest --site-dir /srv/fedscan/site --input /exports/... --labels labels.csv`.
3. Allow **outbound** TCP from this machine to `{fed.superlink}` (nothing inbound is needed).
4. `fedscan site run --site-dir /srv/fedscan/site --kit /srv/fedscan/kit` and leave it running.
   On its first run the site trusts this kit's publisher key (check its id, `{publisher.key_id}`, with the
   coordinator) and writes it into site.toml (`[policy] trusted_publishers`); from then on the site runs
   only app bundles that key signed, and refuses any other.

Only model parameters and aggregate metrics leave the site; scans stay in the encrypted store.
See docs/deployment.md for the threat model, proxies, key rotation and troubleshooting.
"""
    write_public_file(kit / "README.md", readme.encode())


def _write_server_readme(fed: Federation) -> None:
    def listed(status: str) -> str:
        return ", ".join(s.site_id for s in fed.sites if s.status == status) or "none"

    readme = f"""# fedscan server kit: federation {fed.name}

SuperLink address: `{fed.superlink}` (certificate names: {", ".join(fed.names)}).
Active sites: {listed("active")}. Pending (no enrolment request yet): {listed("pending")}.
Revoked: {listed("revoked")}. Manifest serial: {fed.serial}.

| file | what |
|---|---|
| `kit.toml` | the federation record (edit it with `fedscan server provision ...` commands only) |
| `federation.json` | the signed federation manifest (also in every site kit) |
| `ca.pem`, `superlink.pem`, `superlink.key` | TLS: the CA and the SuperLink's certificate and key (0600) |
| `publisher.key`, `publisher.pub` | signs app bundles and the manifest (0600); sites trust the .pub |
| `audit.key`, `audit.pub` | signs the server's audit log (0600); auditors check against the .pub |
| `nodes/*.pub` | the enrolled node keys `fedscan server run` registers with the SuperLink |
| `revoked/*.pub` | revoked node keys, never registered again |

Run a training: `fedscan server run --kit {fed.server_dir} --set num-server-rounds=5`.
Open **inbound** TCP port {fed.port} to the sites only; the sites connect out to it. Only the Fleet API
answers there; the Control and Runtime APIs answer only on this machine's loopback.
Move `{fed.ca_key}` offline: it is needed only to renew the SuperLink certificate.
Send each site its folder under `{fed.root / "sites"}` and nothing else.
"""
    write_public_file(fed.server_dir / "README.md", readme.encode())


def site_fingerprint_on_disk(fed: Federation, site_id: str) -> str:
    """Fingerprint of the public key registered for ``site_id`` (to check the record against the file)."""
    return node_key_fingerprint(fed.node_public_key(site_id).read_bytes())
