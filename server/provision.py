"""Provisioning a federation: the CA, the SuperLink's certificate, a node key per site, and kits.

``fedscan server provision`` writes one *federation directory*::

    FED/
      ca/ca.key, ca/ca.pem          the CA (0600 key): take it offline; needed only to renew the
                                    SuperLink certificate
      server/                       the server's kit: stays with the coordinator
        kit.toml                    the federation record: name, SuperLink address, sites and status
        ca.pem, superlink.pem, superlink.key (0600)
        nodes/<site>.pub            node public keys to register with the SuperLink
        audit.key (0600), audit.pub the key every run signs the server's audit log with; give
                                    audit.pub to auditors (``fedscan audit verify --pubkey``)
        revoked/<site>.<n>.pub      revoked keys (unregistered at the next `fedscan server run`)
        README.md
      sites/<site>/                 one kit per site: copy it to that site, nothing else
        kit.toml, ca.pem, node.key (0600), node.pub, site.toml.template, README.md

Directories holding private keys are 0700. Adding a site issues only that site's key and kit;
revoking one moves its public key to ``revoked/`` (the SuperLink refuses it once unregistered) and
deletes its kit's private key here. Nothing else is ever re-issued, so running sites keep working.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import shutil
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from common.crypto.pki import (
    PemPair,
    certificate_info,
    issue_server_certificate,
    new_certificate_authority,
    new_node_key,
    node_key_fingerprint,
    read_private_file,
    write_new_private_file,
    write_public_file,
)
from common.errors import ConfigError, InputError
from common.fsio import write_atomic
from server.audit_trail import create_audit_key

__all__ = [
    "KIT_FORMAT",
    "LOOPBACK_NAMES",
    "Federation",
    "SiteEntry",
    "add_site",
    "load_federation",
    "parse_address",
    "provision",
    "renew_server_certificate",
    "revoke_site",
    "site_fingerprint_on_disk",
]

KIT_FORMAT = 1
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
    fingerprint: str
    status: str  # active | revoked
    added: str
    revoked: str = ""
    generation: int = 1  # bumps each time the site gets a new key (revoke, then add again)


@dataclass(frozen=True)
class Federation:
    """A federation directory and its record (``server/kit.toml``)."""

    root: Path
    name: str
    superlink: str
    names: tuple[str, ...]
    created: str
    sites: tuple[SiteEntry, ...]

    @property
    def server_dir(self) -> Path:
        return self.root / "server"

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
    extra_names: Sequence[str] = (),
) -> Federation:
    """Create a federation directory at ``out`` (which must not exist or be empty).

    Parameters
    ----------
    federation
        The federation's name (in certificates, kits and records).
    site_ids
        The sites; each gets an EC P-384 node key and a kit.
    superlink_address
        ``HOST:PORT`` the sites will connect to. ``HOST`` goes into the SuperLink certificate's SANs,
        with ``extra_names`` (other names or addresses of the same server, e.g. behind a proxy) and
        the loopback names.
    """
    out = Path(out)
    if not _NAME.match(federation):
        raise ConfigError(
            f"Federation name {federation!r} is invalid: use 1-64 letters, digits, '.', '_' or '-'."
        )
    host, _port = parse_address(superlink_address)
    for name in extra_names:
        parse_address(f"{name}:1")
    _check_site_ids(list(site_ids))
    if not site_ids:
        raise ConfigError("A federation needs at least one site (--sites a,b,c).")
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
    for site_id in site_ids:
        fed = _issue_site(fed, site_id)
    _write_server_readme(fed)
    return fed


def _write_server_certificate(fed: Federation, ca: PemPair) -> None:
    pair = issue_server_certificate(ca, f"fedscan {fed.name} SuperLink", fed.names)
    if fed.server_key.exists():
        fed.server_key.unlink()
    write_new_private_file(fed.server_key, pair.private_key)
    write_public_file(fed.server_certificate, pair.certificate)


def _issue_site(fed: Federation, site_id: str, generation: int = 1) -> Federation:
    """A node key and a kit for ``site_id``; returns the federation with the site recorded."""
    pair = new_node_key(comment=f"fedscan:{fed.name}:{site_id}")
    kit = fed.site_kit(site_id)
    if kit.exists():
        shutil.rmtree(kit)
    _private_dir(kit)
    write_new_private_file(kit / "node.key", pair.private_openssh)
    write_public_file(kit / "node.pub", pair.public_openssh)
    write_public_file(kit / "ca.pem", fed.ca_certificate.read_bytes())
    (fed.server_dir / "nodes").mkdir(exist_ok=True)
    write_public_file(fed.node_public_key(site_id), pair.public_openssh)
    entry = SiteEntry(site_id, pair.fingerprint, "active", _now(), generation=generation)
    fed = replace(fed, sites=(*(s for s in fed.sites if s.site_id != site_id), entry))
    _write_site_files(fed, entry)
    _write_record(fed)
    return fed


def add_site(root: Path, site_id: str) -> Federation:
    """Add ``site_id`` (new, or revoked before: it then gets a new key) without touching the others."""
    fed = load_federation(root)
    _check_site_ids([site_id])
    current = fed.site(site_id)
    if current is not None and current.status == "active":
        raise ConfigError(
            f"Site {site_id} is already in federation {fed.name}; revoke it first to give it a new key."
        )
    fed = _issue_site(fed, site_id, generation=1 if current is None else current.generation + 1)
    _write_server_readme(fed)
    return fed


def revoke_site(root: Path, site_id: str) -> Federation:
    """Revoke ``site_id``: its public key moves to ``revoked/`` and its kit's private key is deleted.

    The SuperLink refuses the key once it is unregistered: ``fedscan server provision revoke-site``
    unregisters it at once if this kit's SuperLink is running, else the next ``fedscan server run``
    does, before it accepts any site (:func:`server.deployment.sync_registrations`).
    """
    fed = load_federation(root)
    entry = fed.site(site_id)
    if entry is None:
        raise ConfigError(f"Site {site_id} is not in federation {fed.name}.")
    if entry.status == "revoked":
        raise ConfigError(f"Site {site_id} is already revoked.")
    revoked_dir = fed.server_dir / "revoked"
    revoked_dir.mkdir(exist_ok=True)
    public = fed.node_public_key(site_id)
    public.replace(revoked_dir / f"{site_id}.{entry.generation}.pub")
    kit_key = fed.site_kit(site_id) / "node.key"
    if kit_key.exists():
        kit_key.unlink()
    fed = replace(
        fed,
        sites=tuple(
            replace(s, status="revoked", revoked=_now()) if s.site_id == site_id else s for s in fed.sites
        ),
    )
    _write_record(fed)
    _write_server_readme(fed)
    return fed


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
    _write_record(fed)
    return fed


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
        "",
    ]
    for s in sorted(fed.sites, key=lambda s: s.site_id):
        lines += [
            f"[sites.{_toml_string(s.site_id)}]",
            f"status = {_toml_string(s.status)}",
            f"fingerprint = {_toml_string(s.fingerprint)}",
            f"added = {_toml_string(s.added)}",
            f"revoked = {_toml_string(s.revoked)}",
            f"generation = {s.generation}",
            "",
        ]
    write_atomic(fed.server_dir / "kit.toml", "\n".join(lines).encode(), mode=0o644)


def load_federation(root: Path) -> Federation:
    """Read a federation directory (or its ``server/`` kit) written by :func:`provision`.

    Raises
    ------
    InputError
        If there is no federation record there, or it is malformed.
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
            raise InputError(f"{record} has format {head.get('format')!r}; this fedscan reads {KIT_FORMAT}.")
        sites = tuple(
            SiteEntry(
                site_id=site_id,
                fingerprint=str(body["fingerprint"]),
                status=str(body["status"]),
                added=str(body["added"]),
                revoked=str(body.get("revoked", "")),
                generation=int(body.get("generation", 1)),
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
        )
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"{record} is malformed ({error!r}).") from None


