"""Create a site directory: key material (0600 in a 0700 folder) and a site.toml with safe defaults."""

from __future__ import annotations

import os
from pathlib import Path

from client.site import SiteDir
from client.site_config import SiteConfig
from client.site_keys import load_site_key
from common.crypto import generate_key, load_key_file, write_key_file
from common.errors import ConfigError
from common.fsio import write_private_atomic

__all__ = ["init_site", "load_deid_secret", "load_site_key"]


def init_site(root: Path, site_id: str) -> SiteDir:
    """Create ``root`` as a new site; refuses to touch an existing site's keys or config."""
    site = SiteDir(Path(root))
    config = SiteConfig(site_id=site_id)
    if site.config_file.exists() or site.site_key_file.exists():
        raise ConfigError(f"{site.root} is already a fedscan site; refusing to overwrite its keys.")
    site.root.mkdir(parents=True, exist_ok=True)
    site.keys_dir.mkdir(mode=0o700, exist_ok=True)
    os.chmod(site.keys_dir, 0o700)
    write_key_file(site.site_key_file, generate_key())
    write_key_file(site.deid_secret_file, generate_key())
    write_private_atomic(site.config_file, config.to_toml().encode())
    return site


def load_deid_secret(site: SiteDir) -> bytes:
    """The HMAC secret behind this site's UIDs, pseudonyms and date shifts."""
    return load_key_file(site.deid_secret_file).material
