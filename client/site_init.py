"""Create a site directory: key material (0600 in a 0700 folder) and a site.toml with safe defaults."""

from __future__ import annotations

import os
from pathlib import Path

from client.policy import SitePolicy
from client.site import SiteDir
from client.site_audit import create_audit_key, record_site_init
from client.site_config import SiteConfig
from client.site_keys import PASSPHRASE_ENV, load_site_key, passphrase_key
from common.audit.federation import site_actor
from common.crypto import generate_key, key_from_env, load_key_file, write_key_file
from common.crypto.pki import new_node_key, write_new_private_file
from common.errors import ConfigError, KeyMaterialError
from common.fsio import write_private_atomic

__all__ = ["create_node_key", "init_site", "load_deid_secret", "load_site_key"]


SALT_SIZE = 16


def init_site(
    root: Path, site_id: str, *, key_source: str = "file", policy: SitePolicy | None = None
) -> SiteDir:
    """Create ``root`` as a new site; refuses to touch an existing site's keys or config.

    ``key_source`` says where the site key lives (see :mod:`client.site_keys`): ``file`` creates
    ``keys/site.key``; ``env`` checks that ``FEDSCAN_SITE_KEY`` holds a key already (the secret store
    made it); ``passphrase`` creates a random salt and checks that ``FEDSCAN_SITE_PASSPHRASE`` is set;
    ``keyring`` creates a key and stores it in the OS keyring only. The de-identification secret is
    always a key file, and so is the SuperNode's node key (``keys/node.key``: born here, its public half
    goes to the coordinator in ``fedscan site enrol``'s request). site.toml is written last: a failed init
    leaves no site behind. ``policy`` (default: the safe :class:`client.policy.SitePolicy`) goes into its
    ``[policy]`` table. The site's audit key (``keys/audit.key``) is created with the others, and the
    audit log starts with ``site.init`` (:mod:`client.site_audit`).
    """
    site_actor(site_id)  # refuse, before anything is written, an id that cannot name an audit log
    site = SiteDir(Path(root))
    config = SiteConfig(site_id=site_id, key_source=key_source, policy=policy or SitePolicy())
    if site.config_file.exists() or site.site_key_file.exists():
        raise ConfigError(f"{site.root} is already a fedscan site; refusing to overwrite its keys.")
    if key_source == "env":
        key_from_env(config.key_env)
    if key_source == "passphrase" and not os.environ.get(PASSPHRASE_ENV):
        raise KeyMaterialError(f"A passphrase site derives its key from {PASSPHRASE_ENV}: set it first.")
    site.root.mkdir(parents=True, exist_ok=True)
    site.keys_dir.mkdir(mode=0o700, exist_ok=True)
    os.chmod(site.keys_dir, 0o700)
    if key_source == "file":
        write_key_file(site.site_key_file, generate_key())
    elif key_source == "passphrase":
        if not site.salt_file.exists():
            write_private_atomic(site.salt_file, os.urandom(SALT_SIZE))
        passphrase_key(site)
    elif key_source == "keyring":
        from client.os_keyring import store_key_in_keyring

        store_key_in_keyring(config.keyring_service, site_id, generate_key())
    write_key_file(site.deid_secret_file, generate_key())
    create_node_key(site, site_id)
    create_audit_key(site)
    write_private_atomic(site.config_file, config.to_toml().encode())
    record_site_init(site)
    return site


def create_node_key(site: SiteDir, site_id: str) -> str:
    """Create the site's SuperNode key pair in ``keys/`` (private 0600, never overwritten).

    Returns the key's fingerprint.
    """
    pair = new_node_key(comment=f"fedscan:{site_id}")
    write_new_private_file(site.node_key_file, pair.private_openssh)
    write_private_atomic(site.node_pubkey_file, pair.public_openssh)  # keys/ holds 0600 files only
    return pair.fingerprint


def load_deid_secret(site: SiteDir) -> bytes:
    """The HMAC secret behind this site's UIDs, pseudonyms and date shifts."""
    return load_key_file(site.deid_secret_file).material