def _write_site_files(fed: Federation, site: SiteEntry) -> None:
    kit = fed.site_kit(site.site_id)
    ca = certificate_info(fed.ca_certificate.read_bytes())
    kit_toml = "\n".join(
        [
            "# fedscan site kit: what `fedscan site run --kit` reads. Written by `fedscan server provision`.",
            "[federation]",
            f"format = {KIT_FORMAT}",
            f"name = {_toml_string(fed.name)}",
            f"superlink = {_toml_string(fed.superlink)}",
            f"ca_sha256 = {_toml_string(ca.sha256)}",
            "",
            "[site]",
            f"id = {_toml_string(site.site_id)}",
            f"fingerprint = {_toml_string(site.fingerprint)}",
            "",
        ]
    )
    write_public_file(kit / "kit.toml", kit_toml.encode())
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
    readme = f"""# fedscan site kit: {site.site_id} in federation {fed.name}

Copy this folder to the machine of site `{site.site_id}` (for example to `/srv/fedscan/kit`) over a
channel you trust, keep `node.key` readable by the fedscan user only (mode 0600), and send nothing back.

| file | what |
|---|---|
| `ca.pem` | the federation's CA certificate: the site uses it to verify the SuperLink (TLS) |
| `node.key` | this site's private node key (EC P-384, OpenSSH format): proves to the SuperLink who connects |
| `node.pub` | its public half; the coordinator has registered it (fingerprint `{site.fingerprint}`) |
| `kit.toml` | federation name, SuperLink address `{fed.superlink}` |
| `site.toml.template` | the [site] id and [federation] table for this site's site.toml |

Steps at the site:

1. `fedscan site init --site-dir /srv/fedscan/site --site-id {site.site_id}` (once; back up its keys offline).
2. `fedscan site ingest --site-dir /srv/fedscan/site --input /exports/... --labels labels.csv`.
3. Allow **outbound** TCP from this machine to `{fed.superlink}` (nothing inbound is needed).
4. `fedscan site run --site-dir /srv/fedscan/site --kit /srv/fedscan/kit` and leave it running
   (a service manager restarts it on failure; it reconnects by itself).

Only model parameters and aggregate metrics leave the site; scans stay in the encrypted store.
See docs/deployment.md for proxies, key rotation and troubleshooting.
"""
    write_public_file(kit / "README.md", readme.encode())


