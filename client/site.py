"""Where a site keeps things: the layout of a site directory, in one place.

A site directory holds the site's policy (``site.toml``), its key material (``keys/``, every file 0600),
its encrypted dataset store (``store/``) and its reports. Nothing in it is plaintext patient data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["SiteDir"]


@dataclass(frozen=True)
class SiteDir:
    """Paths inside one site directory; creating the object touches nothing on disk."""

    root: Path

    @property
    def config_file(self) -> Path:
        """``site.toml``: the site's identity and policy."""
        return self.root / "site.toml"

    @property
    def keys_dir(self) -> Path:
        """Key material; the directory is 0700 and every file in it 0600."""
        return self.root / "keys"

    @property
    def site_key_file(self) -> Path:
        """The site key: wraps the data key of every sealed object of this site."""
        return self.keys_dir / "site.key"

    @property
    def salt_file(self) -> Path:
        """The scrypt salt of a site whose key is derived from a passphrase (not secret)."""
        return self.keys_dir / "site.salt"

    @property
    def deid_secret_file(self) -> Path:
        """The de-identification secret: keys the HMAC behind UIDs, pseudonyms and date shifts."""
        return self.keys_dir / "deid.key"

    @property
    def node_key_file(self) -> Path:
        """The SuperNode's private key (EC P-384, OpenSSH): authenticates the site to the SuperLink.

        Made here by ``fedscan site init``; only its public half leaves the site (``site enrol``).
        """
        return self.keys_dir / "node.key"

    @property
    def node_pubkey_file(self) -> Path:
        """The node key's public half (one OpenSSH line), what the enrolment request carries."""
        return self.keys_dir / "node.pub"

    @property
    def store_dir(self) -> Path:
        """The encrypted dataset store (sealed shards and a sealed manifest)."""
        return self.root / "store"

    @property
    def reports_dir(self) -> Path:
        """Ingest and de-identification reports (counts and reasons, never PHI)."""
        return self.root / "reports"