def _write_server_readme(fed: Federation) -> None:
    active = ", ".join(s.site_id for s in fed.active_sites()) or "none"
    revoked = ", ".join(s.site_id for s in fed.sites if s.status == "revoked") or "none"
    readme = f"""# fedscan server kit: federation {fed.name}

SuperLink address: `{fed.superlink}` (certificate names: {", ".join(fed.names)}).
Active sites: {active}. Revoked: {revoked}.

| file | what |
|---|---|
| `kit.toml` | the federation record (edit it with `fedscan server provision ...` commands only) |
| `ca.pem`, `superlink.pem`, `superlink.key` | TLS: the CA and the SuperLink's certificate and key (0600) |
| `nodes/*.pub` | the node keys `fedscan server run` registers with the SuperLink |
| `revoked/*.pub` | revoked node keys, unregistered by the next `fedscan server run` |

Run a training: `fedscan server run --kit {fed.server_dir} --set num-server-rounds=5`.
Open **inbound** TCP port {fed.port} to the sites only; the sites connect out to it.
Move `{fed.ca_key}` offline: it is needed only to renew the SuperLink certificate.
Send each site its folder under `{fed.root / "sites"}` and nothing else.
"""
    write_public_file(fed.server_dir / "README.md", readme.encode())


def site_fingerprint_on_disk(fed: Federation, site_id: str) -> str:
    """Fingerprint of the public key registered for ``site_id`` (to check the record against the file)."""
    return node_key_fingerprint(fed.node_public_key(site_id).read_bytes())
